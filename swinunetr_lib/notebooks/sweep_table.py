"""A sweep's table (``results.csv``: one row per run) and its grouped summary with a comparison figure.

::

    python -m swinunetr_lib.notebooks sweep summarize runs/sweep --by init labeled_fraction --metric mean_dice

The summary gives, per group of the ``--by`` parameters (default: every varied parameter but ``seed``), the mean of
the metric over the group's finished runs, its 95 % t interval (:func:`swinunetr_lib.utils.intervals.mean_interval`,
the experiments' interval) and n. A group of one run has no interval (``ci_low``/``ci_high`` empty; the
text says "n = 1: no interval"). The figure draws the metric against the first ``--by`` parameter, one line per
combination of the others, each mean with its interval and each run a dot.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..utils.cli import run_cli
from ..utils.files import atomic_path, atomic_write_text
from ..utils.intervals import mean_interval
from ..viz.figures import new_figure

if TYPE_CHECKING:
    from .sweep import Sweep

RUN_COLUMNS = ("seconds", "status", "cell", "error", "started", "host")  # after the parameters and the results


def _cell(value: Any) -> Any:
    """A parameter value as one table cell: lists and mappings as JSON text."""
    return json.dumps(value) if isinstance(value, (list, dict, tuple)) else value


def write_results_csv(sweep: Sweep, out: Path) -> pd.DataFrame:
    """``out/results.csv`` (atomically): one row per run of ``sweep`` that has finished or failed with its current
    fingerprint, in grid order: run, parameters, results, seconds, status, failing cell, error."""
    rows, results_seen = [], {}
    params_seen = dict.fromkeys(k for p in sweep.points for k in p.params)  # a point without one: the default
    defaults = sweep.target.defaults()
    for p in sweep.points:
        folder = out / "runs" / p.name
        try:
            status = json.loads((folder / "run.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if status.get("fingerprint") not in (None, p.fingerprint):
            continue
        try:
            results = json.loads((folder / "results.json").read_text())
        except (OSError, json.JSONDecodeError):
            results = {}
        results = {k: v for k, v in results.items() if k not in p.params}  # a parameter's value is the parameter
        results_seen.update(dict.fromkeys(results))
        params = {k: p.params.get(k, defaults.get(k)) for k in params_seen}
        rows.append({"run": p.name, **{k: _cell(v) for k, v in params.items()}, **results,
                     **{k: status.get(k) for k in RUN_COLUMNS}})
    columns = ["run", *params_seen, *results_seen, *RUN_COLUMNS]
    table = pd.DataFrame(rows, columns=columns).astype({"cell": "Int64"})
    atomic_write_text(table.to_csv(index=False), out / "results.csv")
    meta_path = out / "sweep.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta.get("parameters") != list(params_seen) and params_seen:
        atomic_write_text(json.dumps({**meta, "parameters": list(params_seen)}, indent=2), meta_path)
    return table


def summarize(out: Path, by: Sequence[str] | None = None, metric: str | None = None) -> tuple[pd.DataFrame, Path]:
    """Group the finished runs of ``out/results.csv`` by ``by``: mean of ``metric``, its 95 % interval and n;
    writes ``summary.csv`` and ``summary_<metric>.png`` beside it. Errors name the file."""
    path = out / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results table; run the sweep into {out} first")
    table = pd.read_csv(path)
    meta = json.loads((out / "sweep.json").read_text()) if (out / "sweep.json").is_file() else {}
    params = meta.get("parameters", [])
    results = [c for c in table.columns if c not in {"run", *params, *RUN_COLUMNS}
               and pd.api.types.is_numeric_dtype(table[c])]
    metric = metric or (results[0] if results else None)
    if metric is None or metric not in table.columns:
        raise ValueError(f"{path}: no result column {metric!r}; the numeric results are {results}")
    by = list(by) if by is not None else [k for k in meta.get("varied", []) if k != "seed" and k in table.columns]
    missing = [k for k in by if k not in table.columns]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing} to group by; the parameters are {params}")
    ok = table[table["status"] == "ok"]
    if ok.empty:
        raise ValueError(f"{path}: no finished run to summarize")
    groups = ok.groupby(by, sort=True, dropna=False) if by else [((), ok)]
    rows = []
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        ci = mean_interval(group[metric])
        rows.append({**dict(zip(by, key, strict=True)), "metric": metric, "mean": ci.mean, "ci_low": ci.low,
                     "ci_high": ci.high, "n": ci.n, "text": ci.text(4)})
    summary = pd.DataFrame(rows)
    atomic_write_text(summary.to_csv(index=False), out / "summary.csv")
    figure = out / f"summary_{metric}.png"
    plot_summary(ok, summary, by, metric, figure)
    return summary, figure


def plot_summary(runs: pd.DataFrame, summary: pd.DataFrame, by: list[str], metric: str, path: Path) -> None:
    """The metric against ``by[0]`` (categories in order), one line per combination of the other ``by``
    parameters: means with their 95 % intervals (none for n = 1), each run a dot."""
    fig = new_figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    x_name, series_names = (by[0], by[1:]) if by else (None, [])
    levels = sorted(summary[x_name].unique(), key=_order) if x_name else [None]
    position = {v: i for i, v in enumerate(levels)}
    parts = summary.groupby(series_names, sort=True) if series_names else [((), summary)]
    for k, (key, part) in enumerate(parts):
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{n}={v}" for n, v in zip(series_names, key, strict=True)) or metric
        shift = (k - (len(parts) - 1) / 2) * 0.08 if series_names else 0.0
        xs = np.array([position[v] for v in part[x_name]]) + shift if x_name else np.zeros(len(part))
        err = np.nan_to_num(np.array([part["mean"] - part["ci_low"], part["ci_high"] - part["mean"]]))
        line = ax.errorbar(xs, part["mean"], yerr=err, marker="o", capsize=3, label=label)
        mine = runs
        for name, value in zip(series_names, key, strict=True):
            mine = mine[mine[name] == value]
        dots = np.array([position[v] for v in mine[x_name]]) + shift if x_name else np.zeros(len(mine))
        ax.scatter(dots, mine[metric], s=10, alpha=0.5, color=line[0].get_color())
    ax.set_xticks(range(len(levels)), [str(v) for v in levels])
    ax.set_xlabel(x_name or "all runs")
    ax.set_ylabel(metric)
    ax.set_title("mean and 95 % CI per group (no interval for n = 1); dots: runs", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def _order(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float, np.number)) else (1, str(value))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swinunetr_lib.notebooks sweep summarize",
                                     description="Grouped summary (mean, 95 % interval, n) and figure of a sweep")
    parser.add_argument("folder", type=Path, help="the sweep's --out folder (holds results.csv)")
    parser.add_argument("--by", nargs="*", default=None, help="parameters to group by (default: the varied ones "
                                                              "but seed)")
    parser.add_argument("--metric", default=None, help="result column (default: the first numeric one)")
    args = parser.parse_args(argv)

    def body() -> int:
        summary, figure = summarize(args.folder, args.by, args.metric)
        shown = summary.drop(columns=["mean", "ci_low", "ci_high"]).rename(columns={"text": "mean (95 % t interval)"})
        with pd.option_context("display.width", 160, "display.max_columns", 20, "display.max_colwidth", 80):
            print(shown.to_string(index=False))
        if (summary["n"] < 2).any():
            print("n = 1: one run, no interval (ci_low/ci_high are empty in summary.csv)")
        print(f"summary: {args.folder / 'summary.csv'}; figure: {figure}")
        return 0

    return run_cli("python -m swinunetr_lib.notebooks sweep summarize", body)
