"""Self-supervised pretraining entry point: ``pretrain(cfg)`` and ``python -m swinunetr_lib.pretrain``.

Paper (Tang et al. 2022, Sec. 3-4): Swin UNETR encoder, three proxy tasks (axial rotation, contrastive
coding, masked-volume inpainting), loss weights 1/1/1, AdamW lr 4e-4, 96^3 sub-volumes. The loop is
:func:`swinunetr_lib.train.fit`; this module supplies the model, the data and the step function.

Examples::

    python -m swinunetr_lib.pretrain --data-manifest data/demo_cohort/pretrain.json --max-steps 100 \\
        --roi-size 64 --feature-size 12 --run-dir runs/ssl_tiny
    torchrun --nproc-per-node 8 -m swinunetr_lib.pretrain --data-manifest ... --max-steps 45000
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed as ddp
from .losses import SSLLoss
from .paths import resolve_path
from .ssl_data import ssl_dataloader
from .ssl_model import SSLModel, export_encoder
from .ssl_transforms import InnerCutout, SSLViewTransform, TwoViewTransform, make_generator
from .train import FitResult, TrainConfig, fit
from .utils import run_cli


@dataclass
class PretrainConfig(TrainConfig):
    data_manifest: str = ""              # decathlon-style JSON listing {"image": path} entries (required)
    split: str = "training"              # list of the manifest to train on
    run_dir: str = "runs/ssl_pretraining"  # checkpoints, metrics.csv, tb/, model_swinvit.pt (relative: repo root)
    device: str = "auto"                 # auto | cpu | cuda
    roi_size: int = 96                   # cubic sub-volume side (paper: 96), divisible by 32
    feature_size: int = 48               # Swin UNETR embedding size (paper: 48)
    batch_size: int = 2                  # volumes per step and rank (official: 2)
    num_samples: int = 2                 # random crops per volume (official sw_batch_size 2) -> 4 sub-volumes
    spacing: list[float] | None = None   # resample to this (mm); None = no resampling, as the official code
    cache_rate: float = 1.0              # fraction of volumes kept in memory after the deterministic transforms
    num_workers: int = 0                 # DataLoader workers
    temperature: float = 0.5             # NT-Xent temperature (paper: 0.5)
    rotation_weight: float = 1.0         # paper Eq. 4 lambda_1
    contrastive_weight: float = 1.0      # lambda_2
    reconstruction_weight: float = 1.0   # lambda_3
    cutout_fraction: float = 0.3         # max fraction of each sub-volume cut out (official: 0.3)
    export: bool = True                  # write run_dir/model_swinvit.pt at the end
    sdpa_attention: bool = False         # fused scaled_dot_product_attention for window attention (same weights)

    def train_config(self) -> TrainConfig:
        names = {f.name for f in fields(TrainConfig)}
        return TrainConfig.from_dict({k: v for k, v in self.to_dict().items() if k in names})


@dataclass
class PretrainResult:
    fit: FitResult
    run_dir: Path
    encoder_path: Path | None


class SSLStep:
    """``fit`` step function: two views on the device, one forward of both, the SSL loss.

    batch: ``{"image": (B, 1, X, Y, Z)}`` or a tensor. Returns ``{"loss", "rotation", "contrastive",
    "reconstruction"}``. Randomness comes from a generator seeded off the global torch RNG (``fit``
    seeds that per step), so a step is reproducible.
    """

    def __init__(self, loss: SSLLoss | None = None, views: TwoViewTransform | None = None) -> None:
        self.loss = SSLLoss() if loss is None else loss
        self.views = TwoViewTransform() if views is None else views

    def __call__(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, torch.Tensor]:
        x = batch["image"] if isinstance(batch, dict) else batch
        x = torch.as_tensor(x).to(device, non_blocking=True)
        v1, v2 = self.views(x, make_generator(device))
        out = model(torch.cat([v1.image, v2.image]))
        b = x.shape[0]
        return self.loss(out["rotation"], torch.cat([v1.rotation, v2.rotation]), out["contrastive"][:b],
                         out["contrastive"][b:], out["reconstruction"], torch.cat([v1.target, v2.target]))


def build_ssl_step(cfg: PretrainConfig) -> SSLStep:
    loss = SSLLoss(cfg.rotation_weight, cfg.contrastive_weight, cfg.reconstruction_weight, cfg.temperature)
    return SSLStep(loss, TwoViewTransform(SSLViewTransform(cutout=InnerCutout(max_fraction=cfg.cutout_fraction))))


def pretrain(cfg: PretrainConfig) -> PretrainResult:
    """Build data, model and step from ``cfg``, run :func:`fit`, export the encoder (rank 0)."""
    if not cfg.data_manifest:
        raise ValueError("PretrainConfig.data_manifest is required (a JSON manifest of CT volumes)")
    if cfg.roi_size <= 0 or cfg.roi_size % 32:
        raise ValueError(f"roi_size={cfg.roi_size} must be a positive multiple of 32 (Swin UNETR downsamples 5 times)")
    device = ddp.init_distributed(cfg.device)
    run_dir = resolve_path(cfg.run_dir)
    loader = ssl_dataloader(cfg.data_manifest, cfg.roi_size, cfg.batch_size, cfg.num_samples, cfg.spacing,
                            cfg.cache_rate, cfg.num_workers, cfg.seed, cfg.split, distributed=ddp.is_distributed())
    torch.manual_seed(cfg.seed)
    model = SSLModel(feature_size=cfg.feature_size, sdpa_attention=cfg.sdpa_attention)
    result = fit(model, build_ssl_step(cfg), loader, cfg.train_config(), run_dir, device=device)
    encoder = None
    if cfg.export and ddp.is_main_process():
        encoder = export_encoder(model, run_dir / "model_swinvit.pt")
    ddp.barrier()
    return PretrainResult(fit=result, run_dir=run_dir, encoder_path=encoder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swinunetr_lib.pretrain", description=__doc__.splitlines()[0])
    PretrainConfig.add_arguments(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        res = pretrain(PretrainConfig.from_args(args))
        if ddp.is_main_process():
            m = res.fit.metrics
            print(f"step {res.fit.step}: loss {m.get('loss', float('nan')):.4f} (rotation {m.get('rotation', 0):.4f}, "
                  f"contrastive {m.get('contrastive', 0):.4f}, reconstruction {m.get('reconstruction', 0):.4f})")
            print(f"checkpoint: {res.fit.last_checkpoint}\nencoder: {res.encoder_path}")
        ddp.shutdown_distributed()
        return 0

    return run_cli("python -m swinunetr_lib.pretrain", body)


if __name__ == "__main__":
    sys.exit(main())
