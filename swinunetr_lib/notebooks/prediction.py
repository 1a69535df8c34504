"""Predict first, then compare: the gap between an attendee's prediction and the value a notebook computes.

Every workshop exercise asks for a prediction *before* anything on screen gives the answer away, written into a
variable (``prediction = ...``); after the cell that computes the value, :func:`check_prediction` prints how far off
the prediction was::

    prediction = 16                                   # written before running anything below
    ratio = sizes[48] / sizes[12]
    check_prediction(prediction, ratio, what="encoder parameters at 48 / at 12")
    # encoder parameters at 48 / at 12: predicted 16, computed 11.6 -> off by +4.4 (38 % too high)

A prediction may be a number, a text (an organ's name: right or wrong), a collection of texts (how many of them the
computed collection holds), or a dict of any of these against a dict of computed values (one line per key). A
prediction left at ``None`` and a computed value that is not there yet (``None`` or NaN: an unfinished stub) are
said in words, never raised: an exercise notebook runs top to bottom before anyone has answered.
"""
from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any

NOT_PREDICTED = "no prediction written: set `prediction = ...` in the cell above, before running this one"
NOT_COMPUTED = "not computed yet: complete the cell (the stub leaves it empty)"


@dataclass(frozen=True)
class Gap:
    """One prediction against its computed value.

    ``error``: prediction − computed for numbers (None otherwise); ``relative``: that error over |computed|;
    ``close``: within ``tolerance`` (relative, for numbers), equal (texts), or all found (collections);
    ``text``: the line :func:`check_prediction` prints."""

    what: str
    predicted: Any
    computed: Any
    error: float | None
    relative: float | None
    close: bool | None
    text: str


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, Real) and not isinstance(value, bool) and math.isnan(float(value)))


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, Real):
        return repr(value) if isinstance(value, str) else str(value)
    v = float(value)
    if v == int(v) and abs(v) < 1e6:
        return f"{int(v):,}"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.4g}"


def compare(prediction: Any, computed: Any, *, what: str = "value", tolerance: float = 0.1) -> Gap:
    """The :class:`Gap` of one prediction (a number, a text or a collection of texts) against its computed value."""
    if _missing(computed):
        return Gap(what, prediction, computed, None, None, None, f"{what}: {NOT_COMPUTED}")
    if _missing(prediction):
        return Gap(what, prediction, computed, None, None, None,
                   f"{what}: computed {_fmt(computed)}; {NOT_PREDICTED}")
    if isinstance(prediction, Real) and isinstance(computed, Real) and not isinstance(prediction, bool):
        err = float(prediction) - float(computed)
        rel = err / abs(float(computed)) if float(computed) != 0 else (0.0 if err == 0 else math.inf)
        close = abs(rel) <= tolerance or abs(err) < 1e-12
        if close:
            how = f"within {100 * tolerance:.0f} %"
        elif math.isinf(rel):
            how = "the computed value is 0"
        elif abs(rel) >= 10:
            how = f"more than 10 times too {'high' if err > 0 else 'low'}"
        else:
            how = f"{100 * abs(rel):.0f} % too {'high' if err > 0 else 'low'}"
        return Gap(what, prediction, computed, err, rel, close,
                   f"{what}: predicted {_fmt(prediction)}, computed {_fmt(computed)} -> off by "
                   f"{'+' if err >= 0 else '-'}{_fmt(abs(err))} ({how})")
    if isinstance(prediction, str) or isinstance(computed, str):
        same = str(prediction).strip().lower() == str(computed).strip().lower()
        return Gap(what, prediction, computed, None, None, same,
                   f"{what}: predicted {_fmt(prediction)}, computed {_fmt(computed)} -> "
                   + ("right" if same else "not this time"))
    if isinstance(prediction, Collection) and isinstance(computed, Collection):
        want = {str(c).strip().lower() for c in computed}
        got = [p for p in prediction if str(p).strip().lower() in want]
        return Gap(what, prediction, computed, None, None, len(got) == len(want),
                   f"{what}: {len(got)} of the {len(want)} computed ({', '.join(map(str, computed))}) predicted"
                   + (f" ({', '.join(map(str, got))})" if got else ""))
    return Gap(what, prediction, computed, None, None, prediction == computed,
               f"{what}: predicted {_fmt(prediction)}, computed {_fmt(computed)}")


class Gaps(list):
    """The :class:`Gap` of each prediction; shown at the end of a cell as one summary line."""

    def __repr__(self) -> str:
        judged = [g for g in self if g.close is not None]
        return (f"{sum(bool(g.close) for g in judged)} of {len(judged)} predictions close" if judged
                else "nothing to compare yet")


def check_prediction(prediction: Any, computed: Any, *, what: str = "value", tolerance: float = 0.1,
                     show: bool = True) -> Gaps:
    """Print (``show``) and return the gap between ``prediction`` and ``computed``: one line per key when
    ``computed`` is a dict (a key missing from a dict prediction counts as not predicted), else one line.
    ``tolerance``: the relative error a number may have to count as close (default 10 %)."""
    if isinstance(computed, Mapping) and not computed:
        gaps = [compare(prediction, None, what=what, tolerance=tolerance)]
    elif isinstance(computed, Mapping):
        predicted = prediction if isinstance(prediction, Mapping) else {}
        if prediction is not None and not isinstance(prediction, Mapping):
            raise TypeError(f"{what}: predict a dict with the keys {list(computed)} (got {type(prediction).__name__})")
        unknown = [k for k in predicted if k not in computed]
        if unknown:
            raise KeyError(f"{what}: prediction keys {unknown} are not among {list(computed)}")
        gaps = [compare(predicted.get(k), v, what=f"{what}, {k}" if what != "value" else str(k), tolerance=tolerance)
                for k, v in computed.items()]
    else:
        gaps = [compare(prediction, computed, what=what, tolerance=tolerance)]
    if show:
        for g in gaps:
            print(g.text)
    return Gaps(gaps)
