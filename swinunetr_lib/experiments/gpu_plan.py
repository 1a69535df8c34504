"""The GPU plan's small decisions (issue #25 item 6, issue #29 item 5), used by ``ci/gpu_plan.sh``:

- ``steps``: how many steps fit in the seconds left, from the seconds per step that a short timing run measured after
  its warm-up (``sec_per_step`` of fit's ``metrics.csv``, rows after ``--skip-steps``; the median over all rows of
  all the files given, e.g. one per parallel run), clamped to ``[--min, --max]``;
- ``gate``: whether call 2 runs: exit 0 only when the dense probe's verdict (``dense_probe --verdict``) says "SSL
  features help" by the rule fixed before the runs (:func:`~swinunetr_lib.experiments.dense_probe.decide`);
- ``control``: E1's positive control in one line, from the dense probe's summary (``dense_probe --summary``):
  passed when every supervised encoder is above the random band's max on every labeled case (the rule of
  :mod:`~swinunetr_lib.experiments.dense_probe`), FAILED otherwise, "not run" when the summary has none; with
  ``--verdict`` the rule's verdict first;
- ``gain``: the fine-tuning sweep's SSL - scratch gain paired by seed with its 95 % interval and the smallest
  detectable effect (:func:`~swinunetr_lib.experiments.label_efficiency.paired_gain`) as a CSV.

::

    python -m swinunetr_lib.experiments.gpu_plan steps --metrics "runs/x/*/metrics.csv" --seconds 150 --skip-steps 5
    python -m swinunetr_lib.experiments.gpu_plan gate --verdict verdict.json
    python -m swinunetr_lib.experiments.gpu_plan control --summary dense_probe_summary.csv --verdict verdict.json
    python -m swinunetr_lib.experiments.gpu_plan gain --results results.csv --csv paired_gain.csv
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..utils.cli import run_cli
from ..utils.files import atomic_write_text
from .label_efficiency import paired_gain

PROG = "python -m swinunetr_lib.experiments.gpu_plan"


def seconds_per_step(metrics: Sequence[str | Path], skip_steps: int = 0) -> float:
    """Median ``sec_per_step`` over the rows with ``step > skip_steps`` of every ``metrics.csv`` given (names may be
    glob patterns). Errors name the file: none found, no such column, no row after the warm-up."""
    files = sorted({p for m in metrics for p in (glob.glob(str(m)) or [str(m)])})
    values: list[float] = []
    for f in files:
        if not Path(f).is_file():
            raise FileNotFoundError(f"{f}: no metrics.csv (did the timing run fail? see its log)")
        table = pd.read_csv(f)
        if not {"step", "sec_per_step"} <= set(table.columns):
            raise ValueError(f"{f}: no step / sec_per_step columns (not a metrics.csv of fit)")
        values += table.loc[table["step"] > skip_steps, "sec_per_step"].dropna().tolist()
    if not values:
        raise ValueError(f"{', '.join(files)}: no step after the first {skip_steps} (warm-up) was logged")
    return float(np.median(values))


def steps_that_fit(seconds: float, sec_per_step: float, minimum: int = 1, maximum: int = 10**9) -> int:
    """``floor(seconds / sec_per_step)`` clamped to ``[minimum, maximum]`` (the minimum wins over the time)."""
    if sec_per_step <= 0 or not math.isfinite(sec_per_step):
        raise ValueError(f"seconds per step {sec_per_step}: expected a positive number")
    return int(min(maximum, max(minimum, math.floor(max(seconds, 0.0) / sec_per_step))))


def read_verdict(path: str | Path) -> dict:
    """The JSON ``dense_probe --verdict`` writes (helps, gain, ci, beats_every_seed, text)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no verdict (did the dense probe finish? see its log)")
    verdict = json.loads(p.read_text())
    if not isinstance(verdict, dict) or "helps" not in verdict:
        raise ValueError(f"{p}: not a dense-probe verdict (no 'helps')")
    return verdict


ABOVE = " above band max"  # suffix of dense_probe.summarize's column per supervised encoder


def positive_control(summary: pd.DataFrame, where: str = "the summary") -> str:
    """One line on E1's positive control from ``dense_probe --summary``'s table (rows of its first source): for
    each supervised encoder, on how many labeled cases it is above the random band's max, and its mean Dice against
    the mean of the band's max. "passed" when every one is above on every case, "FAILED" otherwise, "not run" when
    the table has no supervised encoder. ValueError (naming ``where``) for a table that is not such a summary."""
    if not {"source", "random_max"} <= set(summary.columns) or summary.empty:
        raise ValueError(f"{where}: no source / random_max columns (not a dense_probe summary)")
    rows = summary[summary["source"] == summary["source"].iloc[0]]
    flags = [c for c in rows.columns if c.startswith("supervised") and c.endswith(ABOVE)]
    if not flags:
        return f"positive control: not run (no supervised encoder in {where})"
    parts, ok = [], True
    for flag in flags:
        above = rows[flag].astype(str).str.lower().eq("true")  # bool, or text where a column held NaN
        ok = ok and bool(above.all())
        name = flag[: -len(ABOVE)]
        parts.append(f"{name} above the random band's max on {int(above.sum())}/{len(rows)} labeled cases "
                     f"(mean Dice {rows[name].mean():.3f}, band max {rows['random_max'].mean():.3f})")
    head = "passed" if ok else "FAILED (the probe does not tell a supervised encoder from random init)"
    return f"positive control: {head}: " + "; ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("steps", help="steps that fit in the seconds left, from a timing run's metrics.csv")
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.csv files or glob patterns")
    p.add_argument("--seconds", type=float, required=True, help="seconds the steps may take")
    p.add_argument("--skip-steps", type=int, default=0, help="warm-up steps left out of the timing")
    p.add_argument("--min", type=int, default=1, dest="minimum", help="at least this many steps")
    p.add_argument("--max", type=int, default=10**9, dest="maximum", help="at most this many steps")
    p = sub.add_parser("gate", help="exit 0 when the dense probe's verdict says SSL features help")
    p.add_argument("--verdict", required=True)
    p = sub.add_parser("control", help="E1's positive control in one line (and the rule's verdict)")
    p.add_argument("--summary", required=True, help="dense_probe's summary CSV")
    p.add_argument("--verdict", default="", help="also print the rule's verdict from this JSON")
    p = sub.add_parser("gain", help="SSL - scratch paired by seed, 95 %% interval, smallest detectable effect")
    p.add_argument("--results", required=True, help="the sweep's results.csv")
    p.add_argument("--csv", default="", help="write the table here")
    args = parser.parse_args(argv)

    def body() -> int:
        if args.command == "steps":
            s = seconds_per_step(args.metrics, args.skip_steps)
            n = steps_that_fit(args.seconds, s, args.minimum, args.maximum)
            print(f"{s:.4f} s/step after {args.skip_steps} warm-up steps: {n} steps in {args.seconds:.0f} s "
                  f"(clamped to [{args.minimum}, {args.maximum}]; {n * s:.0f} s)", file=sys.stderr)
            print(n)
            return 0
        if args.command == "gate":
            verdict = read_verdict(args.verdict)
            print(f"rule: {verdict.get('text', '')}")
            return 0 if verdict["helps"] else 1
        if args.command == "control":
            if args.verdict:
                print(f"rule: {read_verdict(args.verdict).get('text', '')}")
            path = Path(args.summary)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no dense-probe summary (did E1 finish? see its log)")
            print(positive_control(pd.read_csv(path), str(path)))
            return 0
        path = Path(args.results)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no results.csv")
        table = paired_gain(pd.read_csv(path))
        print(table.round(4).to_string(index=False))
        if args.csv:
            atomic_write_text(table.round(4).to_csv(index=False), args.csv)
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    raise SystemExit(main())
