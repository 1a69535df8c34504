"""Frozen encoders and their features at every voxel, for the dense probe (:mod:`.dense_probe`).

Every encoder is a MONAI :class:`~monai.networks.nets.SwinUNETR` (``models.swin_unetr.build_swinunetr``) in eval
mode, gradients off. Three kinds, built so that an SSL arm and the random arm of the same ``seed`` differ only in
the swinViT weights:

- ``random``: ``torch.manual_seed(seed)``, then the model: every weight random (swinViT, encoder blocks, decoder).
- ``ssl``: the same ``torch.manual_seed(seed)`` and model, then ``load_encoder`` copies the pretrained swinViT
  (fit's ``last.pt`` of pretraining or an exported ``model_swinvit.pt``, read weights-only) over it. The
  **swinViT is pretrained; Swin UNETR's encoder blocks (encoder2/3/4/10) stay the random ones of ``seed``**,
  identical to the random arm's, because SSL pretraining trains the swinViT alone (pretrain/model.py).
- ``supervised``: a fine-tuned ``model.pt`` (``infer.predict.read_finetuned``, weights-only): every part trained.

Feature sources (``source``), all at stage-1 resolution (half the input; deeper stages upsampled trilinearly):

- ``"swinvit"``: the five layer-normalised swinViT hidden states (F, 2F, 4F, 8F, 16F channels; 31 F).
- ``"encoder"``: what Swin UNETR's decoder reads: encoder2(h0), encoder3(h1), encoder4(h2), h3 (the decoder's
  raw skip) and encoder10(h4) (again F .. 16F; 31 F). The full-resolution ``encoder1(x)`` (a convolution of the
  raw image) is left out. For the SSL arm the blocks are random (see above).

Input scaling is each encoder's own: pretraining's HU [-1000, 1000] -> [0, 1] (``probe.HU_RANGE``) for ``ssl``
and ``random``; the fine-tuning preset's window (BTCV [-175, 250] -> [0, 1]) for ``supervised``, read from the
checkpoint's metadata. Volumes are zero-padded (air in both scalings) to multiples of 32, centred.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import SwinUNETR
from scipy import ndimage

from ..finetune.task_presets import TaskPreset
from ..infer.predict import build_finetuned, read_finetuned
from ..models.swin_unetr import build_swinunetr, encoder_feature_size, load_encoder, read_encoder_checkpoint
from ..models.window_attention import use_sdpa_window_attention
from .probe import HU_RANGE

Source = Literal["encoder", "swinvit"]
INTENSITY_SIGMAS = (0.0, 1.0, 2.0, 4.0, 8.0)  # voxels: the intensity baseline's five smoothing scales


@dataclasses.dataclass
class FrozenEncoder:
    """One frozen encoder of the probe: ``kind`` ssl | random | supervised, its ``seed`` (random parts), the model
    and the HU range its input is scaled from to [0, 1]."""

    name: str
    kind: str
    seed: int
    model: SwinUNETR
    hu_range: tuple[float, float]


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, no gradients, and MONAI's window attention computed by one fused kernel (the same function,
    :mod:`swinunetr_lib.models.window_attention`; ~4x faster inference on a CPU)."""
    use_sdpa_window_attention(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def random_encoder(seed: int, feature_size: int = 12, out_channels: int = 14) -> FrozenEncoder:
    """Swin UNETR at random initialisation after ``torch.manual_seed(seed)``; pretraining's input scaling."""
    torch.manual_seed(seed)
    model = build_swinunetr(1, out_channels, feature_size=feature_size)
    return FrozenEncoder(f"random seed {seed}", "random", seed, _frozen(model), HU_RANGE)  # type: ignore[arg-type]


def ssl_encoder(checkpoint: str | os.PathLike[str], seed: int, out_channels: int = 14, *,
                loaded: object | None = None) -> FrozenEncoder:
    """The random encoder of ``seed`` with the pretrained swinViT of ``checkpoint`` loaded over it (every swinViT
    tensor must load, else :class:`~swinunetr_lib.models.swin_unetr.EncoderLoadError` naming the file).
    ``loaded``: the file as :func:`read_encoder_checkpoint` already read it (one read for several seeds)."""
    obj = loaded if loaded is not None else read_encoder_checkpoint(checkpoint)  # weights-only: a pickle that
    # would run code is refused
    size = encoder_feature_size(obj)
    if size is None:
        raise ValueError(f"{checkpoint}: no Swin UNETR encoder found (no patch embedding of 5 dimensions)")
    enc = random_encoder(seed, size, out_channels)
    load_encoder(enc.model, obj, source=str(checkpoint))
    return dataclasses.replace(enc, name="ssl", kind="ssl")


def supervised_encoder(checkpoint: str | os.PathLike[str], name: str = "supervised") -> FrozenEncoder:
    """A fine-tuned Swin UNETR (``model.pt`` of ``python -m swinunetr_lib.finetune``) with its preset's window."""
    ckpt = read_finetuned(checkpoint)
    preset = TaskPreset.from_dict(ckpt.meta["preset"])
    if preset.intensity != "ct_window" or int(ckpt.meta["in_channels"]) != 1:
        raise ValueError(f"{checkpoint}: the dense probe reads single-channel CT models; this one is "
                         f"{preset.intensity} with {ckpt.meta['in_channels']} channel(s)")
    model = build_finetuned(ckpt, device="cpu")
    return FrozenEncoder(name, "supervised", -1, _frozen(model), tuple(map(float, preset.window)))  # type: ignore[arg-type]


def scale_hu(image_hu: np.ndarray, hu_range: tuple[float, float]) -> np.ndarray:
    """HU clipped to ``hu_range`` and scaled to [0, 1] (MONAI ``ScaleIntensityRange(clip=True)``), float32."""
    lo, hi = hu_range
    return ((np.clip(image_hu, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def _pad_to_32(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """(1, 1, X, Y, Z) zero-padded, centred, to multiples of 32 (the first axis to >= 64 if all would be 32: one
    voxel at the bottleneck fails instance norm, ``swinunetr_roi_problem``); the padded tensor and the low pads."""
    pads, low = [], []
    small = all(n <= 32 for n in x.shape[2:])
    for i, n in enumerate(x.shape[2:]):
        extra = (-n) % 32 + (32 * ((n + 31) // 32 < 2) if small and i == 0 else 0)
        lo = (extra // 2) // 2 * 2  # even, so that stage 1 (half resolution) stays aligned with the voxels
        low.append(lo)
        pads.append((lo, extra - lo))
    flat = [v for p in reversed(pads) for v in p]  # F.pad wants the last axis first
    return F.pad(x, flat), low


SOURCES: tuple[str, ...] = ("encoder", "swinvit")


@torch.no_grad()
def swinvit_hidden(encoder: FrozenEncoder, image_hu: np.ndarray) -> tuple[list[torch.Tensor], list[int]]:
    """The five layer-normalised swinViT hidden states of ``image_hu`` (X, Y, Z), scaled by the encoder's range and
    padded by :func:`_pad_to_32`: ([(1, F, D/2..), (1, 2F, D/4..), ..., (1, 16F, D/32..)], the low pads)."""
    model = encoder.model
    x = torch.from_numpy(scale_hu(image_hu, encoder.hu_range))[None, None]
    xp, low = _pad_to_32(x)
    return list(model.swinViT(xp, model.normalize)), low


@torch.no_grad()
def features_from_hidden(model: SwinUNETR, hidden: Sequence[torch.Tensor], low: Sequence[int],
                         shape: Sequence[int], sources: Sequence[str] = SOURCES) -> dict[str, torch.Tensor]:
    """Stage-1 features of each of ``sources`` from swinViT ``hidden`` states (:func:`swinvit_hidden`), read through
    ``model``'s encoder blocks where the source says so, cropped to the image ``shape`` (X, Y, Z):
    ``{source: (31 F, ceil(X/2), ceil(Y/2), ceil(Z/2))}`` float32."""
    bad = [s for s in sources if s not in SOURCES]
    if bad or not sources:
        raise ValueError(f"source {bad or sources!r}: expected one or more of {list(SOURCES)}")
    stages = {"swinvit": list(hidden)}
    if "encoder" in sources:
        stages["encoder"] = [model.encoder2(hidden[0]), model.encoder3(hidden[1]), model.encoder4(hidden[2]),
                             hidden[3], model.encoder10(hidden[4])]
    half = [(n + 1) // 2 for n in shape]
    lo = [v // 2 for v in low]
    out = {}
    for name in sources:
        size = stages[name][0].shape[2:]
        feats = torch.cat([h if h.shape[2:] == size else F.interpolate(h, size=size, mode="trilinear",
                                                                       align_corners=False)
                           for h in stages[name]], dim=1)[0]
        out[name] = feats[:, lo[0]:lo[0] + half[0], lo[1]:lo[1] + half[1], lo[2]:lo[2] + half[2]].float().contiguous()
    return out


def dense_features_by_source(encoder: FrozenEncoder, image_hu: np.ndarray,
                             sources: Sequence[str] = SOURCES) -> dict[str, torch.Tensor]:
    """Features of ``encoder`` at every voxel of ``image_hu`` (X, Y, Z) at stage-1 resolution for each of
    ``sources`` from one forward pass: ``{source: (31 F, ceil(X/2), ceil(Y/2), ceil(Z/2))}`` float32 on the CPU
    (the five stages, deeper ones upsampled trilinearly, concatenated)."""
    if not sources or any(s not in SOURCES for s in sources):
        raise ValueError(f"source {list(sources)!r}: expected one or more of {list(SOURCES)}")
    hidden, low = swinvit_hidden(encoder, image_hu)
    return features_from_hidden(encoder.model, hidden, low, image_hu.shape, sources)


def dense_features(encoder: FrozenEncoder, image_hu: np.ndarray, source: Source = "encoder") -> torch.Tensor:
    """:func:`dense_features_by_source` for one ``source``: (31 F, ceil(X/2), ceil(Y/2), ceil(Z/2))."""
    return dense_features_by_source(encoder, image_hu, (source,))[source]


def to_grid(features: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """(C, x, y, z) features trilinearly resampled to the image grid ``shape`` (X, Y, Z) -> (C, X, Y, Z)."""
    if tuple(features.shape[1:]) == tuple(shape):
        return features
    return F.interpolate(features[None], size=tuple(shape), mode="trilinear", align_corners=False)[0]


def intensity_features(image_hu: np.ndarray, hu_range: tuple[float, float] = HU_RANGE,
                       sigmas: Sequence[float] = INTENSITY_SIGMAS) -> torch.Tensor:
    """The intensity baseline: the scaled image smoothed at each of ``sigmas`` (voxels; 0 = as is),
    (len(sigmas), X, Y, Z) float32."""
    img = scale_hu(image_hu, hu_range)
    return torch.from_numpy(np.stack([ndimage.gaussian_filter(img, s) if s > 0 else img for s in sigmas]))


def coordinate_features(shape: Sequence[int]) -> torch.Tensor:
    """Voxel coordinates scaled to [-1, 1] per axis, (3, X, Y, Z) float32."""
    axes = [torch.linspace(-1.0, 1.0, int(n)) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))
