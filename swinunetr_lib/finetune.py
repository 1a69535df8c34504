"""Supervised fine-tuning of Swin UNETR on a labeled segmentation task (Tang et al. 2022, Sec. 4.1).

``finetune(cfg)`` = task preset + decathlon manifest + :func:`swinunetr_lib.train.fit` (the one loop):
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
import copy
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from monai import transforms as T
from monai.data import list_data_collate
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss

from .config import Config
from .evaluate import dice_scores
from .finetune_model import LoadReport, build_finetune_model
from .paths import resolve_path, runs_dir
from .task_presets import TaskPreset, augment_transforms, get_preset, preprocess_transforms
from .train import FitResult, TrainConfig, fit
from .utils import atomic_torch_save, atomic_write_text, error_message, resolve_device, run_cli, seed_everything
from .window_attention import use_sdpa_window_attention

META_FILE = "finetune_meta.json"
MODEL_FILE = "model.pt"


@dataclass
class FinetuneConfig(Config):
    task: str = "btcv"                    # preset name: btcv, Task01_BrainTumour..Task10_Colon, demo_btcv, demo_ct, demo_mr
    data_manifest: str = ""               # decathlon JSON with "training" and "validation" lists (relative paths)
    data_root: str = ""                   # folder the manifest's paths are relative to; "" = the manifest's folder
    val_fold: int | None = None           # validate on this "fold" of the training list (None: the manifest's
                                          # "validation" list, or fold 0 when it has none)
    run_dir: str = ""                     # "" = runs_dir()/finetune/<task>
    init: str = "scratch"                 # scratch | ssl | official | auto (ssl if our export exists, else scratch)
    pretrained: str = ""                  # encoder checkpoint; "" with init=ssl: runs_dir()/ssl_pretraining/model_swinvit.pt
    allow_partial: bool = False           # accept a pretrained checkpoint that does not fill every encoder tensor
    feature_size: int = 48                # paper Sec. 4.1
    roi_size: int | list[int] | None = None  # None = the preset's (BTCV 96^3); an int is a cube
    spacing: list[float] | None = None    # None = the preset's target spacing; [] = keep each image's grid
    num_samples: int | None = None        # crops per volume; None = the preset's
    labeled_fraction: float = 1.0         # fraction of the training list used (nested subsets, seeded)
    batch_size: int = 1                   # volumes per step (each gives num_samples crops)
    max_steps: int = 30000
    lr: float = 1e-4                      # official BTCV fine-tuning: AdamW 1e-4, weight decay 1e-5
    weight_decay: float = 1e-5
    warmup_steps: int = 500
    grad_clip: float = 1.0
    precision: str = "auto"
    grad_checkpoint: bool = False
    compile: bool = False
    sdpa_attention: bool = False          # fused scaled_dot_product_attention for window attention (same weights)
    val_interval: int = 500               # steps between validations (sliding window on the val list)
    val_max_cases: int = 0                # 0 = all validation cases
    sw_batch_size: int = 4                # windows per forward pass in sliding-window inference
    overlap: float = 0.5                  # paper: 0.5 overlap, Gaussian blending
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    resume: bool = True
    deterministic: bool = False           # torch deterministic algorithms: bitwise-exact resume on CPU (see fit)
    device: str = "auto"
    progress: bool = True


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


SSL_EXPORT = Path("ssl_pretraining") / "model_swinvit.pt"  # under runs_dir(), written by notebook 02


def resolve_init(init: str, pretrained: str = "") -> tuple[str, Path | None]:
    """``(kind, checkpoint)`` for an initialisation name (Sec. 4.2: scratch vs. self-supervised).

    ``scratch``; ``ssl`` (our SSL run: ``pretrained`` or ``runs_dir()/ssl_pretraining/model_swinvit.pt``);
    ``official`` (the released ``model_swinvit.pt``, path in ``pretrained``); ``auto``: ``ssl`` when our
    export exists, else ``scratch``.
    """
    default = runs_dir() / SSL_EXPORT
    if init == "auto":
        init = "ssl" if (pretrained and resolve_path(pretrained).is_file()) or default.is_file() else "scratch"
    if init == "scratch":
        return "scratch", None
    if init not in ("ssl", "official"):
        raise ValueError(f"init={init!r}: expected scratch, ssl, official or auto")
    if init == "official" and not pretrained:
        raise ValueError("init='official' needs `pretrained` = path of the downloaded model_swinvit.pt")
    path = resolve_path(pretrained) if pretrained else default
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained encoder for init={init!r} not found"
                                + ("; run notebook 02_ssl_pretraining first" if not pretrained else ""))
    return init, path


def resolve_preset(cfg: FinetuneConfig) -> TaskPreset:
    """The task preset with this run's ROI, crops per volume and spacing; bad values raise ValueError."""
    roi = [cfg.roi_size] * 3 if isinstance(cfg.roi_size, int) else cfg.roi_size
    if roi is not None and (len(roi) != 3 or any(r <= 0 or r % 32 for r in roi)):
        raise ValueError(f"roi_size={cfg.roi_size}: need 3 positive multiples of 32 (Swin UNETR downsamples 5 times)")
    if cfg.spacing and (len(cfg.spacing) != 3 or any(s <= 0 for s in cfg.spacing)):
        raise ValueError(f"spacing={cfg.spacing}: need 3 positive voxel sizes in mm (or [] for the native grid)")
    if cfg.num_samples is not None and cfg.num_samples < 1:
        raise ValueError(f"num_samples={cfg.num_samples} must be >= 1")
    overrides: dict[str, Any] = {"roi_size": roi, "num_samples": cfg.num_samples, "spacing": cfg.spacing}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides.get("spacing") == []:
        overrides["spacing"] = None
    preset = get_preset(cfg.task, **overrides)
    if preset.rot90_prob > 0 and preset.roi_size[0] != preset.roi_size[1]:
        print(f"roi_size {list(preset.roi_size)} is not square in the axial plane: {preset.name}'s 90-degree "
              "turns are left out (they would change the crop's shape)")
        preset = preset.with_overrides(rot90_prob=0.0)
    return preset


def split_entries(cfg: FinetuneConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training, validation) entries of ``cfg.data_manifest`` with absolute ``image``/``label`` paths.

    Validation is the manifest's ``validation`` list; with ``val_fold`` set, or when there is no such list,
    it is that fold (default 0) of the ``fold`` keys of ``training`` (as ``build-manifest`` writes them), and
    a manifest with neither (e.g. an official MSD ``dataset.json``) gets 5 deterministic folds
    (:func:`~swinunetr_lib.data.manifest.assign_folds`, seed 0, independent of ``cfg.seed``).
    ``labeled_fraction`` < 1 keeps a seeded, nested subset of the training entries. Every listed file must exist.
    """
    from .data.manifest import assign_folds, labeled_fraction_subsets, load_manifest, resolve_entries, split_fold

    if not cfg.data_manifest:
        raise ValueError("data_manifest is required: a decathlon JSON with 'training' and 'validation' lists")
    path = resolve_path(cfg.data_manifest)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: data manifest not found")
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
    for e in train + val:
        for k in ("image", "label"):
            if k not in e:
                raise KeyError(f"{path}: an entry has no {k!r}: {e}")
            paths = e[k] if isinstance(e[k], list) else [e[k]]
            for p in paths:
                if not Path(p).is_file():
                    raise FileNotFoundError(f"{p}: listed in {path} ({k}) but not found")
    def pair(e: dict[str, Any]) -> dict[str, Any]:
        return {"image": e["image"], "label": e["label"]}

    return [pair(e) for e in train], [pair(e) for e in val]


def preprocess_cases(entries: Sequence[dict[str, Any]], preset: TaskPreset, *, with_indices: bool = False) -> list[dict]:
    """Run the deterministic pipeline once per case (the cache); optionally add foreground/background
    voxel indices so that each random crop does not rescan the label. The indices are flat positions, so
    they are taken after padding to the ROI, on the array the crops are cut from (the training pipeline's
    own padding is then a no-op)."""
    steps: list[Any] = [preprocess_transforms(preset)]
    if with_indices:
        steps += [T.SpatialPadd(keys=["image", "label"], spatial_size=preset.roi_size),
                  T.FgBgToIndicesd(keys="label", image_key="image",
                                   image_threshold=0.0 if preset.intensity == "ct_window" else -1e9)]
    pipeline = T.Compose(steps)
    out = []
    for e in entries:
        try:
            out.append(pipeline(dict(e)))
        except Exception as err:  # noqa: BLE001 - name the case that broke
            raise ValueError(f"{e['image']}: preprocessing failed ({error_message(err)})") from err
    return out


class AugmentedCases(torch.utils.data.Dataset):
    """Cached preprocessed cases + random augmentation whose seed comes from the global NumPy RNG.

    ``fit`` re-seeds the global RNGs before each batch, so batch ``k`` is the same on a resumed run.
    Each item is a list of ``num_samples`` crops {"image": (C, *roi), "label": (1, *roi)}.
    """

    def __init__(self, cases: list[dict], preset: TaskPreset) -> None:
        self.cases = cases
        self.augment = augment_transforms(preset)
        # use the cached indices instead of scanning the label for every crop
        for t in self.augment.transforms:
            if isinstance(t, T.RandCropByPosNegLabeld) and "label_fg_indices" in cases[0]:
                t.fg_indices_key, t.bg_indices_key = "label_fg_indices", "label_bg_indices"

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> list[dict]:
        self.augment.set_random_state(seed=int(np.random.randint(0, 2**31 - 1)))
        case = self.cases[i]
        item = {k: (v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)) for k, v in case.items()}
        crops = self.augment(item)
        return [{"image": c["image"], "label": c["label"]} for c in crops]


def dice_step_fn(loss: torch.nn.Module | None = None):
    """``step_fn`` for :func:`fit`: DiceCE (Sec. 4.1) between logits (B, K, D, H, W) and labels (B, 1, D, H, W)."""
    loss = loss or DiceCELoss(to_onehot_y=True, softmax=True)

    def step(model: torch.nn.Module, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        x, y = batch["image"].to(device), batch["label"].to(device)
        return {"loss": loss(model(x), y)}
    return step


@torch.no_grad()
def sliding_window_predict(model: torch.nn.Module, image: torch.Tensor, roi_size: Sequence[int], *,
                           sw_batch_size: int = 4, overlap: float = 0.5, device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits (B, K, D, H, W) for image (B, C, D, H, W) by sliding-window inference with Gaussian blending."""
    device = resolve_device(device)
    model.eval()
    x = torch.as_tensor(image).to(device)
    return sliding_window_inference(x, roi_size, sw_batch_size, model, overlap=overlap, mode="gaussian")


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
        out.update({f"dice_{n.replace(' ', '_')}": float(v) for n, v in zip(names, per_class)})
        return out
    return val


def _meta(cfg: FinetuneConfig, preset: TaskPreset, report: LoadReport | None, n_train: int) -> dict[str, Any]:
    return {"task": preset.name, "in_channels": preset.in_channels, "out_channels": preset.out_channels,
            "roi_size": list(preset.roi_size), "spacing": None if preset.spacing is None else list(preset.spacing),
            "intensity": preset.intensity, "feature_size": cfg.feature_size, "preset": preset.to_dict(),
            "init": cfg.init, "pretrained": cfg.pretrained or None, "n_train": n_train,
            "labeled_fraction": cfg.labeled_fraction,
            "load_report": None if report is None else dataclasses.asdict(report), "config": cfg.to_dict()}


def finetune(cfg: FinetuneConfig, *, stop_after: int | None = None) -> FinetuneResult:
    """Fine-tune on ``cfg.data_manifest``; returns the best validation mean Dice and where the model is."""
    tic = time.perf_counter()
    for name in ("max_steps", "batch_size"):  # cheap checks first: nothing is written before they pass
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}={getattr(cfg, name)} must be >= 1")
    resolve_device(cfg.device)
    init, pretrained = resolve_init(cfg.init, cfg.pretrained)
    preset = resolve_preset(cfg)
    run_dir = resolve_path(cfg.run_dir) if cfg.run_dir else runs_dir() / "finetune" / preset.name
    train_entries, val_entries = split_entries(cfg)
    if cfg.val_interval <= 0:
        val_entries = []
    elif cfg.val_max_cases > 0:
        val_entries = val_entries[: cfg.val_max_cases]
    if cfg.val_interval > 0 and not val_entries:
        raise ValueError(f"{cfg.data_manifest}: empty 'validation' list but val_interval={cfg.val_interval}")

    seed_everything(cfg.seed)
    model, report = build_finetune_model(preset.in_channels, preset.out_channels, feature_size=cfg.feature_size,
                                         pretrained=pretrained, allow_partial=cfg.allow_partial)
    if cfg.sdpa_attention:
        use_sdpa_window_attention(model)
    if report is not None:
        print(report.summary())
    train_cases = preprocess_cases(train_entries, preset, with_indices=True)
    val_cases = preprocess_cases(val_entries, preset)
    for case, e in zip(train_cases + val_cases, train_entries + val_entries):
        if case["image"].shape[0] != preset.in_channels:
            raise ValueError(f"{e['image']}: {case['image'].shape[0]} channel(s), task {preset.name} expects "
                             f"{preset.in_channels} ({', '.join(preset.channel_names)})")
    loader = torch.utils.data.DataLoader(AugmentedCases(train_cases, preset), batch_size=cfg.batch_size,
                                         shuffle=True, num_workers=0, collate_fn=list_data_collate)
    tcfg = TrainConfig(max_steps=cfg.max_steps, lr=cfg.lr, weight_decay=cfg.weight_decay,
                       warmup_steps=cfg.warmup_steps, grad_clip=cfg.grad_clip, precision=cfg.precision,
                       grad_checkpoint=cfg.grad_checkpoint, compile=cfg.compile,
                       checkpoint_every=cfg.checkpoint_every, val_interval=cfg.val_interval,
                       log_every=cfg.log_every, seed=cfg.seed, resume=cfg.resume,
                       best_metric="mean_dice" if cfg.val_interval > 0 else "", progress=cfg.progress)
    val_fn = make_val_fn(val_cases, preset, cfg) if cfg.val_interval > 0 else None
    meta = _meta(cfg, preset, report, len(train_entries))  # written once the inputs have been read
    meta.update(init=init, pretrained=None if pretrained is None else str(pretrained))
    atomic_write_text(json.dumps(meta, indent=2), run_dir / META_FILE)
    previous = torch.are_deterministic_algorithms_enabled()
    # the relative-position-bias gradient (an indexed accumulate) is summed in a thread-dependent order
    # on CPU unless deterministic algorithms are on: ulp differences that Adam amplifies
    torch.use_deterministic_algorithms(cfg.deterministic or previous, warn_only=True)
    try:
        result = fit(model, dice_step_fn(), loader, tcfg, run_dir, device=cfg.device, val_fn=val_fn,
                     stop_after=stop_after)
    finally:
        torch.use_deterministic_algorithms(previous)

    source = result.best_checkpoint or result.last_checkpoint
    state = torch.load(source, map_location="cpu", weights_only=False)
    model_path = atomic_torch_save({"state_dict": state["model"], "finetune": meta,
                                    "best_mean_dice": result.best_value, "step": state["step"]},
                                   run_dir / MODEL_FILE)
    return FinetuneResult(run_dir, model_path, result.best_value, result, report,
                          time.perf_counter() - tic, len(train_entries), len(val_entries))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swinunetr_lib.finetune", description=__doc__.split("\n\n")[0])
    FinetuneConfig.add_arguments(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        res = finetune(FinetuneConfig.from_args(args))
        print(f"best validation mean Dice {res.best_mean_dice} after {res.fit.step} steps "
              f"({res.seconds:.0f} s); model: {res.model_path}")
        return 0

    return run_cli("python -m swinunetr_lib.finetune", body)


if __name__ == "__main__":
    sys.exit(main())
