"""Window attention through ``F.scaled_dot_product_attention`` for training, on MONAI's Swin modules.

MONAI's :class:`~monai.networks.nets.swin_unetr.WindowAttention` writes the full attention matrix
(windows, heads, 343, 343) to memory several times per block — ``q @ k^T``, ``+ bias`` (which promotes
bf16 to fp32), ``+ mask``, softmax, a cast back — and keeps copies for the backward pass. At 96³ with
8 views that matrix is ~2 GB in bf16 in each first-stage block, so a training step is bound by memory
traffic. Its own ``use_flash_attention`` switch only applies without autograd (inference).

:func:`use_sdpa_window_attention` switches every ``WindowAttention`` of a model to
:class:`SDPAWindowAttention`, which computes the same function with one fused
``scaled_dot_product_attention`` call in training too. The relative position bias (and, for shifted
windows, the region mask) is passed as ``attn_mask``: built once per call as (1, windows x heads, N, N)
in the query's dtype, padded in memory to a multiple of 16 columns and broadcast over the batch with a
zero stride, so CUDA's memory-efficient kernel can read it as is (no per-window copy) and return its
gradient. Parameters, buffers and ``state_dict`` keys are unchanged, so checkpoints and the official
``model_swinvit.pt`` layout are unaffected. On a CPU, training gains nothing (PyTorch's math fallback), but
inference without autograd runs a fused CPU kernel that never writes the attention matrix: a 32³ crop through
a feature-12 encoder took 0.08 instead of 0.35 s here (2 cores, batch 16), which is why the probes of
:mod:`swinunetr_lib.experiments` switch their frozen encoders to it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import WindowAttention
from torch import nn

MASK_ALIGNMENT = 16  # columns; the memory-efficient kernel wants every non-unit stride a multiple of this


def aligned_bias(bias: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(..., N, N) -> the same values in ``dtype``, stored with rows padded to a multiple of 16 columns.

    The result is a view of shape (..., N, N); only its strides differ. Differentiable.
    """
    n = bias.shape[-1]
    return F.pad(bias.to(dtype), (0, (-n) % MASK_ALIGNMENT))[..., :n]


class SDPAWindowAttention(WindowAttention):
    """MONAI's ``WindowAttention`` evaluated with ``scaled_dot_product_attention`` (also under autograd).

    ``forward(x, mask)``: x (B*nW, N, C) tokens of nW windows per volume, mask (nW, N, N) additive region
    mask of shifted windows or None -> (B*nW, N, C). Same parameters and result as the parent class
    (up to floating-point rounding; under autocast the bias is added in bf16/fp16 rather than fp32).
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:  # type: ignore[override]
        b, n, c = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)                                                   # (B*nW, heads, N, c/heads)
        index = self.relative_position_index[:n, :n].reshape(-1)  # type: ignore[index]
        bias = self.relative_position_bias_table[index].reshape(n, n, heads).permute(2, 0, 1)  # (heads, N, N)
        if mask is None:
            attn_mask = aligned_bias(bias.unsqueeze(0), q.dtype).expand(b, heads, n, n)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
        else:
            # Fold the windows into the head dimension so one (nW*heads, N, N) bias serves every volume.
            nw = mask.shape[0]
            groups = b // nw
            full = (bias.unsqueeze(0) + mask.to(bias.dtype).unsqueeze(1)).reshape(1, nw * heads, n, n)
            attn_mask = aligned_bias(full, q.dtype).expand(groups, nw * heads, n, n)
            q, k, v = (t.reshape(groups, nw * heads, n, c // heads) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
            out = out.reshape(b, heads, n, c // heads)
        x = out.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


def use_sdpa_window_attention(model: nn.Module) -> int:
    """Switch every MONAI ``WindowAttention`` inside ``model`` to :class:`SDPAWindowAttention`, in place.

    Works for :class:`~swinunetr_lib.pretrain.model.SSLModel` and MONAI's ``SwinUNETR``. Nothing is copied or
    re-initialised: the modules keep their parameters, buffers and devices; only the class (the forward
    method) changes. Attention dropout must be 0 (the paper's setting). Returns how many were switched.
    """
    switched = 0
    for name, module in model.named_modules():
        if isinstance(module, WindowAttention) and not isinstance(module, SDPAWindowAttention):
            if len(module.window_size) != 3:
                raise ValueError(f"{name}: SDPA window attention supports 3D windows, got {module.window_size}")
            if module.attn_drop.p != 0.0:
                raise ValueError(f"{name}: SDPA window attention needs attn_drop_rate=0, got {module.attn_drop.p}")
            module.__class__ = SDPAWindowAttention
            switched += 1
    if switched == 0 and not any(isinstance(m, SDPAWindowAttention) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} has no MONAI WindowAttention to switch")
    return switched
