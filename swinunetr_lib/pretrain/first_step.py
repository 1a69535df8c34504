"""Pretraining's first step, reproduced outside ``fit``: the same model, batch and random draws, so one SSL step
written out by hand (two views, the three losses, their sum, backward) can be checked against the first row
``pretrain`` logged.

:func:`first_step_inputs` rebuilds what step 1 of :func:`~swinunetr_lib.pretrain.run.pretrain` sees for a
:class:`~swinunetr_lib.pretrain.run.PretrainConfig` (single process, no ``init_from``): the model initialised from
``cfg.seed`` (:func:`~swinunetr_lib.pretrain.run.initial_model`), the first batch of the same loader drawn through
``fit``'s :class:`~swinunetr_lib.train.batch_stream.BatchStream` (which seeds the global RNGs per epoch, per batch
and per step), and the generator the step function then draws its views from. :func:`ssl_step_by_hand` is that
step in plain torch (rotation cross-entropy, NT-Xent at ``cfg.temperature``, L1, weighted sum as in paper
Eq. 4, backward); :func:`compare_with_logged` puts its numbers beside ``metrics.csv``'s first row and raises when
they differ by more than a tolerance.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..train.batch_stream import BatchStream
from ..train.loop import resolve_precision
from ..utils.device import resolve_device
from .losses import ContrastiveLoss
from .model import SSLModel
from .run import PretrainConfig, build_loader, build_ssl_step, initial_model
from .transforms import TwoViewTransform, make_generator

TERMS = ("loss", "rotation", "contrastive", "reconstruction", "grad_norm")
"""What :func:`ssl_step_by_hand` returns and ``fit`` logs for a pretraining step (``grad_norm``: before clipping)."""


@dataclass
class FirstStep:
    """What step 1 of ``pretrain(cfg)`` works on: ``model`` (train mode, on ``device``), ``x`` the first batch
    (B * num_samples, 1, X, Y, Z), ``generator`` the step's generator (views drawn from it as ``SSLStep`` does),
    ``views`` the run's two-view transform (its cutout settings) and ``dtype`` the autocast dtype ``fit`` uses."""
    cfg: PretrainConfig
    model: SSLModel
    x: torch.Tensor
    generator: torch.Generator
    views: TwoViewTransform
    device: torch.device
    dtype: torch.dtype

    @contextmanager
    def autocast(self) -> Iterator[None]:
        """The forward's precision as in ``fit`` (fp32 on a CPU: no autocast)."""
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            yield


def first_step_inputs(cfg: PretrainConfig) -> FirstStep:
    """The model, first batch and step generator of step 1 of ``pretrain(cfg)`` (one process; ``cfg.init_from`` is
    refused: a warm start is not rebuilt here). Reads the data as the run does (a second copy in memory)."""
    if cfg.init_from:
        raise ValueError(f"init_from={cfg.init_from!r}: the first step is rebuilt from a random initialisation only")
    if not cfg.data_manifest and not cfg.prepared_dir:
        raise ValueError("PretrainConfig.data_manifest or prepared_dir is required to rebuild the first batch")
    device = resolve_device(cfg.device)
    model = initial_model(cfg).to(device).train()
    batches = BatchStream(build_loader(cfg, device), cfg.seed, rank=0)
    batch = batches.next(0)  # seeds the global RNGs for step 1 after drawing the batch, as in fit
    x = batch["image"] if isinstance(batch, dict) else batch
    x = torch.as_tensor(x).to(device)
    generator = make_generator(device)  # the first draw after the step's seeding, as SSLStep does
    return FirstStep(cfg, model, x, generator, build_ssl_step(cfg).views, device,
                     resolve_precision(cfg.precision, device))


def ssl_step_by_hand(first: FirstStep) -> dict[str, float]:
    """One SSL step in plain torch on ``first``: two views, one forward of both, rotation cross-entropy (4 classes),
    NT-Xent between the views' embeddings, L1 to the uncorrupted views, the weighted sum, backward. Returns the
    terms (and the gradient's global L2 norm) as floats; the gradients stay in ``first.model``."""
    cfg, b = first.cfg, first.x.shape[0]
    v1, v2 = first.views(first.x, first.generator)
    first.model.zero_grad(set_to_none=True)
    with first.autocast():
        out = first.model(torch.cat([v1.image, v2.image]))                 # both views in one forward, (2B, ...)
        rotation = F.cross_entropy(out["rotation"].float(), torch.cat([v1.rotation, v2.rotation]))
        contrastive = ContrastiveLoss(cfg.temperature, gather_distributed=False)(out["contrastive"][:b],
                                                                                 out["contrastive"][b:])
        reconstruction = F.l1_loss(out["reconstruction"].float(), torch.cat([v1.target, v2.target]).float())
        loss = (cfg.rotation_weight * rotation + cfg.contrastive_weight * contrastive
                + cfg.reconstruction_weight * reconstruction)
    loss.backward()
    grads = [p.grad for p in first.model.parameters() if p.grad is not None]
    grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    terms = {"loss": loss, "rotation": rotation, "contrastive": contrastive, "reconstruction": reconstruction,
             "grad_norm": grad_norm}
    return {k: float(v.detach()) for k, v in terms.items()}


def compare_with_logged(by_hand: Mapping[str, float], logged: Mapping[str, Any], *, rtol: float = 1e-4,
                        atol: float = 1e-5) -> list[dict[str, float | str]]:
    """Rows ``{"term", "by hand", "logged by pretrain", "difference"}`` for each of :data:`TERMS` in both; raises
    ``AssertionError`` naming the first term whose values differ by more than ``atol + rtol * |logged|``."""
    rows: list[dict[str, float | str]] = []
    for term in TERMS:
        if term not in by_hand or term not in logged:
            continue
        a, b = float(by_hand[term]), float(logged[term])
        rows.append({"term": term, "by hand": a, "logged by pretrain": b, "difference": a - b})
        if not abs(a - b) <= atol + rtol * abs(b):
            raise AssertionError(f"{term}: by hand {a:.6g}, logged by pretrain {b:.6g} (difference {a - b:.3g}, "
                                 f"tolerance {atol:g} + {rtol:g} x |logged|)")
    if not rows:
        raise AssertionError(f"no term to compare: by hand has {sorted(by_hand)}, the logged row {sorted(logged)}")
    return rows
