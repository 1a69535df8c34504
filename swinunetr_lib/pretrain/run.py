"""Self-supervised pretraining entry point: ``pretrain(cfg)`` and ``python -m swinunetr_lib.pretrain``.

Paper (Tang et al. 2022, Sec. 3-4): Swin UNETR encoder, three proxy tasks (axial rotation, contrastive
coding, masked-volume inpainting), loss weights 1/1/1, AdamW lr 4e-4, 96^3 sub-volumes. The loop is
:func:`swinunetr_lib.train.loop.fit`; this module supplies the model, the data and the step function.

Examples::

    python -m swinunetr_lib.pretrain --data-manifest data/demo_cohort/pretrain.json --max-steps 100 \\
        --roi-size 64 --feature-size 12 --run-dir runs/ssl_tiny
    python -m swinunetr_lib.data prepare ct.json --out data/prepared     # once: memory-mappable volumes
    torchrun --nproc-per-node 8 -m swinunetr_lib.pretrain --prepared-dir data/prepared --max-steps 45000
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..models.swin_unetr import find_state_dict, load_encoder, read_encoder_checkpoint
from ..paths import absolute_from_cwd, resolve_path
from ..train.loop import FitResult, TrainConfig, fit
from ..utils import distributed as ddp
from ..utils.cli import run_cli
from ..utils.files import atomic_write_text
from ..utils.run_lock import run_dir_lock
from .dataloader import default_num_workers, ssl_dataloader
from .losses import SSLLoss
from .model import SSLModel, export_encoder
from .transforms import InnerCutout, SSLViewTransform, TwoViewTransform, make_generator

CONFIG_FILE = "pretrain_config.json"  # the run's PretrainConfig, written beside model_swinvit.pt at the end


@dataclass
class PretrainConfig(TrainConfig):
    data_manifest: str = ""              # decathlon-style JSON listing {"image": path} entries (or prepared_dir)
    prepared_dir: str = ""               # folder written by `python -m swinunetr_lib.data prepare`: memory-mapped
                                         # volumes, no cache (for thousands of CTs); instead of data_manifest
    data_root: str = ""                  # folder the manifest's paths are relative to; "" = the manifest's folder
    split: str = "training"              # name of the manifest's list to train on
    run_dir: str = "runs/ssl_pretraining"  # checkpoints, metrics.csv, tb/, model_swinvit.pt (the default is in
                                           # the repository; a relative --run-dir is taken from the current folder)
    device: str = "auto"                 # auto | cpu | cuda | cuda:N (auto: CUDA if present)
    roi_size: int = 96                   # cubic sub-volume side in voxels, divisible by 32 (paper: 96)
    feature_size: int = 48               # Swin UNETR embedding size, divisible by 12 (paper: 48)
    batch_size: int = 2                  # volumes per step and rank (official: 2)
    num_samples: int = 2                 # random crops per volume (official sw_batch_size 2) -> 4 sub-volumes
    spacing: list[float] | None = None   # resample to this voxel size in mm; None = no resampling, as the official code
    cache_rate: float = 1.0              # fraction (0..1) of volumes kept in memory after the deterministic transforms
    num_workers: int = -1                # DataLoader worker processes per rank (persistent, prefetching); 0 loads in
                                         # the main process; -1 = auto: 0 on a CPU, else min(4, cores per rank - 1)
    temperature: float = 0.5             # NT-Xent temperature (paper: 0.5)
    rotation_weight: float = 1.0         # weight of the rotation-prediction loss (paper Eq. 4 lambda_1: 1)
    contrastive_weight: float = 1.0      # weight of the contrastive loss (paper Eq. 4 lambda_2: 1)
    reconstruction_weight: float = 1.0   # weight of the inpainting (L1 reconstruction) loss (paper Eq. 4 lambda_3: 1)
    cutout_fraction: float = 0.3         # max fraction (0..1) of each sub-volume's voxels cut out (official: 0.3)
    cutout_mode: Literal["single", "official"] = "single"  # single: one pass, as the paper describes (mean 13.5 % cut
                                                           # out at 96^3, uniform noise); official: two passes as the
                                                           # official code (mean 22 %, normal noise min-max scaled per
                                                           # box); default single: the paper's "up to 30 %" and
                                                           # reproducible with earlier runs
    cutout_min_block: float = 0.05       # smallest cutout box side, as a fraction of each axis (official: 0.05)
    cutout_max_block: float = 0.25       # largest cutout box side, as a fraction of each axis (official: 0.25)
    cutout_noise_prob: float = 0.5       # single mode: probability a box is noise rather than another sample's content
    contrastive_negatives: Literal["global", "per_gpu"] = "global"  # global: all-gather embeddings across GPUs (with
                                                                    # gradients); per_gpu: local batch only, as the
                                                                    # official code
    init_from: str = ""                  # start from an earlier run's weights (fit's last.pt, or an exported
                                         # model_swinvit.pt: encoder only): every encoder tensor must load; heads and
                                         # decoder load where their shapes match, else start fresh; "" = random
                                         # initialisation. A resume restores its own weights instead
    decoder: Literal["upsample", "transposed", "unet"] = "upsample"  # reconstruction head: upsample = the paper's, from
                                                                     # the last stage alone (resize-convolution);
                                                                     # transposed = the same with transposed
                                                                     # convolutions; unet = Swin UNETR's decoder with
                                                                     # skip connections (roi_size >= 64): the visible
                                                                     # voxels pass through, the boxes are inpainted from
                                                                     # context
    export: bool = True                  # write run_dir/model_swinvit.pt at the end
    sdpa_attention: bool = False         # fused scaled_dot_product_attention for window attention (same weights)


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
    loss = SSLLoss(cfg.rotation_weight, cfg.contrastive_weight, cfg.reconstruction_weight, cfg.temperature,
                   gather_distributed=cfg.contrastive_negatives == "global")
    cutout = InnerCutout(max_fraction=cfg.cutout_fraction, min_block=cfg.cutout_min_block,
                         max_block=cfg.cutout_max_block, noise_prob=cfg.cutout_noise_prob, mode=cfg.cutout_mode)
    return SSLStep(loss, TwoViewTransform(SSLViewTransform(cutout=cutout)))


def pretrain(cfg: PretrainConfig) -> PretrainResult:
    """Build data, model and step from ``cfg``, run :func:`fit`, export the encoder (rank 0)."""
    if not cfg.data_manifest and not cfg.prepared_dir:
        raise ValueError("PretrainConfig.data_manifest (a JSON manifest of CT volumes) or prepared_dir (a folder "
                         "written by `python -m swinunetr_lib.data prepare`) is required")
    if cfg.data_manifest and cfg.prepared_dir:
        raise ValueError(f"give data_manifest ({cfg.data_manifest}) or prepared_dir ({cfg.prepared_dir}), not both")
    if cfg.roi_size <= 0 or cfg.roi_size % 32:
        raise ValueError(f"roi_size={cfg.roi_size} must be a positive multiple of 32 (Swin UNETR downsamples 5 times)")
    check_pretrain_config(cfg)
    device = ddp.init_distributed(cfg.device, timeout_s=60.0 * cfg.dist_timeout_min)
    check_contrastive_batch(cfg, ddp.world_size())
    run_dir = resolve_path(cfg.run_dir)
    with run_dir_lock(run_dir):  # the whole run: data, fit and export (a second run here is refused)
        return _pretrain(cfg, device, run_dir)


def check_pretrain_config(cfg: PretrainConfig) -> None:
    """``ValueError`` naming the first setting out of range; nothing is read or written before these pass."""
    cfg.train_config().check()
    for name in ("batch_size", "num_samples", "feature_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}={getattr(cfg, name)} must be >= 1")
    if cfg.feature_size % 12:
        raise ValueError(f"feature_size={cfg.feature_size} must be a multiple of 12 (Swin UNETR's attention heads)")
    if not 0 <= cfg.cache_rate <= 1:
        raise ValueError(f"cache_rate={cfg.cache_rate} must be between 0 and 1 (fraction of volumes kept in memory)")
    if cfg.num_workers < -1:
        raise ValueError(f"num_workers={cfg.num_workers} must be >= 0 (or -1: auto)")
    if cfg.spacing is not None and (len(cfg.spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in cfg.spacing)):
        raise ValueError(f"spacing={cfg.spacing}: need 3 positive voxel sizes in mm (or leave it out: no resampling)")
    if not 0 <= cfg.cutout_fraction < 1:
        raise ValueError(f"cutout_fraction={cfg.cutout_fraction} must be at least 0 and below 1")
    if cfg.decoder == "unet" and cfg.roi_size < 64:
        raise ValueError(f"roi_size={cfg.roi_size} with decoder=unet: Swin UNETR's decoder needs sub-volumes of "
                         "at least 64^3 (its bottleneck block normalises over the last stage's voxels); use "
                         "roi_size >= 64 or decoder=upsample")
    if not cfg.temperature > 0:
        raise ValueError(f"temperature={cfg.temperature} must be > 0")


def check_contrastive_batch(cfg: PretrainConfig, world_size: int = 1) -> None:
    """The contrastive loss contrasts each sub-volume with the others of the (global) batch: with only one
    (``batch_size * num_samples * world_size == 1``) it is exactly 0 and that proxy task learns nothing."""
    if cfg.contrastive_weight > 0 and cfg.batch_size * cfg.num_samples * world_size < 2:
        raise ValueError(f"batch_size={cfg.batch_size} with num_samples={cfg.num_samples} gives one sub-volume per "
                         "step: the contrastive loss needs at least 2 (it would be exactly 0); use num_samples >= 2 "
                         "or batch_size >= 2 (or contrastive_weight=0 to leave that task out)")


def run_settings(cfg: PretrainConfig) -> dict[str, Any]:
    """What defines a pretraining run beyond its TrainConfig (data, model, crops, loss): a resume with any of
    these changed is refused (:func:`swinunetr_lib.train.loop.fit`'s ``run_settings``)."""
    names = ("split", "roi_size", "feature_size", "batch_size", "num_samples", "spacing", "temperature",
             "rotation_weight", "contrastive_weight", "reconstruction_weight", "cutout_fraction", "decoder")
    out: dict[str, Any] = {n: getattr(cfg, n) for n in names}
    out["init_from"] = str(resolve_path(cfg.init_from)) if cfg.init_from else ""
    out["data_manifest"] = str(resolve_path(cfg.data_manifest)) if cfg.data_manifest else ""
    out["prepared_dir"] = str(resolve_path(cfg.prepared_dir)) if cfg.prepared_dir else ""
    out["data_root"] = str(resolve_path(cfg.data_root)) if cfg.data_root else ""
    return out


def initial_model(cfg: PretrainConfig) -> SSLModel:
    """The :class:`SSLModel` a run of ``cfg`` starts from: the torch RNG seeded with ``cfg.seed``, then built (random
    initialisation; :func:`warm_start` is applied after, where ``init_from`` asks for it)."""
    torch.manual_seed(cfg.seed)
    return SSLModel(feature_size=cfg.feature_size, sdpa_attention=cfg.sdpa_attention, decoder=cfg.decoder)


def build_loader(cfg: PretrainConfig, device: torch.device) -> Any:
    """The loader of ``cfg``'s sub-volumes that ``fit`` iterates (:func:`ssl_dataloader`; worker count -1 = auto)."""
    workers = default_num_workers(device) if cfg.num_workers < 0 else cfg.num_workers
    return ssl_dataloader(resolve_path(cfg.prepared_dir or cfg.data_manifest), cfg.roi_size, cfg.batch_size,
                          cfg.num_samples, cfg.spacing, cfg.cache_rate, workers, cfg.seed, cfg.split,
                          distributed=ddp.is_distributed(), prepared=bool(cfg.prepared_dir),
                          base_dir=resolve_path(cfg.data_root) if cfg.data_root else None,
                          pin_memory=device.type == "cuda")


def _pretrain(cfg: PretrainConfig, device: torch.device, run_dir: Path) -> PretrainResult:
    """:func:`pretrain` once the settings are checked and the run folder is locked."""
    model = initial_model(cfg)
    # not on a resume from a checkpoint: that restores its own weights
    if cfg.init_from and not (cfg.resume and (run_dir / "checkpoints" / "last.pt").is_file()):
        line = warm_start(model, resolve_path(cfg.init_from))
        if ddp.is_main_process():
            print(line)
    loader = build_loader(cfg, device)
    result = fit(model, build_ssl_step(cfg), loader, cfg.train_config(), run_dir, device=device,
                 run_settings=run_settings(cfg))
    encoder = None
    if ddp.is_main_process():
        atomic_write_text(json.dumps(cfg.to_dict(), indent=1) + "\n", run_dir / CONFIG_FILE)
    if cfg.export and ddp.is_main_process():
        encoder = export_encoder(model, run_dir / "model_swinvit.pt")
    ddp.barrier()
    return PretrainResult(fit=result, run_dir=run_dir, encoder_path=encoder)


def warm_start(model: SSLModel, checkpoint: str | Path) -> str:
    """Copy an earlier run's weights into ``model`` before its first step; returns one line saying what loaded.

    This is progressive resizing (fastbook's habit): a cheap run on small sub-volumes with many views per step,
    then a run on larger ones, which need a bigger decoder and cost more per view. ``checkpoint`` is ``fit``'s
    ``last.pt`` (or an :class:`SSLModel` state dict), or an exported ``model_swinvit.pt`` (encoder only). Every
    encoder tensor must load (:func:`~swinunetr_lib.models.swin_unetr.load_encoder`, weights-only reading; an
    ``EncoderLoadError`` names the file). The rotation head, the contrastive head and the decoder each load
    whole when the checkpoint holds all their tensors with the same shapes, and otherwise start fresh (e.g. an
    ``upsample`` run continued with ``decoder="unet"``).
    """
    source = str(checkpoint)
    obj = read_encoder_checkpoint(checkpoint)
    report = load_encoder(model, obj, source=source)
    saved = find_state_dict(obj, source)  # as load_encoder finds it: "state_dict", "model", ... or the mapping
    own = model.state_dict()
    loaded, fresh = [], []
    for part in ("rotation_head", "contrastive_head", "decoder"):
        names = [k for k in own if k.startswith(part + ".")]
        if all(isinstance(saved.get(k), torch.Tensor) and saved[k].shape == own[k].shape for k in names):
            with torch.no_grad():
                for k in names:
                    own[k].copy_(saved[k])
            loaded.append(part)
        else:
            fresh.append(part)
    return (f"{report.summary()}; loaded {', '.join(loaded) or 'no head'}"
            + (f"; fresh: {', '.join(fresh)}" if fresh else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swinunetr_lib.pretrain", description=__doc__.splitlines()[0])
    PretrainConfig.add_arguments(parser)
    args = absolute_from_cwd(parser.parse_args(argv), "data_manifest", "prepared_dir", "data_root", "run_dir",
                           "init_from")

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
