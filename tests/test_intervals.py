"""Intervals, the smallest detectable effect and the words a result may carry (issue #25: an interval, not spread)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from swinunetr_lib.experiments.intervals import mean_interval, paired_interval, verdict
from swinunetr_lib.experiments.label_efficiency import paired_gain


def test_the_interval_is_the_paired_t_interval_written_out():
    gains = [0.026, -0.054, 0.070]  # the recorded experiment's three seeds at one labeled phantom
    ci = mean_interval(gains)
    mean, sd, n = np.mean(gains), np.std(gains, ddof=1), 3
    t975, t80 = 4.302652729911275, 1.0606601717798212  # t quantiles for 2 degrees of freedom
    assert ci.mean == pytest.approx(mean) and ci.sd == pytest.approx(sd) and ci.n == n
    assert (ci.low, ci.high) == pytest.approx((mean - t975 * sd / math.sqrt(n), mean + t975 * sd / math.sqrt(n)))
    assert ci.smallest_detectable == pytest.approx((t975 + t80) * sd / math.sqrt(n))
    assert not ci.excludes_zero
    assert ci.text().startswith(f"{mean:+.3f} (95 % CI ") and ci.text().endswith("n = 3)")


def test_pairs_and_degenerate_inputs():
    assert paired_interval([0.5, 0.6, 0.7], [0.4, 0.5, 0.6]).mean == pytest.approx(0.1)
    assert paired_interval([0.5, 0.6, 0.7], [0.4, 0.5, 0.6]).excludes_zero  # sd 0: the interval is the point
    with pytest.raises(ValueError, match="same length"):
        paired_interval([0.1, 0.2], [0.1])
    one = mean_interval([0.3])
    assert one.n == 1 and math.isnan(one.low) and "no interval" in one.text()
    assert mean_interval([float("nan"), 0.2, 0.4]).n == 2


def test_the_words_follow_the_rule_fixed_before_the_data():
    clear = mean_interval([0.05, 0.06, 0.055, 0.052])
    assert verdict(clear).startswith("gain detected: +0.05")
    tiny = mean_interval([0.010, 0.011, 0.012, 0.0105])
    assert "below the +0.02 threshold" in verdict(tiny)
    wide = mean_interval([0.026, -0.054, 0.070])
    words = verdict(wide, claim=0.10)
    assert words.startswith("not detected at this scale: ") and "cannot test the claim" in words
    assert "does not help" not in words
    narrow_null = mean_interval([0.001, -0.002, 0.0, 0.002, -0.001, 0.0015, -0.0005, 0.0])
    assert "the claim's +0.1 lies outside the interval" in verdict(narrow_null, claim=0.10)


def test_paired_gain_pairs_by_seed_and_adds_a_pooled_row():
    rows = [{"init": init, "labeled_fraction": f, "seed": s, "n_train": int(4 * f),
             "mean_dice": 0.3 + 0.1 * f + 0.01 * s + ((0.02 + 0.005 * s) if init == "ssl" else 0.0)}
            for init in ("scratch", "ssl") for f in (0.25, 1.0) for s in range(3)]
    gain = paired_gain(pd.DataFrame(rows))
    assert gain["setting"].tolist() == ["25 % labels", "100 % labels", "pooled"]
    assert gain["count"].tolist() == [3, 3, 6] and gain["n_train"].tolist()[:2] == [1, 4]
    assert gain["mean"].iloc[0] == pytest.approx(0.025)  # 0.02 + 0.005 * mean(seed)
    assert (gain["ci_low"] < gain["mean"]).all() and (gain["mean"] < gain["ci_high"]).all()
    assert paired_gain(pd.DataFrame(rows[:6])).empty  # no ssl runs: nothing to pair
