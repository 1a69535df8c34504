"""The dense probe's figure draws each control where its numbers put it."""
from __future__ import annotations

import pandas as pd
import pytest

from swinunetr_lib.experiments.dense_probe_figure import plot_dense_probe


def test_each_labeled_case_gets_its_band_its_encoders_and_its_baselines():
    summary = pd.DataFrame({"labeled_case": [0, 1], "random_min": [0.10, 0.20], "random_max": [0.15, 0.30],
                            "random_mean": [0.12, 0.25], "ssl": [0.18, 0.22], "supervised run": [0.40, 0.35],
                            "supervised run above band max": [True, True], "atlas": [0.3, 0.31],
                            "intensity": [0.05, 0.06], "intensity+coords": [0.08, 0.09]})
    ax = plot_dense_probe(summary).axes[0]
    bars = ax.patches
    assert [b.get_y() for b in bars] == pytest.approx([0.10, 0.20])  # the band starts at the worst seed
    assert [b.get_y() + b.get_height() for b in bars] == pytest.approx([0.15, 0.30])  # and ends at the best
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "SSL encoder" in labels and "supervised run (positive control)" in labels
    assert "atlas of the labeled case (no learning)" in labels and not any("above band max" in t for t in labels)
    points = {c.get_label(): c.get_offsets()[:, 1].tolist() for c in ax.collections}
    assert points["SSL encoder"] == pytest.approx([0.18, 0.22])
    assert points["supervised run (positive control)"] == pytest.approx([0.40, 0.35])
