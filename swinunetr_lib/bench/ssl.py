"""Benchmarks at the paper's size, each against MONAI's plain eager model in the same process and run.

``python -m swinunetr_lib.bench ssl|finetune|infer|data [options]``; defaults are the paper's size (96^3,
feature 48, batch 4; inference on a 320 x 320 x 192 volume). Each subcommand times the same model in
several *variants*: ``monai_eager`` (MONAI's model, eager, no option of ours; for inference fp32),
``ours`` (the options given: ``--precision``, ``--sdpa-attention``, ``--channels-last``,
``--grad-checkpoint``, ``--compile``) and, with ``--ablation``, the options added one at a time in eager
mode. It reports time per step (or per volume), the ratio against ``monai_eager``, peak memory per
variant and the split of ``ours``'s step into data (host-to-device copies), augmentation and model,
measured inside the step (CUDA events on a GPU). JSON (``--json``) is rewritten after every variant,
so a run stopped by a time limit still leaves the finished variants.

- ``ssl``: full pretraining steps (two-view augmentation on the device, forward/backward of both views,
  AdamW) on synthetic sub-volumes; also times a reference-style augmentation (per sample and per cutout
  block in a Python loop, as the official code does) against the batched one.
- ``finetune``: :mod:`swinunetr_lib.bench.finetune` (DiceCE on random crops and labels).
- ``infer``: :mod:`swinunetr_lib.bench.infer` (sliding window with Gaussian blending; Dice vs fp32).
- ``data``: :mod:`swinunetr_lib.bench.data` (pretraining sub-volumes/s per CPU core: NIfTI, cache, prepared).

``--compile`` compiles the repeated Swin regions (``--compile-scope layers``: each MONAI ``BasicLayer``,
i.e. one stage of two blocks plus its patch merging; ``blocks``: each ``SwinTransformerBlock``;
``model``: the whole network), with static shapes.
CPU smoke: ``python -m swinunetr_lib.bench ssl --roi-size 32 --feature-size 12 --batch-size 1 --steps 1 --warmup 0
--device cpu``.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..pretrain.model import SSLModel
from ..pretrain.run import SSLStep
from ..pretrain.transforms import make_generator
from ..train.loop import resolve_precision
from ..utils.cli import run_cli
from ..utils.files import atomic_write_text
from .common import (
    BenchBase,
    Phases,
    TimedModule,
    bench_device,
    check_common,
    finish,
    header,
    host_tensor,
    plain_options,
    prepare,
    run_variants,
    time_call,
    to_device,
    train_timing,
    variants,
)
from .data import DataBenchConfig, bench_data, format_data_table
from .finetune import FinetuneBenchConfig, bench_finetune
from .infer import InferBenchConfig, bench_infer
from .table import format_table

__all__ = ["BenchConfig", "bench_ssl", "format_table", "main", "reference_augment"]


@dataclass
class BenchConfig(BenchBase):
    """``bench ssl``."""
    roi_size: int = 96            # cubic sub-volume side in voxels (paper: 96)
    batch_size: int = 4           # sub-volumes per step (each gives two views)
    grad_checkpoint: bool = False  # ours: MONAI use_checkpoint
    baseline_precision: str = "same"  # monai_eager's precision: same (as ours) | fp32 | bf16 | fp16
    reference_repeats: int = 3    # timed calls of each augmentation (batched and reference loop)


def _ref_block_drop(x: torch.Tensor, other: torch.Tensor | None = None, max_drop: float = 0.3,
                    max_block: float = 0.25, tol: float = 0.05) -> torch.Tensor:
    """Official-style cutout of one (C, X, Y, Z) sample: draw blocks in a while loop until their summed
    volume reaches U(0, max_drop) of the sample; each block is a fresh normal-noise tensor rescaled to
    [0, 1] (or ``other``'s content), written by slicing."""
    c, h, w, d = x.shape
    n_drop = np.random.uniform(0, max_drop) * h * w * d
    mins = [max(1, int(s * tol)) for s in (h, w, d)]
    maxs = [max(m + 1, int(s * max_block)) for s, m in zip((h, w, d), mins, strict=True)]
    total = 0
    while total < n_drop:
        lo = [np.random.randint(0, s - m) for s, m in zip((h, w, d), mins, strict=True)]
        hi = [min(np.random.randint(m, mx) + l0, s) for m, mx, l0, s in zip(mins, maxs, lo, (h, w, d), strict=True)]
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


def bench_ssl(cfg: BenchConfig, emit: Callable[[dict[str, Any]], None] = lambda r: None) -> dict[str, Any]:
    """Run the SSL benchmark; returns the numbers printed by :func:`format_table`. ``emit(result)`` is
    called after every variant (the CLI rewrites the JSON file there)."""
    check_common(cfg)
    device = bench_device(cfg)
    ours = {"precision": resolve_precision(cfg.precision, device), "sdpa_attention": cfg.sdpa_attention,
            "channels_last": cfg.channels_last, "grad_checkpoint": cfg.grad_checkpoint, "compile": cfg.compile}
    base = plain_options(ours)
    if cfg.baseline_precision != "same":
        base["precision"] = resolve_precision(cfg.baseline_precision, device)
    gen = torch.Generator().manual_seed(cfg.seed)
    x_host = host_tensor(torch.rand(cfg.batch_size, 1, *(cfg.roi_size,) * 3, generator=gen), device)
    result = header("ssl", cfg, device, ours["precision"])

    def measure(opts: dict[str, Any]) -> dict[str, Any]:
        torch.manual_seed(cfg.seed)
        model = SSLModel(feature_size=cfg.feature_size)
        net = prepare(model, opts, cfg, device)
        phases = Phases(device)
        step = SSLStep()
        step.views = TimedModule(step.views, phases, "augmentation")  # type: ignore[assignment]

        def step_fn() -> torch.Tensor:
            with phases("data"):
                x = to_device(x_host, device, opts["channels_last"])
            return step(net, x, device)["loss"]
        run = train_timing(model, opts, device, phases, step_fn, cfg.steps, cfg.warmup)
        return {**run, "subvolumes_per_s": cfg.batch_size / run["step_s"]}

    at_size = device.type == "cuda" and (cfg.roi_size, cfg.feature_size, cfg.batch_size) == (96, 48, 4)
    run_variants(result, variants(ours, base, cfg), device, measure, emit, "step_s",
                 lambda r: finish(r, "step_s", "subvolumes_per_s", cfg.batch_size, at_size), cfg.budget_s)
    if not result["headline"]:  # ours failed: its error is in the JSON, and there is nothing to compare
        result["complete"] = True
        emit(result)
        return result
    # the batched two-view augmentation against the official-style loop, alone on the same batch
    x = x_host.to(device)
    views, g = SSLStep().views, make_generator(device, cfg.seed)
    np.random.seed(cfg.seed)
    alone = time_call(lambda: views(x, g), device, cfg.reference_repeats)
    ref = time_call(lambda: (reference_augment(x), reference_augment(x)), device, cfg.reference_repeats)
    step_s, aug = result["step_s"], result["split_s"].get("augmentation", 0.0)
    result.update({"final_loss": result["runs"]["ours"]["final_loss"], "augment_s": aug,
                   "augment_share": aug / step_s, "augment_alone_s": alone, "reference_augment_s": ref,
                   "reference_over_ours": ref / alone, "reference_share_if_used": ref / (step_s - alone + ref),
                   "complete": True})
    emit(result)
    return result


def main(argv: list[str] | None = None) -> int:
    commands = {"ssl": (BenchConfig, bench_ssl, "SSL pretraining step throughput"),
                "finetune": (FinetuneBenchConfig, bench_finetune, "fine-tuning step throughput (DiceCE, AdamW)"),
                "infer": (InferBenchConfig, bench_infer, "sliding-window inference time per volume, Dice vs fp32"),
                "data": (DataBenchConfig, bench_data, "pretraining sub-volumes/s per core: NIfTI, cache, prepared")}
    parser = argparse.ArgumentParser(prog="python -m swinunetr_lib.bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="benchmark", required=True)
    for name, (cls, _, help_text) in commands.items():
        cls.add_arguments(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)

    def body() -> int:
        cls, fn, _ = commands[args.benchmark]
        cfg = cls.from_args(args)

        def emit(result: dict[str, Any]) -> None:
            if cfg.json:
                atomic_write_text(json.dumps(result, indent=2), cfg.json)
        print((format_data_table if args.benchmark == "data" else format_table)(fn(cfg, emit)))
        return 0

    return run_cli("python -m swinunetr_lib.bench", body)


if __name__ == "__main__":
    sys.exit(main())
