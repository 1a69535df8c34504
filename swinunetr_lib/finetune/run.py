"""Supervised fine-tuning of Swin UNETR on a labeled segmentation task (Tang et al. 2022, Sec. 4.1).

``finetune(cfg)`` = task preset + decathlon manifest + :func:`swinunetr_lib.train.loop.fit` (the one loop):
DiceCE loss, AdamW with warm-up + cosine, mixed precision / gradient checkpointing via ``TrainConfig``,
validation every ``val_interval`` steps by sliding-window inference (overlap 0.5, Gaussian blending,
Sec. 4.1), best checkpoint by mean Dice, exact resume (``fit``'s contract: the augmentation RNG of every
sample is drawn from the global NumPy RNG that ``fit`` re-seeds per batch).

Outputs in ``run_dir``: ``finetune_meta.json`` (task, channels, classes, ROI, spacing, intensity preset,
initialisation), ``metrics.csv``, ``checkpoints/{last,best}.pt`` (``fit``'s) and ``model.pt`` =
``{"state_dict", "finetune": meta, "best_mean_dice", "step"}`` — what :mod:`swinunetr_lib.infer` loads.

CLI::

    python -m swinunetr_lib.finetune --task demo_btcv --data-manifest data/demo_cohort/finetune.json \\
        --feature-size 12 --max-steps 300 --run-dir runs/finetune_demo
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import list_data_collate
from monai.losses import DiceCELoss

from ..data.loading import refuse_paths_outside_root
from ..data.manifest import assign_folds, labeled_fraction_subsets, load_manifest, resolve_entries, split_fold
from ..data.manifest_paths import missing_files_problem
from ..models.swin_unetr import (
    LoadReport,
    build_finetune_model,
    encoder_feature_size,
    feature_size_warning,
    read_encoder_checkpoint,
    resolve_init,
    swinunetr_roi_problem,
)
from ..models.window_attention import use_sdpa_window_attention
from ..paths import absolute_from_cwd, resolve_path, runs_dir
from ..train.loop import FitResult, TrainConfig, fit
from ..utils.cli import run_cli
from ..utils.device import resolve_device, seed_everything
from ..utils.files import atomic_torch_save, atomic_write_text, safe_torch_load
from ..utils.run_lock import run_dir_lock
from .cases import AugmentedCases, preprocess_cases
from .sliding_window import check_window_options, dice_scores, sliding_window_predict
from .task_presets import (
    TaskPreset,
    format_labels,
    get_preset,
    manifest_mismatch,
    matching_presets,
    msd_tasks,
    named_preset,
)

META_FILE = "finetune_meta.json"
MODEL_FILE = "model.pt"


@dataclass
class FinetuneConfig(TrainConfig):
    """A fine-tuning run: the loop's settings (:class:`TrainConfig`, with fine-tuning's defaults below) and the
    task's."""

    task: str = ""                        # task preset: btcv, Task01_BrainTumour..Task10_Colon, demo_btcv, demo_ct,
                                          # demo_mr;
                                          # "" = the task the manifest names (its name or folder, e.g. Spleen ->
                                          # Task09_Spleen) or whose labels and modality it lists
    data_manifest: str = ""               # decathlon JSON with "training" and "validation" lists (relative paths)
    data_root: str = ""                   # folder the manifest's paths are relative to; "" = the manifest's folder
    val_fold: int | None = None           # validate on this "fold" of the training list (None: the manifest's
                                          # "validation" list, or fold 0 when it has none)
    run_dir: str = ""                     # output folder (checkpoints, metrics.csv, model.pt);
                                          # "" = runs_dir()/finetune/<task>
    init: str = "scratch"                 # scratch | ssl | official | auto (ssl if our export exists, else scratch)
    pretrained: str = ""                  # encoder checkpoint; "" with init=ssl:
                                          # runs_dir()/ssl_pretraining/model_swinvit.pt
    allow_partial: bool = False           # accept a pretrained checkpoint that does not fill every encoder tensor
    feature_size: int = 48                # Swin UNETR embedding size, divisible by 12 (paper Sec. 4.1: 48)
    roi_size: int | list[int] | None = None  # training crop / sliding window in voxels, each divisible by 32;
                                             # None = the preset's (BTCV: 96^3, as the paper); an int is a cube
    spacing: list[float] | None = None    # target voxel spacing in mm; None = the preset's (BTCV: 1.5 x 1.5 x 2.0,
                                          # as the paper); [] = keep each image's grid
    num_samples: int | None = None        # label-balanced crops per volume per step; None = the preset's (official
                                          # BTCV: 4)
    labeled_fraction: float = 1.0         # fraction (0..1] of the training list used (nested subsets, seeded)
    batch_size: int = 1                   # volumes per step (each gives num_samples crops)
    max_steps: int = 30000                # optimizer steps in total (MONAI's BTCV tutorial: 30000)
    lr: float = 1e-4                      # peak AdamW learning rate, after warm-up (official BTCV fine-tuning: 1e-4)
    sdpa_attention: bool = False          # fused scaled_dot_product_attention for window attention (same weights)
    val_interval: int = 500               # optimizer steps between sliding-window validations on the val list
                                          # (MONAI's BTCV tutorial: 500)
    best_metric: str = "mean_dice"        # best.pt by validation mean Dice (when val_interval > 0)
    val_max_cases: int = 0                # validate on at most this many cases; 0 = all validation cases
    sw_batch_size: int = 4                # windows per forward pass in sliding-window inference
    overlap: float = 0.5                  # sliding-window overlap, 0 <= overlap < 1 (paper: 0.5, Gaussian blending)
    log_every: int = 10                   # optimizer steps between metrics.csv / TensorBoard rows
    device: str = "auto"                  # auto | cpu | cuda | cuda:N (auto: CUDA if present)

    def train_config(self) -> TrainConfig:
        """The loop's settings; no best checkpoint to keep when the run does not validate."""
        loop = super().train_config()
        return loop if self.val_interval > 0 else replace(loop, best_metric="")


@dataclass
class FinetuneResult:
    run_dir: Path
    model_path: Path
    best_mean_dice: float | None
    fit: FitResult
    load_report: LoadReport | None
    seconds: float
    n_train: int
    n_val: int


def resolve_preset(cfg: FinetuneConfig) -> TaskPreset:
    """The task preset with this run's ROI, crops per volume and spacing; bad values raise ValueError."""
    roi = [cfg.roi_size] * 3 if isinstance(cfg.roi_size, int) else cfg.roi_size
    if roi is not None and (len(roi) != 3 or any(r <= 0 or r % 32 for r in roi)):
        raise ValueError(f"roi_size={cfg.roi_size}: need 3 positive multiples of 32 (Swin UNETR downsamples 5 times)")
    if roi is not None and (problem := swinunetr_roi_problem(roi)):
        raise ValueError(f"roi_size={cfg.roi_size}: {problem}")
    if cfg.spacing and (len(cfg.spacing) != 3 or any(s <= 0 for s in cfg.spacing)):
        raise ValueError(f"spacing={cfg.spacing}: need 3 positive voxel sizes in mm (or [] for the native grid)")
    if cfg.num_samples is not None and cfg.num_samples < 1:
        raise ValueError(f"num_samples={cfg.num_samples} must be >= 1")
    overrides: dict[str, Any] = {"roi_size": roi, "num_samples": cfg.num_samples, "spacing": cfg.spacing}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides.get("spacing") == []:
        overrides["spacing"] = None
    preset = get_preset(cfg.task or "btcv", **overrides)
    if preset.rot90_prob > 0 and preset.roi_size[0] != preset.roi_size[1]:
        print(f"roi_size {list(preset.roi_size)} is not square in the axial plane: {preset.name}'s 90-degree "
              "turns are left out (they would change the crop's shape)")
        preset = preset.with_overrides(rot90_prob=0.0)
    return preset


def _manifest_path(cfg: FinetuneConfig) -> Path:
    if not cfg.data_manifest:
        raise ValueError("data_manifest is required: a decathlon JSON with 'training' and 'validation' lists")
    path = resolve_path(cfg.data_manifest)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: data manifest not found")
    return path


def resolve_task(cfg: FinetuneConfig) -> FinetuneConfig:
    """``cfg`` with its task checked against the manifest, or taken from it when ``cfg.task`` is empty.

    Before anything is trained, the manifest's ``labels``, ``modality`` and channel count are compared with
    the preset: a mismatch is a ``ValueError`` naming the manifest, both label sets and the task(s) that fit.
    With no task, the task is the one the manifest names (``name`` or its folder: ``BTCV``, ``Spleen``,
    ``Task09_Spleen``, ...), else the one real task (BTCV or an MSD task) whose labels and modality it lists;
    the choice is printed.
    """
    path = _manifest_path(cfg)
    manifest = load_manifest(path)
    real = ["btcv", *msd_tasks()]

    def fits() -> str:
        names = matching_presets(manifest)
        return (f"use --task {' or --task '.join(names)}" if names else
                "no task preset has these classes and channels (presets: " + ", ".join(real) + ", demo_*)")

    if cfg.task:
        problem = manifest_mismatch(get_preset(cfg.task), manifest)
        if problem is not None:
            raise ValueError(f"{path}: {problem}; {fits()}")
        return cfg
    named = named_preset(manifest.get("name"), path.parent.name,
                         Path(cfg.data_root).name if cfg.data_root else None)
    if named is not None:
        task, why = named[0], f"it names {named[1]!r}"
        problem = manifest_mismatch(get_preset(task), manifest)
        if problem is not None:
            raise ValueError(f"{path}: names task {task} ({named[1]!r}) but {problem}; {fits()}")
    else:
        found = matching_presets(manifest, real)
        if len(found) != 1:
            listed = "labels " + format_labels(manifest["labels"]) if isinstance(manifest.get("labels"), dict) \
                and manifest["labels"] else "no 'labels'"
            raise ValueError(f"{path}: no --task given and the manifest names no task ({listed}, name "
                             f"{manifest.get('name')!r}); {fits() if found else 'pass --task'} "
                             f"(presets: {', '.join(real)}, demo_btcv, demo_ct, demo_mr)")
        task, why = found[0], f"its labels {format_labels(manifest['labels'])} and modality"
    print(f"task {task}: taken from {path} ({why}); pass --task to choose another")
    return dataclasses.replace(cfg, task=task)


def split_entries(cfg: FinetuneConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training, validation) entries of ``cfg.data_manifest`` with absolute ``image``/``label`` paths.

    Validation is the manifest's ``validation`` list; with ``val_fold`` set, or when there is no such list,
    it is that fold (default 0) of the ``fold`` keys of ``training`` (as ``build-manifest`` writes them), and
    a manifest with neither (e.g. an official MSD ``dataset.json``) gets 5 deterministic folds
    (:func:`~swinunetr_lib.data.manifest.assign_folds`, seed 0, independent of ``cfg.seed``).
    ``labeled_fraction`` < 1 keeps a seeded, nested subset of the training entries. Every listed file must exist.
    """
    path = _manifest_path(cfg)
    root = resolve_path(cfg.data_root) if cfg.data_root else path.parent
    manifest = load_manifest(path)
    if "training" not in manifest:
        raise KeyError(f"{path}: no 'training' list; lists: {[k for k, v in manifest.items() if isinstance(v, list)]}")
    if cfg.val_fold is not None or (cfg.val_interval > 0 and "validation" not in manifest):
        if any("fold" not in e for e in manifest["training"]):
            print(f"{path}: no 'fold' keys; assigning 5 deterministic folds (seed 0) to its {len(manifest['training'])}"
                  " training entries")
            manifest = {**manifest, "training": assign_folds(manifest["training"], n_folds=5, seed=0)}
        fold = 0 if cfg.val_fold is None else cfg.val_fold
        try:
            train_raw, val_raw = split_fold(manifest, fold)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        train = resolve_entries({"training": train_raw}, root, "training")
        val = resolve_entries({"validation": val_raw}, root, "validation")
    else:
        train = resolve_entries(manifest, root, "training")
        val = resolve_entries(manifest, root, "validation") if "validation" in manifest else []
    if not 0 < cfg.labeled_fraction <= 1:
        raise ValueError(f"labeled_fraction={cfg.labeled_fraction} is not in (0, 1]")
    if cfg.labeled_fraction < 1:
        train = labeled_fraction_subsets(train, (cfg.labeled_fraction,), seed=cfg.seed)[cfg.labeled_fraction]
    listed = []
    for e in train + val:
        for k in ("image", "label"):
            if k not in e:
                raise KeyError(f"{path}: an entry has no {k!r}: {e}")
            listed += e[k] if isinstance(e[k], list) else [e[k]]
    missing = [p for p in listed if not Path(p).is_file()]
    if missing:  # all of them at once, with the advice that fits (cases missing, or the wrong data root)
        raise FileNotFoundError(f"{path}: {missing_files_problem(missing, len(listed), root, bool(cfg.data_root))}")
    def pair(e: dict[str, Any]) -> dict[str, Any]:
        return {"image": e["image"], "label": e["label"]}

    return [pair(e) for e in train], [pair(e) for e in val]


def dice_step_fn(loss: torch.nn.Module | None = None):
    """``step_fn`` for :func:`fit`: DiceCE (Sec. 4.1) between logits (B, K, D, H, W) and labels (B, 1, D, H, W)."""
    loss = loss or DiceCELoss(to_onehot_y=True, softmax=True)

    def step(model: torch.nn.Module, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        x, y = batch["image"].to(device), batch["label"].to(device)
        return {"loss": loss(model(x), y)}
    return step


def make_val_fn(cases: list[dict], preset: TaskPreset, cfg: FinetuneConfig):
    """``val_fn`` for :func:`fit`: mean Dice (over classes, then cases) on the preprocessed grid."""
    names = [preset.labels[i] for i in sorted(preset.labels) if i != 0]

    def val(model: torch.nn.Module, step: int) -> dict[str, float]:
        device = next(model.parameters()).device
        rows = []
        for case in cases:
            logits = sliding_window_predict(model, case["image"][None].as_tensor(), preset.roi_size,
                                            sw_batch_size=cfg.sw_batch_size, overlap=cfg.overlap, device=device)
            pred = logits.argmax(1, keepdim=True).cpu()
            rows.append(dice_scores(pred, case["label"][None].as_tensor().long(), preset.out_channels)[0])
        per_class = np.nanmean(np.stack(rows), axis=0) if rows else np.full(len(names), np.nan)
        out = {"mean_dice": float(np.nanmean(per_class))}
        out.update({f"dice_{n.replace(' ', '_')}": float(v) for n, v in zip(names, per_class, strict=True)})
        return out
    return val


def _meta(cfg: FinetuneConfig, preset: TaskPreset, report: LoadReport | None, n_train: int) -> dict[str, Any]:
    return {"task": preset.name, "in_channels": preset.in_channels, "out_channels": preset.out_channels,
            "roi_size": list(preset.roi_size), "spacing": None if preset.spacing is None else list(preset.spacing),
            "intensity": preset.intensity, "feature_size": cfg.feature_size, "preset": preset.to_dict(),
            "init": cfg.init, "pretrained": cfg.pretrained or None, "n_train": n_train,
            "labeled_fraction": cfg.labeled_fraction,
            "load_report": None if report is None else dataclasses.asdict(report), "config": cfg.to_dict()}


def _run_settings(cfg: FinetuneConfig, preset: TaskPreset, pretrained: Path | None) -> dict[str, Any]:
    """What defines a fine-tuning run beyond its TrainConfig (task, data, model, crops): a resume with any of
    these changed is refused (:func:`swinunetr_lib.train.loop.fit`'s ``run_settings``)."""
    return {"task": preset.name, "data_manifest": str(resolve_path(cfg.data_manifest)),
            "data_root": str(resolve_path(cfg.data_root)) if cfg.data_root else "", "val_fold": cfg.val_fold,
            "labeled_fraction": cfg.labeled_fraction, "init": cfg.init,
            "pretrained": None if pretrained is None else str(pretrained), "feature_size": cfg.feature_size,
            "in_channels": preset.in_channels, "out_channels": preset.out_channels,
            "roi_size": list(preset.roi_size), "spacing": None if preset.spacing is None else list(preset.spacing),
            "num_samples": preset.num_samples, "batch_size": cfg.batch_size}


def finetune(cfg: FinetuneConfig, *, stop_after: int | None = None) -> FinetuneResult:
    """Fine-tune on ``cfg.data_manifest``; returns the best validation mean Dice and where the model is.

    The run folder is locked for the whole call (a second run there is refused, see
    :func:`~swinunetr_lib.utils.run_lock.run_dir_lock`); every case is checked as it is loaded
    (``preprocess_cases``)."""
    with contextlib.ExitStack() as stack:
        return _finetune(cfg, stop_after, stack)


def _finetune(cfg: FinetuneConfig, stop_after: int | None, stack: contextlib.ExitStack) -> FinetuneResult:
    tic = time.perf_counter()
    for name in ("max_steps", "batch_size"):  # cheap checks first: nothing is written before they pass
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}={getattr(cfg, name)} must be >= 1")
    cfg.train_config().check()  # log_every, lr, ... before any data is read
    check_window_options(cfg.sw_batch_size, cfg.overlap)
    resolve_device(cfg.device)
    init, pretrained = resolve_init(cfg.init, cfg.pretrained)
    encoder = None if pretrained is None else read_encoder_checkpoint(pretrained)  # read once: size, then weights
    if encoder is not None and (size := encoder_feature_size(encoder)) not in (None, cfg.feature_size):
        # the model must be the size of the encoder it starts from (notebook 02's demo encoder is feature size 12)
        print(feature_size_warning(pretrained, size, cfg.feature_size))
        cfg = dataclasses.replace(cfg, feature_size=size)
    cfg = resolve_task(cfg)
    preset = resolve_preset(cfg)
    run_dir = resolve_path(cfg.run_dir) if cfg.run_dir else runs_dir() / "finetune" / preset.name
    stack.enter_context(run_dir_lock(run_dir))  # before anything is read or written for this run
    refuse_paths_outside_root(_manifest_path(cfg), resolve_path(cfg.data_root) if cfg.data_root else None)
    train_entries, val_entries = split_entries(cfg)
    if cfg.val_interval <= 0:
        val_entries = []
    elif cfg.val_max_cases > 0:
        val_entries = val_entries[: cfg.val_max_cases]
    if cfg.val_interval > 0 and not val_entries:
        raise ValueError(f"{cfg.data_manifest}: empty 'validation' list but val_interval={cfg.val_interval}")

    seed_everything(cfg.seed)
    model, report = build_finetune_model(preset.in_channels, preset.out_channels, feature_size=cfg.feature_size,
                                         pretrained=encoder, allow_partial=cfg.allow_partial,
                                         source=None if pretrained is None else str(pretrained))
    encoder = None  # the checkpoint's tensors are in the model now: free them before training
    if cfg.sdpa_attention:
        use_sdpa_window_attention(model)
    if report is not None:
        print(report.summary())
    train_cases = preprocess_cases(train_entries, preset, with_indices=True)
    val_cases = preprocess_cases(val_entries, preset)
    for case, e in zip(train_cases + val_cases, train_entries + val_entries, strict=True):
        if case["image"].shape[0] != preset.in_channels:
            raise ValueError(f"{e['image']}: {case['image'].shape[0]} channel(s), task {preset.name} expects "
                             f"{preset.in_channels} ({', '.join(preset.channel_names)})")
    loader = torch.utils.data.DataLoader(AugmentedCases(train_cases, preset), batch_size=cfg.batch_size,
                                         shuffle=True, num_workers=0, collate_fn=list_data_collate)
    val_fn = make_val_fn(val_cases, preset, cfg) if cfg.val_interval > 0 else None
    meta = _meta(cfg, preset, report, len(train_entries))  # written once the inputs have been read
    meta.update(init=init, pretrained=None if pretrained is None else str(pretrained))
    atomic_write_text(json.dumps(meta, indent=2), run_dir / META_FILE)
    result = fit(model, dice_step_fn(), loader, cfg.train_config(), run_dir, device=cfg.device, val_fn=val_fn,
                 stop_after=stop_after, run_settings=_run_settings(cfg, preset, pretrained))

    source = result.best_checkpoint or result.last_checkpoint
    state = safe_torch_load(source)
    model_path = atomic_torch_save({"state_dict": state["model"], "finetune": meta,
                                    "best_mean_dice": result.best_value, "step": state["step"]},
                                   run_dir / MODEL_FILE)
    return FinetuneResult(run_dir, model_path, result.best_value, result, report,
                          time.perf_counter() - tic, len(train_entries), len(val_entries))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swinunetr_lib.finetune", description=__doc__.split("\n\n")[0])
    FinetuneConfig.add_arguments(parser)
    args = absolute_from_cwd(parser.parse_args(argv), "data_manifest", "data_root", "run_dir", "pretrained")

    def body() -> int:
        res = finetune(FinetuneConfig.from_args(args))
        print(f"best validation mean Dice {res.best_mean_dice} after {res.fit.step} steps "
              f"({res.seconds:.0f} s); model: {res.model_path}")
        return 0

    return run_cli("python -m swinunetr_lib.finetune", body)


if __name__ == "__main__":
    sys.exit(main())
