"""Swin UNETR for segmentation fine-tuning, with its encoder initialised from scratch or a checkpoint.

The network is MONAI's :class:`~monai.networks.nets.SwinUNETR` (Tang et al., CVPR 2022, Sec. 3 and
Fig. 2: Swin Transformer encoder ``swinViT`` + CNN decoder). Three initialisations:

- ``"scratch"``: random weights everywhere;
- our SSL pretraining: a full checkpoint whose state dict holds the encoder under SwinUNETR's own
  ``swinViT.*`` keys, or the exported encoder in the official layout (below);
- the official ``model_swinvit.pt``: ``{"state_dict": {"module.patch_embed.proj.weight", ...,
  "module.layers1.0.blocks.0.mlp.fc1.weight", ...}}``.

:func:`resolve_init` turns an initialisation name (``scratch``, ``ssl``, ``official``, ``auto``) into the checkpoint
to start from; :func:`read_encoder_checkpoint` reads it once for both :func:`encoder_feature_size` and
:func:`load_encoder`.

Unlike the official fine-tuning script, which calls ``load_state_dict(strict=False)`` after a key
rewrite that matches nothing and so silently loads no weights, :func:`load_encoder` counts what it
loaded and raises :class:`EncoderLoadError` unless every encoder tensor was loaded (pass
``allow_partial=True`` to accept a partial load knowingly).
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import SwinUNETR

from ..paths import resolve_path, runs_dir
from ..utils.files import CheckpointError, load_checkpoint_mapping, safe_torch_load

ENCODER_PREFIX = "swinViT."
# The relative position index is a constant buffer computed from the window size; a checkpoint may
# omit it without losing anything, but if present it must match.
_DERIVED_BUFFERS = ("attn.relative_position_index",)
# Official / timm Swin naming -> MONAI naming inside the encoder.
_RENAMES = ((".mlp.fc1.", ".mlp.linear1."), (".mlp.fc2.", ".mlp.linear2."), ("swin_vit.", "swinViT."))
_ENCODER_ROOTS = ("patch_embed.", "layers1.", "layers2.", "layers3.", "layers4.")


class EncoderLoadError(RuntimeError):
    """A pretrained checkpoint does not provide every encoder tensor of the model."""


@dataclasses.dataclass
class LoadReport:
    """What :func:`load_encoder` did. ``loaded + len(missing) == number of encoder tensors``."""

    source: str
    layout: str  # "official" (module.* keys) or "swinunetr" (swinViT.* keys)
    loaded: int
    total: int
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]  # present but with another shape (e.g. another feature_size)
    adapted: list[str]  # patch embedding widened from 1 to C input channels

    def summary(self) -> str:
        return (f"{self.source}: loaded {self.loaded}/{self.total} encoder tensors ({self.layout} layout); "
                f"missing {len(self.missing)}, shape-mismatched {len(self.mismatched)}, "
                f"unexpected {len(self.unexpected)}, adapted {len(self.adapted)}")


SSL_EXPORT = Path("ssl_pretraining") / "model_swinvit.pt"  # under runs_dir(), written by notebook 02


def resolve_init(init: str, pretrained: str = "") -> tuple[str, Path | None]:
    """``(kind, checkpoint)`` for an initialisation name (Sec. 4.2: scratch vs. self-supervised).

    ``scratch``; ``ssl`` (our SSL run: ``pretrained`` or ``runs_dir()/ssl_pretraining/model_swinvit.pt``);
    ``official`` (the released ``model_swinvit.pt``, path in ``pretrained``); ``auto``: ``ssl`` when our
    export exists, else ``scratch``.
    """
    default = runs_dir() / SSL_EXPORT
    if init == "auto":
        init = "ssl" if (pretrained and resolve_path(pretrained).is_file()) or default.is_file() else "scratch"
    if init == "scratch":
        return "scratch", None
    if init not in ("ssl", "official"):
        raise ValueError(f"init={init!r}: expected scratch, ssl, official or auto")
    if init == "official" and not pretrained:
        raise ValueError("init='official' needs `pretrained` = path of the downloaded model_swinvit.pt")
    path = resolve_path(pretrained) if pretrained else default
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained encoder for init={init!r} not found"
                                + ("; run notebook 02_ssl_pretraining first" if not pretrained else ""))
    return init, path


def swinunetr_roi_problem(roi: Sequence[int]) -> str | None:
    """Why Swin UNETR cannot train on crops of ``roi`` (three multiples of 32), or None. Its bottleneck is 1/32
    of each side; a 32^3 crop leaves one voxel there, and instance norm fails on a single voxel."""
    if all(r == 32 for r in roi):
        return ("32^3 leaves one voxel at Swin UNETR's bottleneck, where instance norm fails: "
                "it needs at least 64 on one side")
    return None


def build_swinunetr(
    in_channels: int = 1,
    out_channels: int = 14,
    *,
    feature_size: int = 48,
    use_checkpoint: bool = False,
    dropout_path_rate: float = 0.0,
) -> SwinUNETR:
    """MONAI SwinUNETR with the paper's defaults (Sec. 4.1: feature size 48, depths (2, 2, 2, 2),
    heads (3, 6, 12, 24), window 7, patch 2). Input (B, in_channels, D, H, W) with D, H, W divisible by 32;
    output logits (B, out_channels, D, H, W). ``use_checkpoint`` turns on gradient checkpointing."""
    return SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size,
                     use_checkpoint=use_checkpoint, dropout_path_rate=dropout_path_rate)


def find_state_dict(obj: Any, source: str) -> Mapping[str, torch.Tensor]:
    """The tensor mapping inside a checkpoint: ``state_dict``, ``model``, ... or the object itself."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for key in ("state_dict", "model", "model_state_dict", "model_state", "network", "net"):
            if key in obj and isinstance(obj[key], Mapping):
                return find_state_dict(obj[key], source)
    raise EncoderLoadError(f"{source}: no state dict of tensors found (looked for the keys 'state_dict', "
                           f"'model', 'model_state_dict' or a plain mapping of tensors)")


def encoder_state_from_checkpoint(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str], str]:
    """Map checkpoint keys onto SwinUNETR's ``swinViT.*`` names.

    Handles ``module.`` (DataParallel / official), ``_orig_mod.`` (torch.compile) and any wrapper prefix
    before ``swinViT.``, and the official ``mlp.fc1/fc2`` names. Returns (encoder tensors, keys that are
    not encoder tensors, layout name).
    """
    mapped: dict[str, torch.Tensor] = {}
    other: list[str] = []
    official = 0
    for key, value in state.items():
        k = key
        for old, new in _RENAMES:
            k = k.replace(old, new)
        k = re.sub(r"(^|\.)(module|_orig_mod)\.", r"\1", k).lstrip(".")
        if ENCODER_PREFIX in k:
            k = k[k.index(ENCODER_PREFIX):]
        elif k.startswith(_ENCODER_ROOTS):
            k = ENCODER_PREFIX + k
            official += 1
        else:
            other.append(key)
            continue
        mapped[k] = value
    return mapped, other, ("official" if official > len(mapped) // 2 else "swinunetr")


def read_encoder_checkpoint(checkpoint: str | os.PathLike[str]) -> Mapping[str, Any]:
    """The object in a pretrained checkpoint file, read with ``weights_only=True`` (tensors and plain values
    only); a missing, unreadable or unsafe file, or one that holds no mapping, is an :class:`EncoderLoadError`
    naming it. Read it once and hand it to :func:`encoder_feature_size` and :func:`load_encoder`."""
    try:  # tensors and plain values only: a file that would run code when unpickled is refused
        return load_checkpoint_mapping(checkpoint, "pretrained checkpoint")
    except CheckpointError as err:
        raise EncoderLoadError(str(err)) from err


def load_encoder(
    model: SwinUNETR,
    checkpoint: str | os.PathLike[str] | Mapping[str, Any],
    *,
    allow_partial: bool = False,
    adapt_in_channels: bool = True,
    source: str | None = None,
) -> LoadReport:
    """Copy pretrained encoder weights into ``model.swinViT``; raise unless every tensor was loaded.

    ``checkpoint`` is a path (read by :func:`read_encoder_checkpoint`) or an already loaded object, named
    ``source`` in the report and in errors (default: the path, or ``<in-memory checkpoint>``). Keys outside
    the encoder (projection heads, decoder, optimizer) are reported as unexpected and ignored. A
    single-channel patch embedding (the official CT weights) is copied into every input channel and divided
    by C when the model takes C > 1 channels (``adapt_in_channels``), so a BraTS-style 4-channel model starts
    from CT weights.
    """
    if isinstance(checkpoint, Mapping):
        obj = checkpoint
        source = source or "<in-memory checkpoint>"
    else:
        obj = read_encoder_checkpoint(checkpoint)
        source = source or str(checkpoint)
    mapped, other, layout = encoder_state_from_checkpoint(find_state_dict(obj, source))

    target = {k: v for k, v in model.state_dict().items() if k.startswith(ENCODER_PREFIX)}
    to_copy: dict[str, torch.Tensor] = {}
    missing, mismatched, adapted = [], [], []
    for name, ref in target.items():
        if name not in mapped:
            if not name.endswith(_DERIVED_BUFFERS):
                missing.append(name)
            continue
        value = mapped[name]
        if value.shape != ref.shape and adapt_in_channels and name.endswith("patch_embed.proj.weight") \
                and value.ndim == ref.ndim and value.shape[1] == 1 and value.shape[0] == ref.shape[0] \
                and value.shape[2:] == ref.shape[2:]:
            value = value.repeat(1, ref.shape[1], *([1] * (ref.ndim - 2))) / ref.shape[1]
            adapted.append(name)
        if value.shape != ref.shape:
            mismatched.append(f"{name}: checkpoint {tuple(value.shape)} vs model {tuple(ref.shape)}")
            continue
        to_copy[name] = value
    unexpected = other + [k for k in mapped if k not in target]
    required = [k for k in target if not k.endswith(_DERIVED_BUFFERS)]
    loaded = sum(1 for k in to_copy if not k.endswith(_DERIVED_BUFFERS))
    report = LoadReport(source, layout, loaded, len(required), missing, unexpected, mismatched, adapted)
    if (missing or mismatched) and not allow_partial:
        detail = "; ".join((mismatched + missing)[:5])
        raise EncoderLoadError(
            f"{report.summary()}. Every encoder tensor must load (pass allow_partial=True to accept a "
            f"partial load). First problems: {detail}. Is the checkpoint for this feature_size "
            f"({model.swinViT.patch_embed.proj.out_channels}) and a Swin UNETR encoder?")
    if loaded == 0:
        raise EncoderLoadError(f"{report.summary()}: nothing to load, even with allow_partial=True")
    with torch.no_grad():
        params = dict(model.state_dict(keep_vars=True))
        for name, value in to_copy.items():
            params[name].copy_(value.to(params[name].dtype))
    return report


def encoder_feature_size(checkpoint: str | os.PathLike[str] | Mapping[str, Any]) -> int | None:
    """The ``feature_size`` of the encoder in ``checkpoint`` (a path or the object :func:`read_encoder_checkpoint`
    returned; any layout :func:`load_encoder` reads): the output channels of its patch embedding,
    (feature_size, in_channels, 2, 2, 2). ``None`` when it cannot be told; then :func:`load_encoder` reports
    what is wrong with the checkpoint."""
    try:
        obj = checkpoint if isinstance(checkpoint, Mapping) else safe_torch_load(checkpoint)
        mapped, _, _ = encoder_state_from_checkpoint(find_state_dict(obj, str(checkpoint)))
    except Exception:  # load_encoder names the problem
        return None
    weight = mapped.get(ENCODER_PREFIX + "patch_embed.proj.weight")
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.ndim == 5 else None


def feature_size_warning(source: str | os.PathLike[str], encoder_size: int, requested: int,
                         default: int = 48) -> str:
    """The loud note printed when ``init="ssl"`` (or ``official``) makes fine-tuning take the encoder's feature size
    ``encoder_size`` instead of the ``requested`` one: the run is then a different model size, and its scores are not
    comparable with runs at ``default`` (notebook 03's default, the paper's 48)."""
    rule = "!" * 100
    return (f"{rule}\nWARNING: {source}: the pretrained encoder has feature size {encoder_size}; fine-tuning at "
            f"feature_size={encoder_size} instead of {requested}.\nThis run's Dice and HD95 are NOT comparable with "
            f"runs at feature_size={default} (the default, e.g. init='scratch'): compare with init='scratch' at "
            f"feature_size={encoder_size} (notebook 06 does).\n{rule}")


def build_finetune_model(
    in_channels: int,
    out_channels: int,
    *,
    feature_size: int = 48,
    pretrained: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    allow_partial: bool = False,
    use_checkpoint: bool = False,
    dropout_path_rate: float = 0.0,
    source: str | None = None,
) -> tuple[SwinUNETR, LoadReport | None]:
    """Build SwinUNETR; ``pretrained=None`` is "scratch", else the encoder loads from that checkpoint
    (our SSL checkpoint, our exported encoder or the official ``model_swinvit.pt``), given as a path or as
    the object :func:`read_encoder_checkpoint` read from the file ``source``."""
    model = build_swinunetr(in_channels, out_channels, feature_size=feature_size,
                            use_checkpoint=use_checkpoint, dropout_path_rate=dropout_path_rate)
    report = None if pretrained is None else load_encoder(model, pretrained, allow_partial=allow_partial,
                                                           source=source)
    return model, report
