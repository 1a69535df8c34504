"""Label-efficiency experiment: fine-tuning Dice versus the fraction of labeled data (as in the paper's ablation).

One command runs notebook ``03_finetune_btcv`` through papermill for every labeled fraction x
initialisation (scratch / SSL) x seed, collects each run's ``results.json``, and writes one folder::

    <output>/runs/<init>_frac<f>_seed<s>/03_finetune_btcv.ipynb   executed notebook of each run
    <output>/runs/<init>_frac<f>_seed<s>/results.json             its numbers
    <output>/runs/<init>_frac<f>_seed<s>/sweep_run.json           what they depend on (parameters, encoder SHA-256)
    <output>/results.csv        one row per run
    <output>/summary.csv        mean and std of the Dice over seeds, per initialisation and fraction
    <output>/dice_vs_fraction.png

::

    python -m swinunetr_lib.experiments.label_efficiency \\
        --params ci/params/label_efficiency/demo_03_finetune_btcv.yml \\
        --fractions "[0.1, 0.5, 1.0]" --inits "[scratch, ssl]" --seeds "[0, 1]"

Tang et al. (CVPR 2022, label-efficiency ablation) report that SSL pretraining helps most when few labels are
available; here the numbers come from the notebook's evaluation on the held-out cases' original grid.
A finished run (its ``results.json`` exists) is reused unless ``rerun`` is set, so an interrupted sweep
continues where it stopped, but only when it was made with the same notebook parameters and the same encoder:
beside ``results.json`` each run keeps ``sweep_run.json`` (:func:`run_fingerprint`: its parameters and the SHA-256
of the encoder it started from); a finished run whose record differs, or that has none, is run again, and the sweep
says why (:func:`stale_reason`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..config import Config
from ..data.example_data import sha256_of
from ..finetune.run import resolve_init
from ..notebooks.precomputed import SWEEP_RUN_PREFIX
from ..notebooks.progress import ProgressWatcher
from ..notebooks.runner import NotebookError, load_params_file, notebook_parameters, run_notebook
from ..paths import REPO_ROOT, absolute_from_cwd, resolve_path, runs_dir
from ..utils.cli import run_cli
from ..utils.files import atomic_path, atomic_write_text
from ..viz.figures import new_figure
from .finetune_run import run_from_params
from .intervals import mean_interval

NOTEBOOK = "notebooks/03_finetune_btcv.py"  # its steps without Jupyter: swinunetr_lib.experiments.finetune_run
FINGERPRINT = "sweep_run.json"  # beside a run's results.json: the parameters and encoder it was made with
PLACE_PARAMS = ("results_json",)  # where a run writes, not what it computes: left out of its fingerprint


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
                                         # kept); library: the same steps called in this process
                                         # (swinunetr_lib.experiments.finetune_run; notebook 03 only), for machines
                                         # without Jupyter
    rerun: bool = False                  # rerun runs whose results.json already exists
    progress: bool = False               # show papermill's per-cell progress bar (when status is off)
    status: bool = True                  # one progress line: run k of n, its cell, step, loss and time left
                                         # (swinunetr_lib.notebooks.progress); never inside a notebook's kernel


@dataclass
class SweepResult:
    output: Path
    results: pd.DataFrame
    summary: pd.DataFrame
    figure: Path
    failures: list[str]


def run_name(init: str, fraction: float, seed: int) -> str:
    return f"{init}_frac{fraction:g}_seed{seed}"


def run_fingerprint(params: Mapping[str, Any], encoder: Path | None) -> dict[str, Any]:
    """What a run's numbers depend on: its notebook parameters (without :data:`PLACE_PARAMS`) and the SHA-256 of the
    encoder it starts from (None from scratch). Stored as :data:`FINGERPRINT` beside its ``results.json``."""
    return {"params": {k: params[k] for k in sorted(params) if k not in PLACE_PARAMS},
            "encoder_sha256": sha256_of(encoder) if encoder is not None else None}


def stale_reason(folder: Path, fingerprint: Mapping[str, Any]) -> str | None:
    """None when ``folder`` holds a finished run (``results.json``) made with ``fingerprint``; otherwise why it must
    be run (again), in a few words: not finished, no record, another encoder, or which parameters differ."""
    if not (folder / "results.json").is_file():
        return "not run yet"
    try:
        stored = json.loads((folder / FINGERPRINT).read_text())
    except (OSError, ValueError):
        return f"finished, but without a readable {FINGERPRINT}: cannot tell what it was made with"
    if not isinstance(stored, dict) or not isinstance(stored.get("params"), dict):
        return f"finished, but its {FINGERPRINT} is not a sweep record"
    if stored.get("encoder_sha256") != fingerprint["encoder_sha256"]:
        return "finished with another encoder (SHA-256 differs)"
    want, have = json.loads(json.dumps(fingerprint["params"])), stored["params"]  # the JSON view of both
    changed = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    if changed:
        return "finished with other parameters: " + ", ".join(
            f"{k} {have.get(k)!r} -> {want.get(k)!r}" for k in changed[:4]) + (" ..." if len(changed) > 4 else "")
    return None


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


@dataclass
class PlannedRun:
    """One run of a sweep: its name, folder, the notebook parameters it runs with, its :func:`run_fingerprint`, and
    why it must run (None: a finished run made with the same fingerprint is reused)."""

    name: str
    folder: Path
    params: dict[str, Any]
    fingerprint: dict[str, Any]
    why: str | None


def plan_sweep(cfg: LabelEfficiencyConfig) -> tuple[Path, Path, list[PlannedRun]]:
    """``(notebook, output folder, runs)`` of a sweep, checked before any run starts: the notebook and engine, the
    parameter file, the fractions and inits, every encoder needed (a missing one is an error naming it)."""
    notebook = resolve_path(cfg.notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"{notebook}: notebook not found")
    if cfg.engine not in ("notebook", "library"):
        raise ValueError(f"engine={cfg.engine!r} must be 'notebook' or 'library'")
    if cfg.engine == "library" and notebook != resolve_path(NOTEBOOK):
        raise ValueError(f"engine=library runs the steps of {NOTEBOOK} only, not {notebook}")
    base: dict[str, Any] = load_params_file(resolve_path(cfg.params), notebook) if cfg.params else {}
    if cfg.engine == "library":  # papermill fills in the notebook's defaults itself; the library engine needs them all
        base = {**notebook_parameters(notebook), **base}
    for f in cfg.fractions:
        if not 0 < f <= 1:
            raise ValueError(f"fraction {f} is not in (0, 1]")
    if not (cfg.fractions and cfg.inits and cfg.seeds):
        raise ValueError("fractions, inits and seeds must each name at least one value")
    out = resolve_path(cfg.output) if cfg.output else runs_dir() / "label_efficiency"
    for init in cfg.inits:  # unknown names fail before any run starts
        if init not in ("scratch", "ssl", "official", "auto"):
            raise ValueError(f"inits: {init!r} is not one of scratch, ssl, official, auto")
    encoders = {init: resolve_init(init, cfg.pretrained)[1] for init in cfg.inits}
    plan = []
    for init in cfg.inits:
        for fraction in cfg.fractions:
            for seed in cfg.seeds:
                name = run_name(init, fraction, seed)
                folder = out / "runs" / name
                params = {**base, "init": init, "labeled_fraction": float(fraction), "seed": int(seed),
                          "run_name": f"{SWEEP_RUN_PREFIX}{name}", "results_json": str(folder / "results.json"),
                          "show_precomputed": False}
                if init != "scratch" and cfg.pretrained:
                    params["pretrained"] = str(resolve_path(cfg.pretrained))
                fingerprint = run_fingerprint(params, encoders[init])
                why = "rerun" if cfg.rerun else stale_reason(folder, fingerprint)
                plan.append(PlannedRun(name, folder, params, fingerprint, why))
    return notebook, out, plan


def run_sweep(cfg: LabelEfficiencyConfig) -> SweepResult:
    """Run the notebook for every fraction x init x seed (:func:`plan_sweep`; a finished run made with the same
    parameters and encoder is reused, any other is run again, saying why); collect, tabulate and plot."""
    notebook, out, plan = plan_sweep(cfg)
    rows, failures = [], []
    todo = sum(p.why is not None for p in plan)
    watcher = _watcher(out) if cfg.status and todo else None
    say = watcher.say if watcher is not None else (lambda text: print(text, flush=True))
    done = 0
    with watcher or nullcontext():
        for run in plan:
            name, folder, params, fingerprint, why = run.name, run.folder, run.params, run.fingerprint, run.why
            result_file = folder / "results.json"
            if why is not None:
                done += 1
                label = f"run {done} of {todo}: {name}"
                say(f"[label efficiency] {label}" + ("" if why in ("not run yet", "rerun") else
                                                    f" (run again: {why})"))
                (folder / FINGERPRINT).unlink(missing_ok=True)  # a failed rerun leaves no stale record
                ok, seconds, error = _run_one(cfg.engine, notebook, params, folder, cfg.progress, watcher, label)
                if not ok:
                    failures.append(error)
                    say(f"    FAILED: {error}")
                    continue
                atomic_write_text(json.dumps(fingerprint, indent=1) + "\n", folder / FINGERPRINT)
                say(f"    ok in {seconds:.0f} s")
            if not result_file.is_file():
                raise NotebookError(f"{notebook.name} ran for {name} but wrote no {result_file}")
            r = json.loads(result_file.read_text())
            rows.append({"run": name, **{k: v for k, v in r.items() if k != "dice_per_class"},
                         **{f"dice_{k}": v for k, v in r.get("dice_per_class", {}).items()}})
    if not rows:
        raise RuntimeError("no run of the sweep succeeded:\n" + "\n".join(failures))
    results = pd.DataFrame(rows)
    summary = summarize_runs(results)
    atomic_write_text(results.to_csv(index=False), out / "results.csv")
    atomic_write_text(summary.to_csv(index=False), out / "summary.csv")
    figure = out / "dice_vs_fraction.png"
    plot_label_efficiency(results, figure)  # pyplot-free: nothing to close
    return SweepResult(out, results, summary, figure, failures)


def _watcher(out: Path) -> ProgressWatcher | None:
    """The progress line of a sweep on ``runs_dir()`` (where notebook 03 puts each run's folder) and ``out``; None
    inside a notebook's kernel (notebook 06), whose output is the notebook, not a terminal."""
    ipython = sys.modules.get("IPython")  # imported by papermill too: a kernel is running only if its shell has one
    shell = ipython.get_ipython() if ipython is not None else None
    if getattr(shell, "kernel", None) is not None:
        return None
    roots = [runs_dir()]
    if not out.resolve().is_relative_to(roots[0].resolve()):
        roots.append(out)
    return ProgressWatcher(roots)


def _run_one(engine: str, notebook: Path, params: dict[str, Any], folder: Path, progress: bool,
             watcher: ProgressWatcher | None = None, label: str = "") -> tuple[bool, float, str]:
    """One run of the sweep: (ok, seconds, error). ``notebook``: papermill executes the notebook into ``folder``;
    ``library``: :func:`swinunetr_lib.experiments.finetune_run.run_from_params` (``params`` then hold every
    parameter). ``watcher``: the sweep's progress line, labelled ``label`` for this run."""
    if engine == "notebook":
        run = run_notebook(notebook, params, folder, progress=progress, watcher=watcher, label=label)
        return run.ok, run.seconds, run.error
    if watcher is not None:
        watcher.set_label(label)
    tic = time.perf_counter()
    try:
        run_from_params(params)
    except Exception as err:  # a failed run is reported and the sweep goes on, as with papermill
        return False, time.perf_counter() - tic, f"{folder.name}: {type(err).__name__}: {err}"
    return True, time.perf_counter() - tic, ""


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
