"""Figures of training runs and results: learning curves, per-organ Dice/HD95, label efficiency.

Inputs are plain tables (a pandas DataFrame or a CSV path), so the figures work for any run:

- a run's ``metrics.csv`` as :func:`swinunetr_lib.train.loop.fit` writes it: ``step`` plus one column per scalar;
- per-case results in long format, one row per (case, organ): e.g. ``case, organ, dice, hd95``;
- label-efficiency results, one row per (init, fraction, seed): e.g. ``init, fraction, seed, dice``.

Figures are built without ``pyplot`` (headless-safe); organ bars use :data:`swinunetr_lib.viz.figures.BTCV_COLORS`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .figures import BTCV_ORGANS, label_color, new_figure, organ_name


def _read_table(source: pd.DataFrame | str | os.PathLike[str], default_name: str = "metrics.csv") -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        return source
    path = Path(source)
    if path.is_dir():
        path = path / default_name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected a CSV table, e.g. a run's {default_name})")
    try:
        return pd.read_csv(path)
    except Exception as err:  # pandas raises several parser error types
        raise ValueError(f"{path}: cannot be read as CSV ({err})") from err


def _pick(df: pd.DataFrame, wanted: str | None, candidates: Sequence[str], what: str, where: str) -> str:
    if wanted is not None:
        if wanted not in df.columns:
            raise KeyError(f"{where}: no column {wanted!r} for the {what}; columns are {list(df.columns)}")
        return wanted
    for c in candidates:
        if c in df.columns:
            return c
    raise KeyError(f"{where}: no {what} column (looked for {list(candidates)}); columns are {list(df.columns)}")


def plot_learning_curves(source: pd.DataFrame | str | os.PathLike[str] | Mapping[str, Any], *,
                         columns: Sequence[str] | None = None, smoothing: float = 0.0,
                         ncols: int = 3, panel_size: float = 3.0) -> Figure:
    """One panel per logged scalar of a run's ``metrics.csv`` (column ``step`` plus one column per scalar).

    ``source`` is a CSV path, a run folder holding ``metrics.csv``, a DataFrame, or a mapping
    ``{run name: any of those}`` to overlay several runs. Rows where a scalar was not logged (NaN) are
    skipped, so train and validation scalars logged at different steps share one table.
    ``smoothing`` in [0, 1) applies an exponential moving average (dashed raw curve kept underneath).
    """
    runs = dict(source) if isinstance(source, Mapping) else {"": source}
    tables = {name: _read_table(src) for name, src in runs.items()}
    for name, df in tables.items():
        if "step" not in df.columns:
            raise KeyError(f"metrics table {name or ''!s} has no 'step' column; columns are {list(df.columns)}")
    cols = list(columns) if columns is not None else list(dict.fromkeys(
        c for df in tables.values() for c in df.columns if c != "step" and pd.api.types.is_numeric_dtype(df[c])))
    if not cols:
        raise ValueError("no scalar columns to plot (a metrics table needs 'step' plus at least one numeric column)")
    ncols = min(ncols, len(cols))
    nrows = int(np.ceil(len(cols) / ncols))
    fig = new_figure(figsize=(ncols * panel_size, nrows * panel_size * 0.8))
    axs = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax, col in zip(axs, cols, strict=False):  # the grid's last row may have more panels than columns left
        for name, df in tables.items():
            if col not in df.columns:
                continue
            d = df[["step", col]].dropna()
            if d.empty:
                continue
            line = ax.plot(d["step"], d[col], marker="o" if len(d) < 20 else None, ms=3,
                           label=name or None, alpha=0.35 if smoothing else 1.0)[0]
            if smoothing:
                ax.plot(d["step"], d[col].ewm(alpha=1.0 - smoothing).mean(), color=line.get_color())
        ax.set_title(col, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if "loss" in col.lower() and all((df[col].dropna() > 0).all() for df in tables.values() if col in df):
            ax.set_yscale("log")
        if len(tables) > 1:
            ax.legend(fontsize=7)
    for ax in axs[len(cols):]:
        ax.set_axis_off()
    return fig


def _organ_labels(values: pd.Series) -> pd.Series:
    """Numeric class ids -> BTCV organ names; names are kept."""
    if pd.api.types.is_numeric_dtype(values):
        return values.map(lambda v: organ_name(int(v)))
    return values.astype(str)


def plot_organ_metrics(results: pd.DataFrame | str | os.PathLike[str], *,
                       metrics: Sequence[str] | str = ("dice", "hd95"),
                       kind: str = "bar", organ_col: str | None = None, group_col: str | None = None,
                       panel_size: float = 4.0) -> Figure:
    """Per-organ Dice / HD95 as bars (mean ± sd over cases) or box plots, one panel per metric.

    ``results`` is a long table (one row per case and organ), e.g. columns ``case, organ, dice, hd95``;
    the organ column may hold names or BTCV ids (``organ``, ``class``, ``label``, ``class_name`` are
    recognised). ``group_col`` (e.g. ``init``) draws side-by-side bars/boxes per group.
    Bars take the organ colours when there is no grouping. Metrics absent from the table are skipped.
    """
    df = _read_table(results, "per_case.csv").copy()
    if kind not in ("bar", "box"):
        raise ValueError(f"kind must be 'bar' or 'box'; got {kind!r}")
    # evaluate() tables hold a numeric class_id beside snake_case names: the id gives the right colours
    oc = _pick(df, organ_col, ("class_id", "organ", "class_name", "class", "label", "organ_name"), "organ", "results")
    df = df.rename(columns={"hd95_mm": "hd95"}) if "hd95" not in df.columns else df
    ids = df[oc] if pd.api.types.is_numeric_dtype(df[oc]) else None
    df["_organ"] = _organ_labels(df[oc])
    wanted = [metrics] if isinstance(metrics, str) else list(metrics)
    present = [m for m in wanted if m in df.columns]
    if not present:
        raise KeyError(f"results: none of the metrics {wanted} is a column; columns are {list(df.columns)}")
    order = list(dict.fromkeys(df.sort_values(oc)["_organ"])) if ids is not None else list(dict.fromkeys(df["_organ"]))
    name_to_id = {v: k for k, v in BTCV_ORGANS.items()}
    groups = list(dict.fromkeys(df[group_col])) if group_col else [None]
    fig = new_figure(figsize=(max(panel_size, 0.55 * len(order) * len(present)) + 1, panel_size * 0.9))
    axs = np.atleast_1d(fig.subplots(1, len(present))).ravel()
    width = 0.8 / len(groups)
    x = np.arange(len(order))
    for ax, metric in zip(axs, present, strict=True):
        for gi, g in enumerate(groups):
            sub = df if g is None else df[df[group_col] == g]
            vals = [sub.loc[sub["_organ"] == o, metric].dropna().to_numpy(dtype=float) for o in order]
            off = x + (gi - (len(groups) - 1) / 2) * width
            colors = [label_color(name_to_id.get(o, 0)) if g is None else None for o in order]
            if kind == "bar":
                means = [v.mean() if v.size else np.nan for v in vals]
                sds = [v.std(ddof=1) if v.size > 1 else 0.0 for v in vals]
                ax.bar(off, means, width=width * 0.95, yerr=sds, capsize=2, label=None if g is None else str(g),
                       color=colors if g is None else None, edgecolor="k", linewidth=0.4)
            else:
                keep = [i for i, v in enumerate(vals) if v.size]
                bp = ax.boxplot([vals[i] for i in keep], positions=off[keep], widths=width * 0.9, patch_artist=True,
                                manage_ticks=False)
                for j, box in enumerate(bp["boxes"]):
                    box.set_facecolor(colors[keep[j]] if g is None else f"C{gi}")
                    box.set_alpha(0.8)
                if g is not None:
                    ax.plot([], [], color=f"C{gi}", lw=6, label=str(g))
        ax.set_xticks(x, order, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(metric + (" (mm)" if "hd" in metric.lower() else ""), fontsize=8)
        if "dice" in metric.lower():
            ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(f"{metric} per organ ({'mean ± sd' if kind == 'bar' else 'distribution over cases'})", fontsize=9)
        if group_col:
            ax.legend(fontsize=7)
    return fig


def plot_label_efficiency(results: pd.DataFrame | str | os.PathLike[str], *, x: str | None = None,
                          y: str | None = None, group_col: str | None = None, panel_size: float = 4.0) -> Figure:
    """Dice versus fraction of labelled training data, one line per initialisation, mean ± sd over seeds.

    Columns are found by name unless given: x in (``fraction``, ``labeled_fraction``, ``label_fraction``),
    y in (``dice``, ``mean_dice``, ``val_dice``), group in (``init``, ``initialization``, ``method``).
    Rows sharing (group, x) are the seeds; the band is ± one standard deviation (as in the paper's label-efficiency
    plot).
    """
    df = _read_table(results, "label_efficiency.csv")
    xc = _pick(df, x, ("fraction", "labeled_fraction", "label_fraction", "labelled_fraction"), "fraction", "results")
    yc = _pick(df, y, ("dice", "mean_dice", "val_dice"), "Dice", "results")
    gc = _pick(df, group_col, ("init", "initialization", "method", "pretrained"), "init", "results")
    fig = new_figure(figsize=(panel_size * 1.3, panel_size))
    ax = fig.subplots()
    for i, (g, sub) in enumerate(df.groupby(gc, sort=False)):
        st = sub.groupby(xc)[yc].agg(["mean", "std", "count"]).sort_index()
        sd = st["std"].fillna(0.0)
        ax.plot(st.index, st["mean"], marker="o", color=f"C{i}", label=f"{g} (n={int(st['count'].max())} seeds)")
        ax.fill_between(st.index, st["mean"] - sd, st["mean"] + sd, color=f"C{i}", alpha=0.2)
    ax.set_xlabel("fraction of labelled training cases", fontsize=9)
    ax.set_ylabel(f"{yc} (mean ± sd over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("label efficiency", fontsize=10)
    return fig
