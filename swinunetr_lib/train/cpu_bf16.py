"""bf16 autocast on CPUs: keep the 3D convolutions that oneDNN gets wrong in fp32.

Measured with torch 2.13 (CPU build) on an AMD EPYC with AVX512-BF16 and no AMX: oneDNN's
``jit_bf16:avx512_core_bf16`` *backward-weights* kernel of a 3x3x3 ``Conv3d`` returns wrong weight
gradients (relative error 1 to 1e37, sometimes NaN) whenever the input depth D is 2, for 32 or more
channels and every H, W tried (1 to 64). Forward outputs and input gradients are right, and so is
every other depth (1, 3, 4, 5, 8, ... ). In Swin UNETR that is the bottleneck block (``encoder10``:
768 channels at 2 x 2 x 1 for a 64 x 64 x 32 ROI): its weights get garbage gradients, the gradient
norm turns inf, and a few steps later the loss is NaN — `make demo` failed one run in two that way.
MONAI's own fallback (oneDNN off) is right but slow, and fp32 for every convolution costs all of
bf16's speed-up on such a CPU (3.66 vs 2.74 s per step; fp32: 3.82 s).

:func:`keep_small_convs_fp32` therefore runs in fp32 exactly those convolutions whose input has a
spatial size of 2 or less in some axis (a margin around the failing depth 2); they are the smallest
layers of the network, so the cost is negligible. On CUDA, and outside CPU autocast, nothing changes.
"""
from __future__ import annotations

import functools
import types

import torch
from torch import nn

_CONVS = (nn.Conv3d, nn.ConvTranspose3d)
SMALL = 2  # a convolution whose input has a spatial size <= SMALL in any axis runs in fp32 under CPU bf16


def _guarded_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The module's own forward, in fp32 when CPU autocast is on and ``x`` (B, C, D, H, W) is small."""
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and min(x.shape[2:]) <= SMALL:
        with torch.autocast("cpu", enabled=False):
            return type(self).forward(self, x.float())
    return type(self).forward(self, x)


def keep_small_convs_fp32(model: nn.Module) -> int:
    """Make every 3D (transposed) convolution of ``model`` run in fp32 under CPU bf16 autocast when its
    input has a spatial axis of size <= 2 (see the module docstring). Idempotent; returns how many
    convolutions are guarded. Weights, state dicts and CUDA behaviour are unchanged."""
    n = 0
    for m in model.modules():
        if isinstance(m, _CONVS):
            if not getattr(m, "_swinunetr_fp32_guard", False):
                m.forward = types.MethodType(_guarded_forward, m)  # type: ignore[method-assign]
                m._swinunetr_fp32_guard = True  # type: ignore[attr-defined]
            n += 1
    return n


@functools.lru_cache(maxsize=1)
def cpu_bf16_conv3d_grad_is_wrong() -> bool:
    """True when this CPU's bf16 ``Conv3d`` weight gradient is wrong at depth 2 (the oneDNN bug above):
    a 48-channel 3x3x3 convolution over a (2, 4, 4) input, bf16 autocast against fp32. ~10 ms, cached."""
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv3d(48, 48, 3, padding=1)
    x = torch.randn(1, 48, 2, 4, 4, generator=gen)
    grad = torch.randn(1, 48, 2, 4, 4, generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    y.backward(grad.to(y.dtype))
    low = conv.weight.grad.detach().clone()
    conv.weight.grad = None
    conv(x).backward(grad)
    ref = conv.weight.grad.detach()
    err = float((low - ref).abs().max() / ref.abs().max())
    return not err < 0.05  # bf16 rounding gives ~0.005; NaN counts as wrong
