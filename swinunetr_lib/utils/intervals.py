"""Uncertainty of a reported result: a mean with its 95 % interval, a paired difference with the smallest effect the
design could have detected, and the words such a result may carry.

A gain measured over a few seeds is reported as an interval, not as mean ± standard deviation: with 3 paired seeds the
t interval is the mean ± 4.30 standard errors, and an interval that holds both 0 and the paper's effect cannot tell
them apart. :func:`paired_interval` gives the interval and the *smallest detectable effect* (the true difference a
two-sided 5 % paired t test would find 80 % of the time, from the measured spread); :func:`verdict` words it: "not
detected at this scale (95 % CI …)" — never "it does not help" — and, when the smallest detectable effect exceeds the
effect in question, "this setting cannot test the claim".
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    """A mean of ``n`` values with its two-sided t interval at ``level``; ``low``/``high`` are NaN when n < 2."""

    mean: float
    low: float
    high: float
    n: int
    sd: float                     # sample standard deviation (ddof 1)
    level: float = 0.95
    smallest_detectable: float = math.nan  # the effect a paired t test at 5 % finds with 80 % power, given sd and n

    @property
    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.low > 0 or self.high < 0)

    def text(self, digits: int = 3) -> str:
        """``+0.014 (95 % CI −0.090 to +0.119, n = 3)``."""
        if self.n < 2:
            return f"{self.mean:+.{digits}f} (n = {self.n}: no interval)"
        pct = f"{100 * self.level:g} %"
        return f"{self.mean:+.{digits}f} ({pct} CI {self.low:+.{digits}f} to {self.high:+.{digits}f}, n = {self.n})"


def mean_interval(values: Sequence[float] | np.ndarray, level: float = 0.95, power: float = 0.8) -> Interval:
    """The mean of ``values`` (NaN dropped) with its t interval and smallest detectable effect.

    For differences paired by seed this is the paired t interval: mean ± t(1 − α/2, n − 1) · sd / √n. The smallest
    detectable effect is (t(1 − α/2, n − 1) + t(power, n − 1)) · sd / √n, the usual normal-theory approximation with
    t quantiles."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan, level)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, 1, math.nan, level)
    sd = float(x.std(ddof=1))
    se = sd / math.sqrt(n)
    t = float(stats.t.ppf(0.5 + level / 2, n - 1))
    detectable = (t + float(stats.t.ppf(power, n - 1))) * se
    return Interval(mean, mean - t * se, mean + t * se, n, sd, level, detectable)


def paired_interval(treated: Sequence[float], control: Sequence[float], level: float = 0.95) -> Interval:
    """``treated − control`` paired element by element (same seed, same labeled cases), as :func:`mean_interval`."""
    a, b = np.asarray(treated, dtype=float), np.asarray(control, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same length: {a.shape} vs {b.shape}")
    return mean_interval(a - b, level)


def verdict(gain: Interval, *, min_effect: float = 0.02, claim: float | None = None, what: str = "gain") -> str:
    """The words a paired ``gain`` may carry, fixed before looking at the data:

    - "<what> detected: +x (95 % CI …)" when the interval excludes 0 and the gain is at least ``min_effect``;
    - "not detected at this scale (95 % CI …)" otherwise; a gain that excludes 0 but is smaller than ``min_effect``
      is "below the +min_effect threshold";
    - with ``claim`` (e.g. the paper's effect): "; this setting cannot test the claim (smallest detectable effect s >
      claim)" when the design could not have seen it, or "; the claim's +c lies outside the interval" when it is
      excluded."""
    if gain.n < 2:
        return f"not measured with an interval (n = {gain.n})"
    if gain.excludes_zero and gain.mean >= min_effect:
        words = f"{what} detected: {gain.text()}"
    elif gain.excludes_zero and gain.mean > 0:
        words = f"{what} {gain.text()}, below the +{min_effect:g} threshold"
    else:
        words = f"not detected at this scale: {gain.text()}"
    if claim is not None:
        if gain.smallest_detectable > abs(claim):
            words += (f"; this setting cannot test the claim (smallest detectable effect {gain.smallest_detectable:.3f}"
                      f" > {abs(claim):g})")
        elif not gain.low <= claim <= gain.high:
            words += f"; the claim's {claim:+g} lies outside the interval"
    return words
