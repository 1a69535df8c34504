"""One fine-tuning run as notebook 03 makes it, with or without Jupyter.

Notebook 03 (``03_finetune_btcv``) turns its parameters into settings with :func:`notebook_config`, trains
(:func:`~swinunetr_lib.finetune.run.finetune`), scores the held-out cases on their original grid
(:func:`~swinunetr_lib.infer.evaluation.evaluate`) and writes :func:`results_record` as ``results.json``, showing each
step.
:func:`run_from_params` chains the same steps without a notebook: ``python -m swinunetr_lib.experiments.label_efficiency
--engine library`` uses it on machines where Jupyter is not installed (a GPU machine with only PyTorch), so both
engines give the same numbers for the same parameters.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..data.cohort import build_demo_cohort
from ..finetune.run import FinetuneConfig, FinetuneResult, finetune, split_entries
from ..infer.evaluation import evaluate, summarize
from ..models.swin_unetr import encoder_feature_size, feature_size_warning, resolve_init
from ..paths import resolve_path, runs_dir
from ..utils.files import atomic_write_text

NOTEBOOK_ONLY = ("results_json", "show_precomputed")  # notebook 03's parameters that are not run settings


def notebook_config(*, data_manifest: str, task: str, init: str, pretrained: str, labeled_fraction: float,
                    spacing: Sequence[float], roi_size: Sequence[int], feature_size: int, num_samples: int,
                    batch_size: int, max_steps: int, val_interval: int, lr: float, warmup_steps: int, seed: int,
                    device: str, precision: str, run_name: str) -> FinetuneConfig:
    """Notebook 03's parameters (its parameters cell holds the defaults) -> the settings of its run.

    An empty ``data_manifest`` means the demo cohort (built if missing); ``init`` is resolved
    (:func:`~swinunetr_lib.models.swin_unetr.resolve_init`: ``auto`` becomes ``ssl`` or ``scratch``, a missing encoder
    is an error naming it); the run folder is ``runs_dir()/finetune_btcv/<run_name>`` (default
    ``<init>_frac<fraction>_seed<seed>``); every run starts fresh (no resume) and keeps 4 checkpoints.
    """
    if not data_manifest:
        data_manifest = str(build_demo_cohort().finetune_manifest)
    init_kind, init_path = resolve_init(init, pretrained)
    run_dir = runs_dir() / "finetune_btcv" / (run_name or f"{init_kind}_frac{labeled_fraction:g}_seed{seed}")
    return FinetuneConfig(task=task, data_manifest=data_manifest, run_dir=str(run_dir), init=init_kind,
                          pretrained=str(init_path or ""), labeled_fraction=labeled_fraction, spacing=list(spacing),
                          roi_size=list(roi_size), feature_size=feature_size, num_samples=num_samples,
                          batch_size=batch_size, max_steps=max_steps, val_interval=val_interval, lr=lr,
                          warmup_steps=warmup_steps, seed=seed, device=device, precision=precision, log_every=5,
                          checkpoint_every=max(1, max_steps // 4), resume=False)


def init_feature_size_warning(cfg: FinetuneConfig, default: int = 48) -> str | None:
    """The warning :func:`~swinunetr_lib.finetune.run.finetune` will print for ``cfg`` (an ``ssl`` / ``official``
    init whose encoder has another feature size than ``cfg.feature_size``), said before training; None otherwise."""
    if not cfg.pretrained:
        return None
    size = encoder_feature_size(cfg.pretrained)
    if size is None or size == cfg.feature_size:
        return None
    return feature_size_warning(cfg.pretrained, size, cfg.feature_size, default)


def results_record(cfg: FinetuneConfig, result: FinetuneResult, table: pd.DataFrame) -> dict[str, Any]:
    """The numbers of one run for a sweep to collect (``results.json``): settings, time, the best validation Dice on
    the resampled grid and, from ``table`` (:func:`~swinunetr_lib.infer.evaluation.summarize` of the held-out cases on
    their original grid), the mean Dice, mean HD95 (mm), organs missed and the Dice of each class."""
    return {"init": cfg.init, "labeled_fraction": cfg.labeled_fraction, "seed": cfg.seed, "n_train": result.n_train,
            "steps": result.fit.step, "minutes": round(result.seconds / 60, 2),
            "val_mean_dice_resampled": result.best_mean_dice, "mean_dice": float(table.loc["mean", "dice"]),
            "mean_hd95_mm": float(table.loc["mean", "hd95_mm"]), "organs_missed": int(table.loc["mean", "missed"]),
            "dice_per_class": table["dice"].drop("mean").round(4).to_dict(), "run_dir": cfg.run_dir}


def write_results(record: Mapping[str, Any], cfg: FinetuneConfig, results_json: str | os.PathLike[str] = "") -> Path:
    """Write a run's record as JSON to ``results_json`` (notebook 03's parameter; "" = ``<run_dir>/results.json``),
    atomically; returns the path."""
    out = resolve_path(results_json) if results_json else Path(cfg.run_dir) / "results.json"
    return atomic_write_text(json.dumps(record, indent=2), out)


def run_from_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Notebook 03 without the notebook: ``params`` are its parameters, all of them (its defaults updated with a
    parameter file's values, as :func:`swinunetr_lib.notebooks.runner.notebook_parameters` reads them). Trains,
    evaluates the held-out cases on their original grid and writes the record (:func:`write_results`); returns it."""
    cfg = notebook_config(**{k: v for k, v in params.items() if k not in NOTEBOOK_ONLY})
    _, val_entries = split_entries(cfg)
    result = finetune(cfg)
    scores = evaluate(result.model_path, val_entries, Path(cfg.run_dir) / "eval", device=cfg.device)
    record = results_record(cfg, result, summarize(scores))
    write_results(record, cfg, params.get("results_json", ""))
    return record


def run_for_sweep(params: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`run_from_params` as the sweep's library runner (``runner:`` of a grid file, the label-efficiency
    experiment's ``engine=library``): returns the scalars notebook 03 records (:func:`sweep_results`)."""
    return sweep_results(run_from_params(params))


def sweep_results(record: Mapping[str, Any]) -> dict[str, Any]:
    """A run's record as scalar results for a sweep's table: each class's Dice as ``dice_<class>``; no folder."""
    flat = {k: v for k, v in record.items() if k not in ("dice_per_class", "run_dir")}
    return {**flat, **{f"dice_{name}": dice for name, dice in record.get("dice_per_class", {}).items()}}
