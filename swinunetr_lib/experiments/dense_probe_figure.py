"""The dense probe drawn beside its controls: per labeled case, the band of random-init seeds, the SSL encoder, the
supervised positive control and the no-learning baselines (issue #25; notebook 06 draws the recorded run)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..viz.figures import new_figure

# column of summarize()'s table -> (label, marker, colour); supervised columns are found by their prefix
_BASELINES = {"atlas": ("atlas of the labeled case (no learning)", "s", "0.2"),
              "intensity+coords": ("intensity + coordinates", "^", "tab:green"),
              "intensity": ("intensity at 5 scales", "v", "tab:olive")}


def plot_dense_probe(summary: pd.DataFrame, title: str = "") -> Figure:
    """``summary``: :func:`swinunetr_lib.experiments.dense_probe.summarize`'s table (one row per labeled case, columns
    ``labeled_case``, ``random_min``/``random_max``/``random_mean``, ``ssl``, ``supervised …``, ``atlas``,
    ``intensity``, ``intensity+coords``). One column of marks per labeled case: the random seeds' band as a grey bar
    (min to max, a tick at the mean), SSL, each supervised encoder, and the baselines."""
    fig = new_figure(figsize=(7.6, 3.8))
    ax = fig.subplots()
    x = np.arange(len(summary))
    ax.bar(x, summary["random_max"] - summary["random_min"], bottom=summary["random_min"], width=0.5, color="0.85",
           label="random init, band of seeds (min–max)")
    ax.scatter(x, summary["random_mean"], marker="_", s=300, color="0.4", label="random init, mean of seeds")
    if "ssl" in summary:
        ax.scatter(x, summary["ssl"], marker="o", s=45, color="tab:orange", zorder=3, label="SSL encoder")
    for column in [c for c in summary if c.startswith("supervised") and not c.endswith("above band max")]:
        ax.scatter(x, summary[column], marker="D", s=35, color="tab:blue", zorder=3,
                   label=f"{column} (positive control)")
    for column, (label, marker, colour) in _BASELINES.items():
        if column in summary:
            ax.scatter(x + 0.32, summary[column], marker=marker, s=30, color=colour, label=label)
    ax.set_xticks(x, [f"labeled case {c}" for c in summary["labeled_case"]])
    ax.set_ylabel("mean Dice on the held-out cases")
    dice = summary.drop(columns=["labeled_case"]).select_dtypes("number").drop(
        columns=[c for c in summary if c.startswith("gain")], errors="ignore")
    ax.set_ylim(0, max(0.5, float(np.nanmax(dice.to_numpy())) + 0.1))
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    ax.set_title(title or "dense probe: frozen features at every voxel, a linear readout per labeled case",
                 fontsize=10)
    return fig
