"""Self-supervised Swin UNETR encoder with rotation, contrastive and inpainting heads
(Tang et al. 2022, Sec. 3, Fig. 1).

The encoder is MONAI's :class:`~monai.networks.nets.swin_unetr.SwinTransformer` built with exactly the
arguments :class:`~monai.networks.nets.SwinUNETR` uses for its ``swinViT`` (patch 2, window 7,
depths 2-2-2-2, heads 3-6-12-24, feature size 48, no patch norm, "merging" downsampling), and it is
stored under the same attribute name, so ``SSLModel.state_dict()``'s ``swinViT.*`` entries load
into a SwinUNETR unchanged. :func:`export_encoder` writes the official ``model_swinvit.pt`` layout
for ``SwinUNETR.load_from``.

Unlike the official code, which reads the rotation and contrastive heads from a single token of the
last stage, both heads here read globally average-pooled last-stage features.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
from monai.networks.nets.swin_unetr import SwinTransformer, SwinUNETR
from monai.utils import ensure_tuple_rep
from torch import nn

from ..models.window_attention import use_sdpa_window_attention
from ..utils.distributed import unwrap
from ..utils.files import atomic_torch_save, safe_torch_load


class ProjectionHead(nn.Module):
    """Small generic head: ``Linear`` when ``hidden_dim`` is None, else ``Linear-GELU-Linear``.

    (B, in_dim) -> (B, out_dim).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        if hidden_dim is None:
            self.net: nn.Module = nn.Linear(in_dim, out_dim)
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ReconstructionDecoder(nn.Module):
    """Upsample last-stage features (B, 16F, D/32, H/32, W/32) back to the input (B, C, D, H, W).

    ``kind="upsample"`` (default): five stages of ``trilinear x2 upsampling -> Conv3d(k=3) -> InstanceNorm ->
    LeakyReLU``, halving the channels (16F -> 8F -> ... -> F/2): the "resize-convolution" that Odena et al.
    (Distill 2016) recommend against checkerboard artefacts. The official decoder has the same layers with the
    upsampling last in each stage; upsampling first also lets the 32^3 sub-volumes whose last stage is one
    voxel be normalised (InstanceNorm needs more than one voxel). ``kind="transposed"``: five ``ConvTranspose3d(k=2,
    s=2) -> InstanceNorm -> LeakyReLU`` stages instead; cheaper, but a stride-2 transposed convolution paints the same
    2x2x2 pattern into every output cell, so an undertrained decoder draws a checkerboard rather than a blurry volume.
    Both end in a 1x1x1 convolution to ``out_channels``, with no output activation: targets are intensities in [0, 1]
    and the loss is L1, as in the official code.
    """

    def __init__(self, in_channels: int, out_channels: int = 1, num_upsamples: int = 5,
                 kind: Literal["upsample", "transposed"] = "upsample") -> None:
        super().__init__()
        if kind not in ("upsample", "transposed"):
            raise ValueError(f"decoder kind must be 'upsample' or 'transposed', got {kind!r}")
        layers: list[nn.Module] = []
        ch = in_channels
        for _ in range(num_upsamples):
            if kind == "upsample":
                layers += [nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
                           nn.Conv3d(ch, ch // 2, kernel_size=3, padding=1), nn.InstanceNorm3d(ch // 2),
                           nn.LeakyReLU(0.01, inplace=True)]
            else:
                layers += [nn.ConvTranspose3d(ch, ch // 2, kernel_size=2, stride=2),
                           nn.InstanceNorm3d(ch // 2), nn.LeakyReLU(0.01, inplace=True)]
            ch //= 2
        layers.append(nn.Conv3d(ch, out_channels, kernel_size=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


SWIN_UNETR_DECODER_BLOCKS = ("encoder1", "encoder2", "encoder3", "encoder4", "encoder10",
                             "decoder5", "decoder4", "decoder3", "decoder2", "decoder1", "out")


class SwinUNETRDecoder(nn.Module):
    """Swin UNETR's own CNN decoder, with skip connections from the input and every encoder stage.

    The blocks are MONAI ``SwinUNETR``'s (``encoder1-4``, ``encoder10``, ``decoder5-1``, ``out``), taken from a
    ``SwinUNETR`` built with the same ``feature_size``, so they carry the same names and shapes as the decoder
    that fine-tuning trains. ``forward(x, hidden)``: ``x`` the input (B, C, D, H, W) and ``hidden`` the
    encoder's five layer-normalised stages (B, F*2^i, D/2^(i+1), ...) -> (B, C, D, H, W).

    Why offer it for inpainting: the visible voxels reach the output through the skips, so the training signal
    concentrates on the cut-out boxes, which the deeper stages must fill from their surroundings (the U-Net
    restoration of Models Genesis, Zhou et al. 2019). The paper's decoder starts from the last stage alone; at
    64^3 that is 2^3 voxels, and a short CPU run reconstructs a smooth grey volume from it. Needs every spatial
    size >= 64 (the bottleneck block's InstanceNorm needs more than one voxel).
    """

    def __init__(self, in_channels: int, feature_size: int) -> None:
        super().__init__()
        net = SwinUNETR(in_channels=in_channels, out_channels=in_channels, feature_size=feature_size)
        for name in SWIN_UNETR_DECODER_BLOCKS:
            self.add_module(name, getattr(net, name))

    def forward(self, x: torch.Tensor, hidden: Sequence[torch.Tensor]) -> torch.Tensor:
        dec4 = self.encoder10(hidden[4])
        dec3 = self.decoder5(dec4, hidden[3])
        dec2 = self.decoder4(dec3, self.encoder4(hidden[2]))
        dec1 = self.decoder3(dec2, self.encoder3(hidden[1]))
        dec0 = self.decoder2(dec1, self.encoder2(hidden[0]))
        return self.out(self.decoder1(dec0, self.encoder1(x)))


DecoderKind = Literal["upsample", "transposed", "unet"]


class SSLModel(nn.Module):
    """Swin UNETR encoder + rotation (4-way), contrastive (512-d) and reconstruction heads.

    Defaults are the paper's (Sec. 4 "Implementation details"; MONAI SwinUNETR defaults except
    ``feature_size=48``). Input (B, C, D, H, W) with every spatial size divisible by 32. Output dict:
    ``rotation`` (B, 4) logits, ``contrastive`` (B, 512) embedding, ``reconstruction`` (B, C, D, H, W).
    ``decoder`` picks the reconstruction head: ``"upsample"`` (default, the paper's: from the last stage alone,
    resize-convolution) or ``"transposed"`` (:class:`ReconstructionDecoder`), or ``"unet"`` (Swin UNETR's decoder
    with skip connections, :class:`SwinUNETRDecoder`; sub-volumes of 64^3 or more).
    ``sdpa_attention=True`` computes the same window attention with one fused
    ``scaled_dot_product_attention`` call (:mod:`swinunetr_lib.models.window_attention`); weights are identical.
    """

    def __init__(self, in_channels: int = 1, feature_size: int = 48, depths: Sequence[int] = (2, 2, 2, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7, patch_size: int = 2,
                 dropout_path_rate: float = 0.0, use_checkpoint: bool = False, num_rotations: int = 4,
                 contrastive_dim: int = 512, head_hidden_dim: int | None = None,
                 sdpa_attention: bool = False, decoder: DecoderKind = "upsample") -> None:
        super().__init__()
        if feature_size % 12 != 0:
            raise ValueError(f"feature_size={feature_size} must be divisible by 12 (as in SwinUNETR)")
        # Same arguments as SwinUNETR.__init__ passes to SwinTransformer (MONAI 1.6), spatial_dims=3.
        self.swinViT = SwinTransformer(
            in_chans=in_channels, embed_dim=feature_size, window_size=ensure_tuple_rep(window_size, 3),
            patch_size=ensure_tuple_rep(patch_size, 3), depths=depths, num_heads=num_heads, mlp_ratio=4.0,
            qkv_bias=True, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=dropout_path_rate,
            norm_layer=nn.LayerNorm, patch_norm=False, use_checkpoint=use_checkpoint, spatial_dims=3,
            downsample="merging", use_v2=False)
        self.patch_size = patch_size
        dim = feature_size * 2 ** len(depths)  # channels of the last stage's output (after its merging)
        self.rotation_head = ProjectionHead(dim, num_rotations, head_hidden_dim)
        self.contrastive_head = ProjectionHead(dim, contrastive_dim, head_hidden_dim)
        if decoder not in ("upsample", "transposed", "unet"):
            raise ValueError(f"decoder kind must be 'upsample', 'transposed' or 'unet', got {decoder!r}")
        self.decoder_kind = decoder
        self.decoder: nn.Module
        if decoder == "unet":
            self.decoder = SwinUNETRDecoder(in_channels, feature_size)
        else:
            self.decoder = ReconstructionDecoder(dim, in_channels, num_upsamples=len(depths) + 1, kind=decoder)
        if sdpa_attention:  # same function and weights, fused attention kernel (see models/window_attention.py)
            use_sdpa_window_attention(self)

    def _check_input(self, x: torch.Tensor, decoding: bool = False) -> None:
        factor = self.patch_size ** 5
        if x.ndim != 5 or any(s % factor for s in x.shape[2:]):
            raise ValueError(f"SSLModel expects (B, C, D, H, W) with spatial sizes divisible by {factor}, "
                             f"got shape {tuple(x.shape)}")
        if decoding and self.decoder_kind == "unet" and min(x.shape[2:]) < 2 * factor:
            raise ValueError(f"SSLModel(decoder='unet') needs spatial sizes of at least {2 * factor} (its bottleneck "
                             f"block normalises over the last stage's voxels), got shape {tuple(x.shape)}")

    def last_stage(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) -> the encoder's layer-normalised last stage (B, 16F, D/32, H/32, W/32)."""
        self._check_input(x)
        # Only the last stage is used: normalise it alone (normalize=True would layer-norm all five outputs).
        last = self.swinViT(x, normalize=False)[-1]
        return self.swinViT.proj_out(last, normalize=True)

    def rotation_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The rotation head alone, without the decoder: (B, C, D, H, W) -> (B, 4)."""
        return self.rotation_head(self.last_stage(x).mean(dim=(2, 3, 4)))

    def contrastive_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The contrastive head alone, without the decoder: (B, C, D, H, W) -> (B, 512)."""
        return self.contrastive_head(self.last_stage(x).mean(dim=(2, 3, 4)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.decoder_kind == "unet":        # every stage, layer-normalised as SwinUNETR does
            self._check_input(x, decoding=True)
            hidden = self.swinViT(x, normalize=True)
            last, reconstruction = hidden[-1], self.decoder(x, hidden)
        else:
            last = self.last_stage(x)          # (B, 16F, D/32, H/32, W/32)
            reconstruction = self.decoder(last)
        pooled = last.mean(dim=(2, 3, 4))      # (B, 16F): global average pooling
        return {"rotation": self.rotation_head(pooled), "contrastive": self.contrastive_head(pooled),
                "reconstruction": reconstruction}


def decoder_kind_of(state: Mapping[str, torch.Tensor]) -> DecoderKind:
    """Which reconstruction decoder an :class:`SSLModel` state dict holds, read from its tensor names."""
    if "decoder.encoder1.layer.conv1.conv.weight" in state:
        return "unet"
    return "transposed" if "decoder.net.0.weight" in state else "upsample"  # upsample: net.0 has no weights


def load_ssl_model(checkpoint: str | os.PathLike[str], device: str | torch.device = "cpu") -> SSLModel:
    """The full SSL model (encoder and heads) from a pretraining checkpoint (``fit``'s ``last.pt``), in eval mode.

    Read with weights-only unpickling; see :func:`ssl_model_from_checkpoint` (for a checkpoint already read).
    """
    path = Path(checkpoint)
    return ssl_model_from_checkpoint(safe_torch_load(path), path, device)


def ssl_model_from_checkpoint(state: object, source: str | os.PathLike[str],
                              device: str | torch.device = "cpu") -> SSLModel:
    """The SSL model held by a checkpoint already read (``fit``'s dict with ``"model"``, or the state dict itself),
    in eval mode. The feature size and input channels come from the patch embedding and the decoder kind from the
    tensor names. Anything else is a ``ValueError`` naming ``source``, the file it came from."""
    path = Path(source)
    state = state.get("model", state) if isinstance(state, Mapping) else state
    key = "swinViT.patch_embed.proj.weight"
    if not isinstance(state, Mapping) or key not in state:
        raise ValueError(f"{path}: not an SSL pretraining checkpoint (no {key}); expected fit's checkpoints/last.pt")
    w = state[key]  # (feature_size, in_channels, 2, 2, 2)
    model = SSLModel(in_channels=w.shape[1], feature_size=w.shape[0], decoder=decoder_kind_of(state))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path}: does not match SSLModel(feature_size={w.shape[0]}): "
                         f"{str(err).splitlines()[0]}") from None
    return model.to(device).eval()


def _to_official_key(key: str) -> str:
    """``layers1.0.blocks.0.mlp.linear1.weight`` -> ``module.layers1.0.blocks.0.mlp.fc1.weight``."""
    key = key.replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2.")
    return "module." + key


def encoder_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's tensors under SwinUNETR's names (``swinViT.*``), on CPU."""
    enc = unwrap(model).swinViT
    return {f"swinViT.{k}": v.detach().cpu().clone() for k, v in enc.state_dict().items()}


def export_encoder(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write the encoder as the official ``model_swinvit.pt``: ``{"state_dict": {"module.<key>": tensor}}``.

    ``model`` is anything with a ``swinViT`` encoder: an :class:`SSLModel` or a MONAI ``SwinUNETR``
    (possibly DDP / compile wrapped). Read it back with :func:`swinunetr_lib.models.swin_unetr.load_encoder`.

    MLP weights are renamed ``linear1/2 -> fc1/2`` as in the official file, so
    ``SwinUNETR(...).load_from(torch.load(path))`` fills every ``swinViT`` tensor. Atomic write.
    """
    state = {_to_official_key(k[len("swinViT."):]): v for k, v in encoder_state_dict(model).items()}
    return atomic_torch_save({"state_dict": state}, path)
