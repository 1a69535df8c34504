"""Benchmarks. ``python -m swinunetr_lib.bench ssl --roi-size 96 --feature-size 48 --batch-size 4 --precision bf16``.

``ssl`` times full pretraining steps (two-view augmentation on the device, one forward/backward of both
views, AdamW) on synthetic sub-volumes and reports sub-volumes per second, the share of the step spent
in augmentation, and peak memory. It also times a reference-style augmentation — per sample and per
cutout block in a Python loop with NumPy random numbers, as the official pretraining code does — on
the same batch and prints how many times slower it is than the batched one.
CPU smoke: ``python -m swinunetr_lib.bench ssl --roi-size 64 --feature-size 12 --batch-size 2 --steps 2 --warmup 1``.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .config import Config
from .pretrain import SSLStep
from .ssl_model import SSLModel
from .ssl_transforms import TwoViewTransform, make_generator
from .train import _enable_checkpointing, make_adamw, resolve_precision
from .utils import atomic_write_text, resolve_device, run_cli


@dataclass
class BenchConfig(Config):
    roi_size: int = 96            # cubic sub-volume side
    feature_size: int = 48        # Swin UNETR feature size
    batch_size: int = 4           # sub-volumes per step (each gives two views)
    precision: str = "auto"       # auto | bf16 | fp16 | fp32
    device: str = "auto"          # auto | cpu | cuda
    compile: bool = False         # torch.compile the model
    grad_checkpoint: bool = False  # MONAI use_checkpoint
    sdpa_attention: bool = False  # window attention through scaled_dot_product_attention (window_attention.py)
    steps: int = 10               # timed steps
    warmup: int = 3               # untimed steps first (compilation, cuDNN autotuning)
    reference_repeats: int = 3    # timed calls of each augmentation
    seed: int = 0
    json: str = ""                # also write the results to this JSON file


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _ref_block_drop(x: torch.Tensor, other: torch.Tensor | None = None, max_drop: float = 0.3,
                    max_block: float = 0.25, tol: float = 0.05) -> torch.Tensor:
    """Official-style cutout of one (C, X, Y, Z) sample: draw blocks in a while loop until their summed
    volume reaches U(0, max_drop) of the sample; each block is a fresh normal-noise tensor rescaled to
    [0, 1] (or ``other``'s content), written by slicing."""
    c, h, w, d = x.shape
    n_drop = np.random.uniform(0, max_drop) * h * w * d
    mins = [max(1, int(s * tol)) for s in (h, w, d)]
    maxs = [max(m + 1, int(s * max_block)) for s, m in zip((h, w, d), mins)]
    total = 0
    while total < n_drop:
        lo = [np.random.randint(0, s - m) for s, m in zip((h, w, d), mins)]
        hi = [min(np.random.randint(m, mx) + l0, s) for m, mx, l0, s in zip(mins, maxs, lo, (h, w, d))]
        region = (slice(None), slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        if other is None:
            noise = torch.empty((c, hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]), device=x.device).normal_()
            x[region] = (noise - noise.min()) / (noise.max() - noise.min())
        else:
            x[region] = other[region]
        total += (hi[0] - lo[0]) * (hi[1] - lo[1]) * (hi[2] - lo[2])
    return x


def reference_augment(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One view, reference style: per-sample rotation and per-sample, per-block cutout loops.
    (B, C, X, Y, Z) -> (augmented, rotation labels (B,))."""
    labels = [int(np.random.randint(4)) for _ in range(x.shape[0])]
    out = torch.stack([torch.rot90(x[i], k, dims=(1, 2)) for i, k in enumerate(labels)])
    for i in range(out.shape[0]):
        out[i] = _ref_block_drop(out[i])
        j = np.random.randint(out.shape[0])
        if j != i:
            out[i] = _ref_block_drop(out[i], out[j])
    return out, torch.tensor(labels, device=x.device)


def _time(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    fn()
    _sync(device)
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - t) / repeats


def bench_ssl(cfg: BenchConfig) -> dict[str, Any]:
    """Run the SSL benchmark; returns the numbers printed by :func:`format_table`."""
    if cfg.roi_size <= 0 or cfg.roi_size % 32:
        raise ValueError(f"roi_size={cfg.roi_size} must be a positive multiple of 32")
    for name in ("batch_size", "steps"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}={getattr(cfg, name)} must be >= 1")
    device = resolve_device(cfg.device)
    dtype = resolve_precision(cfg.precision, device)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # as fit does: fixed crop size
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = SSLModel(feature_size=cfg.feature_size, sdpa_attention=cfg.sdpa_attention).to(device)
    if cfg.grad_checkpoint:
        _enable_checkpointing(model)
    net = torch.compile(model) if cfg.compile else model
    opt = make_adamw(model.parameters(), 4e-4, 1e-5, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    step = SSLStep()
    views = TwoViewTransform()
    x = torch.rand(cfg.batch_size, 1, cfg.roi_size, cfg.roi_size, cfg.roi_size, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def train_step() -> float:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = step(net, x, device)
        opt.zero_grad(set_to_none=True)
        scaler.scale(out["loss"]).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        return float(out["loss"].detach())

    for _ in range(cfg.warmup):
        train_step()
    _sync(device)
    t = time.perf_counter()
    losses = [train_step() for _ in range(cfg.steps)]
    _sync(device)
    step_s = (time.perf_counter() - t) / max(1, cfg.steps)

    gen = make_generator(device, cfg.seed)
    ours_s = _time(lambda: views(x, gen), device, cfg.reference_repeats)
    ref_s = _time(lambda: (reference_augment(x), reference_augment(x)), device, cfg.reference_repeats)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        name = torch.cuda.get_device_name(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB -> GiB (process RSS)
        name = platform.processor() or platform.machine()
    return {"device": f"{device.type} ({name}), {torch.get_num_threads()} threads" if device.type == "cpu"
            else f"{device} ({name})", "torch": torch.__version__, "roi_size": cfg.roi_size,
            "feature_size": cfg.feature_size, "batch_size": cfg.batch_size, "precision": str(dtype).split(".")[-1],
            "compile": cfg.compile, "grad_checkpoint": cfg.grad_checkpoint,
            "sdpa_attention": cfg.sdpa_attention, "steps": cfg.steps,
            "step_s": step_s, "subvolumes_per_s": cfg.batch_size / step_s, "augment_s": ours_s,
            "augment_share": ours_s / step_s, "reference_augment_s": ref_s, "reference_over_ours": ref_s / ours_s,
            "reference_share_if_used": ref_s / (step_s - ours_s + ref_s), "peak_memory_gib": peak,
            "peak_memory_kind": "max_memory_allocated" if device.type == "cuda" else "process max RSS",
            "final_loss": losses[-1] if losses else float("nan")}


def format_table(r: dict[str, Any]) -> str:
    rows = [("device", r["device"]), ("torch", r["torch"]),
            ("ROI / feature size / batch", f"{r['roi_size']}^3 / {r['feature_size']} / {r['batch_size']} sub-volumes"),
            ("precision / compile / grad ckpt / SDPA", f"{r['precision']} / {r['compile']} / {r['grad_checkpoint']}"
                                                        f" / {r.get('sdpa_attention', False)}"),
            ("time per step", f"{r['step_s'] * 1e3:.1f} ms (mean of {r['steps']})"),
            ("sub-volumes / s", f"{r['subvolumes_per_s']:.2f}"),
            ("augmentation (batched, 2 views)", f"{r['augment_s'] * 1e3:.2f} ms = {100 * r['augment_share']:.1f} % of a step"),
            ("augmentation (reference loop)", f"{r['reference_augment_s'] * 1e3:.2f} ms = "
                                              f"{100 * r['reference_share_if_used']:.1f} % of such a step"),
            ("reference / batched", f"{r['reference_over_ours']:.1f}x"),
            (f"peak memory ({r['peak_memory_kind']})", f"{r['peak_memory_gib']:.2f} GiB"),
            ("last loss", f"{r['final_loss']:.4f}")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swinunetr_lib.bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="benchmark", required=True)
    BenchConfig.add_arguments(sub.add_parser("ssl", help="SSL pretraining step throughput"))
    args = parser.parse_args(argv)

    def body() -> int:
        cfg = BenchConfig.from_args(args)
        if cfg.json and (Path(cfg.json).is_dir() or Path(cfg.json).suffix != ".json"):
            raise ValueError(f"--json {cfg.json}: expected a .json file path")
        result = bench_ssl(cfg)
        print(format_table(result))
        if cfg.json:
            atomic_write_text(json.dumps(result, indent=2), cfg.json)
        return 0

    return run_cli("python -m swinunetr_lib.bench", body)


if __name__ == "__main__":
    sys.exit(main())
