"""Label-efficiency experiment: fine-tuning Dice versus the fraction of labeled data (as in the paper's ablation).

A preset of the sweep verb (``python -m swinunetr_lib.notebooks sweep``, :mod:`swinunetr_lib.notebooks.sweep`): it
writes the grid of notebook ``03_finetune_btcv`` over labeled fraction x initialisation (scratch / SSL) x seed as
``<output>/grid.yml`` and runs it, so there is one way to run experiments::

    <output>/grid.yml                                     the grid (rerun it with the sweep verb directly)
    <output>/runs/<init>_frac<f>_seed<s>/03_finetune_btcv.ipynb   executed notebook of each run
    <output>/runs/<init>_frac<f>_seed<s>/results.json             what it recorded (swinunetr_lib.utils.results)
    <output>/results.csv        one row per run (the sweep's table)
    <output>/summary.csv        mean and std of the Dice over seeds, per initialisation and fraction
    <output>/dice_vs_fraction.png

::

    python -m swinunetr_lib.experiments.label_efficiency \\
        --params ci/params/label_efficiency/demo_03_finetune_btcv.yml \\
        --fractions "[0.1, 0.5, 1.0]" --inits "[scratch, ssl]" --seeds "[0, 1]" --workers 2

Tang et al. (CVPR 2022, label-efficiency ablation) report that SSL pretraining helps most when few labels are
available; here the numbers come from the notebook's evaluation on the held-out cases' original grid.
A finished run is reused unless ``rerun`` is set (or its parameters, the notebook or an input file such as the
encoder changed), so an interrupted sweep continues where it stopped.
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..config import Config
from ..finetune.run import resolve_init
from ..notebooks import sweep
from ..notebooks.runner import load_params_file
from ..paths import REPO_ROOT, absolute_from_cwd, resolve_path, runs_dir
from ..utils.cli import run_cli
from ..utils.files import atomic_path, atomic_write_text
from ..viz.figures import new_figure
from .intervals import mean_interval

NOTEBOOK = "notebooks/03_finetune_btcv.py"  # its steps without Jupyter: swinunetr_lib.experiments.finetune_run


@dataclass
class LabelEfficiencyConfig(Config):
    params: str = ""                     # YAML of base notebook parameters (e.g.
                                         # ci/params/label_efficiency/demo_03_finetune_btcv.yml)
    fractions: list[float] = field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0])  # labeled fractions of the training
                                                                                   # list, 0..1 (paper: 10 %..100 %)
    inits: list[str] = field(default_factory=lambda: ["scratch", "ssl"])  # initialisations compared:
                                                                          # scratch | ssl | official | auto
    seeds: list[int] = field(default_factory=lambda: [0])  # seeds per setting (each changes the labeled
                                                           # subset, data order and initialisation)
    pretrained: str = ""                 # encoder for init=ssl; "" = the notebook's default (notebook 02's export)
    output: str = ""                     # results folder; "" = runs_dir()/label_efficiency
    notebook: str = NOTEBOOK             # fine-tuning notebook run (through papermill) for each setting
    engine: str = "notebook"             # notebook: each run executes the notebook through papermill (its executed copy
                                         # kept); library: the same steps called in the run's process
                                         # (swinunetr_lib.experiments.finetune_run; notebook 03 only), for machines
                                         # without Jupyter
    rerun: bool = False                  # rerun runs that already finished (a changed parameter, notebook or
                                         # encoder reruns its runs anyway)
    workers: int = 1                     # runs side by side (local processes; the sweep's --workers)


@dataclass
class SweepResult:
    output: Path
    results: pd.DataFrame
    summary: pd.DataFrame
    figure: Path
    failures: list[str]


def summarize_runs(results: pd.DataFrame, metric: str = "mean_dice") -> pd.DataFrame:
    """Mean, std and count of ``metric`` over seeds for each (init, labeled_fraction)."""
    g = results.groupby(["init", "labeled_fraction"])[metric]
    return g.agg(["mean", "std", "count"]).reset_index()


# What the paper reports for BTCV label efficiency (Tang et al., CVPR 2022, Sec. 5), in its text; its figure gives
# no table. Its encoder saw 5,050 CTs for days on 8 GPUs and was fine-tuned at feature size 48, 96^3.
PAPER_LABEL_EFFICIENCY = {
    "gain_at_10_percent": 0.10,   # "about 10 %" more Dice than scratch with 10 % of the labels (read as Dice points)
    "label_saving": 0.40,         # the same Dice as scratch with at least 40 % fewer labels
}


RECORDED = REPO_ROOT / "docs" / "results" / "label_efficiency_phantoms"  # the committed experiment with headroom


@dataclass
class RecordedExperiment:
    results: pd.DataFrame        # one row per run (init, labeled_fraction, seed, n_train, mean_dice, ...)
    probe: pd.DataFrame | None   # the probe of the same encoder (probe.csv), if recorded
    about: str                   # its README: settings, commands, machine, date


def load_recorded(folder: str | Path = RECORDED) -> RecordedExperiment:
    """The label-efficiency experiment measured beforehand and committed (``results.csv`` as ``run_sweep``
    writes it, ``probe.csv`` as ``python -m swinunetr_lib.experiments.probe --csv`` writes it, and a README.md)."""
    folder = Path(folder)
    path = folder / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no recorded label-efficiency results")
    results = pd.read_csv(path)
    missing = {"init", "labeled_fraction", "seed", "mean_dice"} - set(results.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    probe = pd.read_csv(folder / "probe.csv") if (folder / "probe.csv").is_file() else None
    about = (folder / "README.md").read_text() if (folder / "README.md").is_file() else ""
    return RecordedExperiment(results, probe, about)


def paired_gain(results: pd.DataFrame, metric: str = "mean_dice", base: str = "scratch",
                other: str = "ssl") -> pd.DataFrame:
    """``other - base`` paired by seed (a seed fixes the labeled subset and the data order for both), one row per
    labeled fraction and a last row ``pooled`` over all of them: mean, its 95 % t interval (``ci_low``, ``ci_high``),
    ``std``, ``count`` (pairs) and the smallest effect the pairs could detect (:func:`intervals.mean_interval`)."""
    columns = ["setting", "labeled_fraction", "n_train", "mean", "ci_low", "ci_high", "std", "count",
               "smallest_detectable"]
    wide = results.pivot_table(index=["labeled_fraction", "seed"], columns="init", values=metric)
    if not {base, other} <= set(wide.columns):
        return pd.DataFrame(columns=columns)
    diff = (wide[other] - wide[base]).dropna().rename("gain").reset_index()
    n_train = (results.groupby("labeled_fraction")["n_train"].first() if "n_train" in results
               else pd.Series(dtype=float))
    rows = []
    groups = [(f"{100 * f:g} % labels", f, g["gain"]) for f, g in diff.groupby("labeled_fraction")]
    for name, fraction, gains in [*groups, ("pooled", float("nan"), diff["gain"])]:
        ci = mean_interval(gains)
        rows.append({"setting": name, "labeled_fraction": fraction, "n_train": n_train.get(fraction, float("nan")),
                     "mean": ci.mean, "ci_low": ci.low, "ci_high": ci.high, "std": ci.sd, "count": ci.n,
                     "smallest_detectable": ci.smallest_detectable})
    return pd.DataFrame(rows, columns=columns)


def plot_label_efficiency(results: pd.DataFrame, path: str | Path | None = None, metric: str = "mean_dice",
                          n_train: int | None = None, paper: bool = True,
                          floors: Mapping[str, float] | None = None) -> Figure:
    """Two panels. Left: Dice versus labeled data per initialisation, the mean over seeds with its 95 % interval
    (each seed a dot) and, from ``floors`` (``{"atlas from 1 case (no learning)": 0.50, ...}``), the no-learning
    floors and ceilings as labelled lines. Right: a forest plot of the SSL − scratch gain paired by seed, one row per
    labeled fraction and a pooled row, each with its 95 % interval, the zero line, and — when ``paper`` — the paper's
    reported point as its own labelled row (BTCV, 5,050 CTs, feature 48: a different setting, not a target on this
    axis). ``n_train`` (training cases at 100 %) is read from the runs at fraction 1 when not given."""
    if n_train is None and "n_train" in results:
        full = results.loc[results["labeled_fraction"] == 1.0, "n_train"]
        n_train = int(full.iloc[0]) if len(full) else None
    fig = new_figure(figsize=(10.4, 3.8))
    ax, ax_gain = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.0, 1.15]})
    names = {"ssl": "SSL pretrained", "scratch": "from scratch"}
    for i, (init, runs) in enumerate(results.groupby("init")):
        cis = {f: mean_interval(g[metric]) for f, g in runs.groupby("labeled_fraction")}
        x = np.array(sorted(cis)) * 100 + (i - 0.5) * 1.5
        mean = np.array([cis[f].mean for f in sorted(cis)])
        err = np.nan_to_num(np.array([[cis[f].mean - cis[f].low, cis[f].high - cis[f].mean] for f in sorted(cis)]).T)
        line = ax.errorbar(x, mean, yerr=err, marker="o", capsize=3, label=names.get(init, init))
        ax.scatter(100 * runs["labeled_fraction"] + (i - 0.5) * 1.5, runs[metric], s=10, alpha=0.5,
                   color=line[0].get_color())
    for j, (label, value) in enumerate((floors or {}).items()):
        ax.axhline(value, color="0.35", lw=1, ls=(0, (4, 2 + 2 * j)))
        ax.annotate(f"{label}: {value:.2f}", (1, value), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                    fontsize=7, color="0.25")
    ax.set_xlabel("labeled training data (%)" if n_train is None else f"labeled training data (% of {n_train} cases)")
    ax.set_ylabel(f"{metric.replace('_', ' ')} (held-out cases)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("measured here: mean and 95 % CI over seeds", fontsize=10)
    _forest(ax_gain, paired_gain(results, metric), n_train, paper)
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    return fig


def _forest(ax: Axes, gain: pd.DataFrame, n_train: int | None, paper: bool) -> None:
    """Forest plot of :func:`paired_gain`'s rows on ``ax`` (top to bottom), the zero line, and the paper's row."""
    labels, y = [], 0
    for row in gain.itertuples():
        cases = "" if n_train is None or not np.isfinite(row.labeled_fraction) else \
            f" ({row.labeled_fraction * n_train:g} of {n_train} cases)"
        pooled = row.setting == "pooled"
        err = [[row.mean - row.ci_low], [row.ci_high - row.mean]] if row.count >= 2 else None
        ax.errorbar([row.mean], [y], xerr=err, fmt="D" if pooled else "o", color="k" if pooled else "tab:orange",
                    capsize=3, ms=6 if pooled else 5)
        labels.append(f"{row.setting}{cases}, n = {row.count}")
        y -= 1
    if paper:
        y -= 0.5
        ax.scatter([PAPER_LABEL_EFFICIENCY["gain_at_10_percent"]], [y], marker="*", s=120, color="0.3")
        labels.append("paper: BTCV, 5,050 CTs, feature 48,\n10 % labels (text, no interval)")
    ticks = [-i for i in range(len(gain))] + ([y] if paper else [])
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.axvline(0, color="gray", lw=1, ls="--")
    ax.set_xlabel("SSL − scratch, mean Dice (95 % CI, paired by seed)")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title("what pretraining buys here", fontsize=10)


LIBRARY_RUNNER = "swinunetr_lib.experiments.finetune_run:run_for_sweep"  # engine=library: notebook 03's steps


def sweep_grid(cfg: LabelEfficiencyConfig, notebook: Path) -> dict[str, Any]:
    """The grid file of the experiment (for :mod:`swinunetr_lib.notebooks.sweep`): the base parameters file, one case
    per init x fraction x seed (the encoder only where an init uses one, so a new encoder reruns only those), the
    run names of earlier versions, and the library runner for ``engine=library``."""
    base = {"show_precomputed": False}
    cases = []
    for init in cfg.inits:
        path = None if init == "scratch" else resolve_init(init, cfg.pretrained)[1]  # a missing encoder: an error
        encoder = {"pretrained": str(path)} if path else {}
        cases += [{"init": init, "labeled_fraction": float(f), "seed": int(s), **encoder}
                  for f in cfg.fractions for s in cfg.seeds]
    grid: dict[str, Any] = {"base": base, "cases": cases, "name": "{init}_frac{labeled_fraction:g}_seed{seed}"}
    if cfg.params:
        grid["base_file"] = str(resolve_path(cfg.params))
    if cfg.engine == "library":
        grid["runner"] = LIBRARY_RUNNER
    return grid


def run_sweep(cfg: LabelEfficiencyConfig) -> SweepResult:
    """Run the notebook for every fraction x init x seed through the sweep verb; collect, tabulate and plot."""
    notebook = resolve_path(cfg.notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"{notebook}: notebook not found")
    if cfg.engine not in ("notebook", "library"):
        raise ValueError(f"engine={cfg.engine!r} must be 'notebook' or 'library'")
    if cfg.engine == "library" and notebook != resolve_path(NOTEBOOK):
        raise ValueError(f"engine=library runs the steps of {NOTEBOOK} only, not {notebook}")
    if cfg.params:
        load_params_file(resolve_path(cfg.params), notebook)  # its errors name the parameter file
    for f in cfg.fractions:
        if not 0 < f <= 1:
            raise ValueError(f"fraction {f} is not in (0, 1]")
    if not (cfg.fractions and cfg.inits and cfg.seeds):
        raise ValueError("fractions, inits and seeds must each name at least one value")
    for init in cfg.inits:  # unknown names, or a missing encoder, fail before anything is written
        if init not in ("scratch", "ssl", "official", "auto"):
            raise ValueError(f"inits: {init!r} is not one of scratch, ssl, official, auto")
    grid = sweep_grid(cfg, notebook)
    out = resolve_path(cfg.output) if cfg.output else runs_dir() / "label_efficiency"
    out.mkdir(parents=True, exist_ok=True)
    grid_file = atomic_write_text(yaml.safe_dump(grid, sort_keys=False), out / "grid.yml")
    print(f"[label efficiency] the same sweep: python -m swinunetr_lib.notebooks sweep {cfg.notebook} "
          f"--grid {grid_file} --out {out}", flush=True)
    table = sweep.run_sweep(sweep.load_grid(grid_file, notebook), out, workers=cfg.workers, rerun=cfg.rerun,
                            say=lambda text: print(f"[label efficiency] {text}", flush=True))
    failures = [f"{r.run}: {r.error}" for r in table.itertuples() if r.status != "ok"]
    results = table[table["status"] == "ok"].reset_index(drop=True)
    if results.empty:
        raise RuntimeError("no run of the sweep succeeded:\n" + "\n".join(failures))
    summary = summarize_runs(results)
    atomic_write_text(summary.to_csv(index=False), out / "summary.csv")
    figure = out / "dice_vs_fraction.png"
    plot_label_efficiency(results, figure)  # pyplot-free: nothing to close
    return SweepResult(out, results, summary, figure, failures)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swinunetr_lib.experiments.label_efficiency",
                                     description=__doc__.split("\n\n")[0])
    LabelEfficiencyConfig.add_arguments(parser)
    args = absolute_from_cwd(parser.parse_args(argv), "params", "pretrained", "output", "notebook")

    def body() -> int:
        res = run_sweep(LabelEfficiencyConfig.from_args(args))
        print(res.summary.to_string(index=False))
        print(f"results: {res.output} ({len(res.results)} runs, {len(res.failures)} failed)")
        return 1 if res.failures else 0

    return run_cli("python -m swinunetr_lib.experiments.label_efficiency", body)


if __name__ == "__main__":
    raise SystemExit(main())
