"""``python -m swinunetr_lib.bench infer``: sliding-window inference time per CT volume, and its accuracy.

One volume is what :func:`swinunetr_lib.finetune.run.sliding_window_predict` does for validation and for
``python -m swinunetr_lib.infer`` (Sec. 4.1: ROI windows, overlap 0.5, Gaussian blending) plus the
copies around it: the volume (1, 1, X, Y, Z) from pinned host memory to the device, the logits' argmax,
the uint8 label map back to the host. The volume is a smooth synthetic field in [0, 1] (intensities
after the CT window) of ``volume_size``; its labels are ``out_channels`` bands of that field. The model is
MONAI's ``SwinUNETR``, seeded, then fitted for ``fit_steps`` DiceCE steps on random ROI crops of that volume
(or loaded from ``checkpoint``): with random weights the logits of all classes are nearly tied and the label
map is noise, so bf16 rounding flips labels everywhere (CPU, 64^3 ROI, feature 12: Dice 0.947 against fp32),
which says nothing about a trained network.

``monai_eager`` is the plain model in fp32, eager, ``sw_batch_size`` 4 (the project's default); ``monai_flash`` the same
with MONAI's own inference attention (``use_flash_attention=True``: ``scaled_dot_product_attention`` when gradients
are off), a second baseline; ``ours`` uses
``--precision`` (default: bf16 on a GPU), ``--sw-batch-size``, ``--sdpa-attention``, ``--channels-last`` and
``--compile``. The accuracy tolerance is the Dice between each variant's label map and the fp32 one
(per class over the classes present in either, then mean; also the worst class and the voxel agreement).
The split of a volume: data (both copies), model (the network's calls) and window_blending (the rest:
gathering windows, Gaussian weighting, accumulation, argmax). The goal counts only after a trained fit (a checkpoint,
or a fit whose last loss is finite and below its first): untrained weights make the Dice tolerance meaningless.
CPU smoke: ``python -m swinunetr_lib.bench infer --roi-size 64 --feature-size 12 --volume-size 96,64,64
--steps 1 --warmup 0 --fit-steps 0``.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..finetune.run import dice_step_fn, sliding_window_predict
from ..models.swin_unetr import build_swinunetr
from ..train.loop import make_adamw, resolve_precision
from ..utils.files import safe_torch_load
from .common import (
    BenchBase,
    Phases,
    TimedModule,
    bench_device,
    check_common,
    check_swinunetr_roi,
    finish,
    header,
    host_tensor,
    plain_options,
    prepare,
    run_variants,
    step_stats,
    sync,
    variants,
)

BASELINE_SW_BATCH = 4  # the project's (and MONAI's tutorials') sliding-window batch


@dataclass
class InferBenchConfig(BenchBase):
    """``bench infer``."""
    roi_size: int = 96            # cubic window side in voxels (paper: 96)
    volume_size: list[int] = field(default_factory=lambda: [320, 320, 192])  # CT volume (X, Y, Z) in voxels
    sw_batch_size: int = 4        # ours: windows per network call
    overlap: float = 0.5          # window overlap (paper: 0.5)
    out_channels: int = 14        # classes incl. background (BTCV: 14)
    steps: int = 3                # timed volumes
    warmup: int = 1               # untimed volumes first
    fit_steps: int = 300          # DiceCE steps on crops of the synthetic volume before timing (0: random weights)
    fit_lr: float = 1e-3          # AdamW learning rate of those steps
    checkpoint: str = ""          # instead: a fine-tuned model.pt ({"state_dict": ...}) of this feature / class count


def synthetic_volume(size: list[int], classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 1, X, Y, Z) smooth random field in [0, 1] plus a little noise, and its labels (1, 1, X, Y, Z):
    ``classes`` equal bands of the noise-free field (a task a few hundred steps can learn)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, *(max(2, s // 16) for s in size), generator=g)
    smooth = F.interpolate(coarse, size=tuple(size), mode="trilinear", align_corners=False)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min()).clamp_min(1e-6)
    label = (smooth * classes).long().clamp_(max=classes - 1)
    return (smooth + 0.02 * torch.randn(1, 1, *size, generator=g)).clamp_(0, 1), label


def fitted_state(cfg: InferBenchConfig, volume: torch.Tensor, label: torch.Tensor, device: torch.device,
                 dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], float | None, float | None]:
    """Weights every variant starts from: ``checkpoint``'s, or seeded and fitted for ``fit_steps`` steps
    (batches of 2 random ROI crops, DiceCE, AdamW, autocast ``dtype``). Returns (CPU state dict, first loss,
    last loss); the losses are None without a fit."""
    torch.manual_seed(cfg.seed)
    model = build_swinunetr(1, cfg.out_channels, feature_size=cfg.feature_size)
    if cfg.checkpoint:
        obj = safe_torch_load(cfg.checkpoint)  # tensors and plain values only: never runs code from the file
        model.load_state_dict(obj.get("state_dict", obj) if isinstance(obj, dict) else obj)
        return model.state_dict(), None, None
    if cfg.fit_steps == 0:
        return model.state_dict(), None, None
    model.to(device).train()
    if device.type != "cuda":  # CPU bf16 Conv3d weight gradients can be wrong (see train/cpu_bf16.py): fit in fp32
        dtype = torch.float32
    opt = make_adamw(model.parameters(), cfg.fit_lr, 1e-5, device)
    step, g, r = dice_step_fn(), torch.Generator().manual_seed(cfg.seed), cfg.roi_size
    v, y = volume.to(device), label.to(device)
    first = None
    for _ in range(cfg.fit_steps):
        corners = [[int(torch.randint(0, s - r + 1, (), generator=g)) for s in cfg.volume_size] for _ in range(2)]
        crop = [(slice(None), slice(None), *(slice(c, c + r) for c in cs)) for cs in corners]
        batch = {"image": torch.cat([v[c] for c in crop]), "label": torch.cat([y[c] for c in crop])}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = step(model, batch, device)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
    return {k: t.detach().cpu() for k, t in model.state_dict().items()}, first, float(loss.detach())


def label_agreement(a: torch.Tensor, b: torch.Tensor, classes: int) -> dict[str, float]:
    """Dice per class between label maps ``a`` and ``b`` over the classes present in either; mean, worst
    class, and the fraction of voxels with the same label. Identical maps give 1.0 everywhere."""
    pair = a.reshape(-1).long() * classes + b.reshape(-1).long()
    conf = torch.bincount(pair, minlength=classes * classes).reshape(classes, classes).double()
    inter, size = conf.diagonal(), conf.sum(0) + conf.sum(1)
    dice = 2 * inter[size > 0] / size[size > 0]
    return {"dice": float(dice.mean()), "dice_min_class": float(dice.min()),
            "voxel_agreement": float(inter.sum() / conf.sum()), "classes_present": int((size > 0).sum())}


def bench_infer(cfg: InferBenchConfig, emit: Callable[[dict[str, Any]], None] = lambda r: None) -> dict[str, Any]:
    """Run the inference benchmark (see the module docstring); ``emit(result)`` after every variant."""
    check_common(cfg)
    if not 0 <= cfg.overlap < 1 or len(cfg.volume_size) != 3 or min(cfg.volume_size) < 1 or cfg.out_channels < 2:
        raise ValueError(f"need 0 <= overlap < 1 (got {cfg.overlap}), three positive volume sizes (got "
                         f"{cfg.volume_size}) and out_channels >= 2 (got {cfg.out_channels})")
    if cfg.fit_steps < 0 or (cfg.fit_steps and not cfg.checkpoint and min(cfg.volume_size) < cfg.roi_size):
        raise ValueError(f"fit_steps={cfg.fit_steps} must be >= 0, and fitting needs volume_size={cfg.volume_size} "
                         f">= roi_size={cfg.roi_size} in every axis")
    check_swinunetr_roi(cfg)
    device = bench_device(cfg)
    ours = {"precision": resolve_precision(cfg.precision, device), "sw_batch_size": cfg.sw_batch_size,
            "sdpa_attention": cfg.sdpa_attention, "channels_last": cfg.channels_last, "compile": cfg.compile}
    base = {**plain_options(ours), "precision": torch.float32, "sw_batch_size": BASELINE_SW_BATCH,
            "monai_flash_attention": False}
    ours["monai_flash_attention"] = False
    volume, truth = synthetic_volume(cfg.volume_size, cfg.out_channels, cfg.seed)
    volume_host = host_tensor(volume, device)
    result = header("infer", cfg, device, ours["precision"], training=False)
    t = time.perf_counter()
    state, first_loss, fit_loss = fitted_state(cfg, volume, truth, device, ours["precision"])
    trained = bool(cfg.checkpoint) or (fit_loss is not None and math.isfinite(fit_loss) and fit_loss < first_loss)
    result.update({"fit_s": time.perf_counter() - t, "fit_first_loss": first_loss, "fit_loss": fit_loss,
                   "fit_trained": trained})
    fp32_label: list[torch.Tensor] = []  # monai_eager's label map, kept on the device
    truth_device = truth.to(device, torch.uint8)

    def measure(opts: dict[str, Any]) -> dict[str, Any]:
        model = build_swinunetr(1, cfg.out_channels, feature_size=cfg.feature_size)
        model.load_state_dict(state)
        net = prepare(model, opts, cfg, device)
        phases = Phases(device)
        timed = TimedModule(net, phases)
        dtype = opts["precision"]

        def one() -> torch.Tensor:
            with phases("data"):
                x = volume_host.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                logits = sliding_window_predict(timed, x, (cfg.roi_size,) * 3, sw_batch_size=opts["sw_batch_size"],
                                                overlap=cfg.overlap, device=device)
            label = logits.argmax(1).to(torch.uint8)
            with phases("data"):
                label.cpu()
            return label

        t = time.perf_counter()
        for _ in range(cfg.warmup):
            one()
        sync(device)
        warmup_s = time.perf_counter() - t
        phases.reset()
        timed.samples = 0
        times = []
        for _ in range(cfg.steps):  # each volume ends with its label map on the host: a synchronisation
            t = time.perf_counter()
            label = one()
            sync(device)
            times.append(time.perf_counter() - t)
        volume_s = sum(times) / cfg.steps
        split = {k: v / cfg.steps for k, v in phases.totals().items()}
        split["window_blending"] = max(0.0, volume_s - sum(split.values()))
        run = {"seconds_per_volume": volume_s, "warmup_s": warmup_s, "split_s": split,
               "windows": timed.samples // cfg.steps, "first_step_s": warmup_s / cfg.warmup if cfg.warmup else times[0],
               **step_stats(times)}
        if opts == base:
            fp32_label[:] = [label]
        if fp32_label:
            agree = label_agreement(label, fp32_label[0], cfg.out_channels)
            run.update({"dice_vs_fp32": agree["dice"], "dice_min_class": agree["dice_min_class"],
                        "voxel_agreement": agree["voxel_agreement"]})
        run["dice_vs_truth"] = label_agreement(label, truth_device, cfg.out_channels)["dice"]  # how trained it is
        return run

    at_size = device.type == "cuda" and (cfg.roi_size, cfg.feature_size, list(cfg.volume_size), cfg.overlap) == (
        96, 48, [320, 320, 192], 0.5)

    def summarize(r: dict[str, Any]) -> None:
        finish(r, "seconds_per_volume", "seconds_per_volume", 1, at_size)
        ours_run = r["runs"]["ours"]
        r["windows"] = ours_run["windows"]
        for key in ("dice_vs_fp32", "dice_min_class", "voxel_agreement", "dice_vs_truth"):
            r[key] = ours_run.get(key)
        goal = r["goal"]
        goal["dice_target"] = ">= 0.99"
        if goal["met"] is not None and not trained:
            goal["met"], goal["why_not_counted"] = None, "not counted: the weights were not trained (fit)"
        elif goal["met"] is not None:
            goal["met"] = bool(goal["met"] and r["dice_vs_fp32"] is not None and r["dice_vs_fp32"] >= 0.99)

    flash = (("monai_flash", {**base, "monai_flash_attention": True}),)
    run_variants(result, variants(ours, base, cfg, flash), device, measure, emit, "seconds_per_volume", summarize,
                 cfg.budget_s)
    result["complete"] = True
    emit(result)
    return result
