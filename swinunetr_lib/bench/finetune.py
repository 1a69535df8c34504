"""``python -m swinunetr_lib.bench finetune``: fine-tuning step throughput at the paper's size.

A step is what :func:`swinunetr_lib.finetune.run.finetune` runs through ``fit``: a batch of crops (B, 1, R, R, R)
and labels of ``out_channels`` classes copied to the device, MONAI's ``SwinUNETR``
(:func:`~swinunetr_lib.models.swin_unetr.build_finetune_model`), DiceCE
(:func:`~swinunetr_lib.finetune.run.dice_step_fn`), backward, gradient clipping and AdamW
(:func:`~swinunetr_lib.train.loop.make_adamw`). Crops and labels are random. The fine-tuning augmentation runs on the
CPU in DataLoader workers (:class:`~swinunetr_lib.finetune.run.AugmentedCases`: label-balanced crops, flips, 90-degree
turns, intensity); it is timed on one synthetic case of ``volume_size`` in this process and reported as the number of
workers needed to keep up with the step (``loader_workers_needed``), not added to the step.
CPU smoke: ``python -m swinunetr_lib.bench finetune --roi-size 64 --feature-size 12 --batch-size 1 --steps 1
--warmup 0 --volume-size 64,64,64``.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai import transforms as T
from monai.data import MetaTensor

from ..finetune.run import AugmentedCases, dice_step_fn
from ..finetune.task_presets import get_preset
from ..models.swin_unetr import build_finetune_model
from ..train.loop import resolve_precision
from .common import (
    BenchBase,
    Phases,
    bench_device,
    check_common,
    check_swinunetr_roi,
    finish,
    header,
    host_tensor,
    plain_options,
    prepare,
    run_variants,
    to_device,
    train_timing,
    variants,
)


@dataclass
class FinetuneBenchConfig(BenchBase):
    """``bench finetune``."""
    roi_size: int = 96            # cubic crop side in voxels (paper: 96)
    batch_size: int = 4           # crops per step (BTCV recipe: 1 volume x 4 crops)
    out_channels: int = 14        # classes incl. background (BTCV: 14)
    grad_checkpoint: bool = False  # ours: MONAI use_checkpoint
    baseline_precision: str = "same"  # monai_eager's precision: same (as ours) | fp32 | bf16 | fp16
    volume_size: list[int] = field(default_factory=lambda: [320, 320, 192])  # case for the loader augmentation
    loader_repeats: int = 2       # timed batches of the CPU augmentation (0: skip it)


def synthetic_case(size: list[int], classes: int, roi: int, seed: int) -> dict[str, Any]:
    """A preprocessed-looking case: image (1, X, Y, Z) in [0, 1], labels 1..classes-1 in a central box
    (a third of each axis), background elsewhere, padded to the ROI, with the foreground / background
    indices that :func:`~swinunetr_lib.finetune.run.preprocess_cases` caches (``with_indices=True``)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, *size, generator=g)
    label = torch.zeros(1, *size)
    box = tuple(slice(s // 3, s - s // 3) for s in size)
    label[(0, *box)] = torch.randint(1, classes, label[(0, *box)].shape, generator=g).float()
    case = {"image": MetaTensor(image), "label": MetaTensor(label)}
    case = T.SpatialPadd(keys=["image", "label"], spatial_size=(roi,) * 3)(case)
    return T.FgBgToIndicesd(keys="label", image_key="image", image_threshold=0.0)(case)


def loader_augment_s(cfg: FinetuneBenchConfig) -> float:
    """Seconds for one CPU process to produce one batch (``batch_size`` crops of one case) through
    :class:`~swinunetr_lib.finetune.run.AugmentedCases` with the BTCV preset at this ROI."""
    preset = get_preset("btcv").with_overrides(roi_size=(cfg.roi_size,) * 3, num_samples=cfg.batch_size)
    data = AugmentedCases([synthetic_case(cfg.volume_size, cfg.out_channels, cfg.roi_size, cfg.seed)], preset)
    np.random.seed(cfg.seed)
    data[0]
    t = time.perf_counter()
    for _ in range(cfg.loader_repeats):
        data[0]
    return (time.perf_counter() - t) / cfg.loader_repeats


def bench_finetune(cfg: FinetuneBenchConfig, emit: Callable[[dict[str, Any]], None] = lambda r: None) -> dict[str, Any]:
    """Run the fine-tuning benchmark (see the module docstring); ``emit(result)`` after every variant."""
    check_common(cfg)
    if cfg.out_channels < 2 or len(cfg.volume_size) != 3 or min(cfg.volume_size) < 1:
        raise ValueError(f"out_channels={cfg.out_channels} must be >= 2 and volume_size={cfg.volume_size} "
                         "three positive sizes")
    check_swinunetr_roi(cfg)
    device = bench_device(cfg)
    ours = {"precision": resolve_precision(cfg.precision, device), "sdpa_attention": cfg.sdpa_attention,
            "channels_last": cfg.channels_last, "grad_checkpoint": cfg.grad_checkpoint, "compile": cfg.compile}
    base = plain_options(ours)
    if cfg.baseline_precision != "same":
        base["precision"] = resolve_precision(cfg.baseline_precision, device)
    gen = torch.Generator().manual_seed(cfg.seed)
    shape = (cfg.batch_size, 1, *(cfg.roi_size,) * 3)
    image_host = host_tensor(torch.rand(shape, generator=gen), device)
    label_host = host_tensor(torch.randint(0, cfg.out_channels, shape, generator=gen).float(), device)
    result = header("finetune", cfg, device, ours["precision"])
    step = dice_step_fn()

    def measure(opts: dict[str, Any]) -> dict[str, Any]:
        torch.manual_seed(cfg.seed)
        model, _ = build_finetune_model(1, cfg.out_channels, feature_size=cfg.feature_size)
        net = prepare(model, opts, cfg, device)
        phases = Phases(device)

        def step_fn() -> torch.Tensor:
            with phases("data"):
                batch = {"image": to_device(image_host, device, opts["channels_last"]),
                         "label": to_device(label_host, device, opts["channels_last"])}
            return step(net, batch, device)["loss"]
        run = train_timing(model, opts, device, phases, step_fn, cfg.steps, cfg.warmup)
        return {**run, "volumes_per_s": cfg.batch_size / run["step_s"]}

    at_size = device.type == "cuda" and (cfg.roi_size, cfg.feature_size, cfg.batch_size) == (96, 48, 4)
    run_variants(result, variants(ours, base, cfg), device, measure, emit, "step_s",
                 lambda r: finish(r, "step_s", "volumes_per_s", cfg.batch_size, at_size), cfg.budget_s)
    if result["headline"]:
        result["final_loss"] = result["runs"]["ours"]["final_loss"]
    if cfg.loader_repeats > 0 and result["headline"]:  # augmentation: on the CPU, in parallel with the step
        aug = loader_augment_s(cfg)
        result.update({"loader_augment_s": aug, "loader_workers_needed": math.ceil(aug / result["step_s"])})
    result["complete"] = True
    emit(result)
    return result
