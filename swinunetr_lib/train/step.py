"""One optimizer step of :func:`~swinunetr_lib.train.loop.fit`: forward under autocast, backward, the finite
checks, gradient clipping, then AdamW, the GradScaler and the LR schedule.

A non-finite loss or gradient raises :class:`NonFiniteLossError` on every rank before the optimizer step, so the
weights and the last checkpoint on disk stay the last good ones. No random numbers are drawn here beyond what
``step_fn`` draws.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..utils import distributed as ddp

if TYPE_CHECKING:
    from .loop import TrainConfig

# (model, batch, device) -> {"loss": scalar tensor with grad, other scalar tensors}
StepFn = Callable[[nn.Module, Any, torch.device], dict[str, torch.Tensor]]


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradient became NaN/inf; the message names the step, the loss terms, the last good
    checkpoint and what to try."""


@dataclass
class Optimization:
    """What an optimizer step updates: the trainable parameters, AdamW, its LR schedule, the GradScaler (enabled
    under fp16 only) and the autocast dtype (float32: no autocast)."""
    params: list[torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    dtype: torch.dtype


def _nonfinite_hint(dtype: torch.dtype, cfg: TrainConfig) -> str:
    """What to try after a non-finite loss or gradient, for this run's settings."""
    tips = []
    if dtype != torch.float32:
        tips.append(f"precision='fp32' (this run used {str(dtype).split('.')[-1]} autocast)")
    tips.append(f"a lower lr (this run: {cfg.lr:g})")
    if cfg.grad_clip <= 0:
        tips.append("grad_clip=1.0")
    tips.append("checking the data: python -m swinunetr_lib.data validate MANIFEST")
    return "try " + ", ".join(tips)


def check_finite(named: Mapping[str, torch.Tensor], what: str, step: int, dtype: torch.dtype, cfg: TrainConfig,
                 last_path: Path) -> None:
    """Raise :class:`NonFiniteLossError` on every rank when any of ``named`` (scalar tensors, one device) is NaN or
    inf on any rank. The message names ``what`` (``"loss"``, ``"gradient"``), the 1-based ``step``, this rank, every
    value of ``named``, the last good checkpoint and what to try. Waits for the device (and for the other ranks)."""
    values = torch.stack(list(named.values()))  # (len(named),)
    if bool(ddp.all_reduce_min(torch.isfinite(values).all().to(torch.int32))):
        return
    shown = ", ".join(f"{k}={v:.4g}" for k, v in zip(named, values.tolist(), strict=True))
    kept = f"last good checkpoint: {last_path}" if last_path.exists() else "no checkpoint written yet"
    raise NonFiniteLossError(f"non-finite {what} at step {step} (rank {ddp.rank()}): {shown}; "
                             f"stopped before the optimizer step; {kept}; {_nonfinite_hint(dtype, cfg)}")


def optimizer_step(net: nn.Module, step_fn: StepFn, batch: Any, device: torch.device, opt: Optimization,
                   cfg: TrainConfig, step: int, last_path: Path) -> tuple[dict[str, torch.Tensor], float]:
    """Optimizer step number ``step`` (1-based): ``step_fn(net, batch, device)`` under autocast, backward (scaled
    under fp16), a stop on a non-finite loss, clipping to ``cfg.grad_clip`` (after unscaling) and a stop on a
    non-finite gradient norm (except under fp16, where the GradScaler skips such a step by design), then AdamW, the
    GradScaler and the LR schedule move one step on.

    Returns ``step_fn``'s scalars detached as float32 0-d tensors, plus ``grad_norm`` when clipping, still on the
    device (nothing waits for them), and the learning rate this step used."""
    with torch.autocast(device.type, dtype=opt.dtype, enabled=opt.dtype != torch.float32):
        out = step_fn(net, batch, device)
    if "loss" not in out:
        raise KeyError(f"step_fn must return a dict with a 'loss' entry; got keys {sorted(out)}")
    terms = {k: v.detach().float() for k, v in out.items()}
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scaler.scale(out["loss"]).backward()
    # the finite check waits for the device: do it once backward is queued, not between forward and backward
    check_finite(terms, "loss", step, opt.dtype, cfg, last_path)
    if cfg.grad_clip > 0:
        opt.scaler.unscale_(opt.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(opt.params, cfg.grad_clip)
        terms["grad_norm"] = grad_norm.detach().float()
        # under fp16 the GradScaler skips such a step by design; otherwise clipping an inf norm would write
        # NaN into the weights (inf * 0) and the loss would only turn NaN steps later
        if not opt.scaler.is_enabled():
            check_finite({"grad_norm": terms["grad_norm"], "loss": terms["loss"]}, "gradient", step, opt.dtype, cfg,
                         last_path)
    lr = opt.optimizer.param_groups[0]["lr"]
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.scheduler.step()
    return terms, lr
