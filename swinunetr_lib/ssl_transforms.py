"""Proxy-task augmentations, batched on the tensor's device (Tang et al. 2022, Sec. 3 and Fig. 1).

Axis convention. MONAI image tensors after ``LoadImaged`` + ``Orientationd("RAS")`` are (C, X, Y, Z)
per sample, (B, C, X, Y, Z) per batch — MONAI calls them (B, C, H, W, D) — with Z (superior) last.
"Rotation about the z axis" turns the axial (X, Y) plane: ``torch.rot90(x, k, dims=(2, 3))``, which
needs X == Y. (The official code rotates dims (2, 3) of a per-sample (C, H, W, D) tensor, i.e. the
(Y, Z) plane; we follow the paper's description of axial rotations.)

Nothing here loops over samples or boxes in Python with host round-trips: labels, box corners and
fill choices are drawn as tensors on the batch's device from a ``torch.Generator`` on that device,
and the cutout mask is built from per-axis box indicators with one batched matrix product.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

AXIAL_DIMS = (2, 3)  # (X, Y) of a (B, C, X, Y, Z) batch


def make_generator(device: torch.device | str, seed: int | None = None) -> torch.Generator:
    """A generator on ``device``; ``seed=None`` draws one from the global torch RNG (which ``fit`` seeds per step)."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(int(torch.randint(2**62, (1,)).item()) if seed is None else seed)
    return g


def rotate_axial(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate each sample of (B, C, X, Y, Z) by ``k[b] * 90`` degrees in the axial (X, Y) plane.

    ``k`` is a (B,) integer tensor on ``x.device``. ``rotate_axial(rotate_axial(x, k), (4 - k) % 4) == x``.
    Branch-free: the three non-trivial rotations are computed for the whole batch and selected per sample.
    """
    if x.ndim != 5 or x.shape[2] != x.shape[3]:
        raise ValueError(f"axial rotation needs a (B, C, X, Y, Z) batch with X == Y, got shape {tuple(x.shape)} (B, C, X, Y, Z)")
    k = k.to(x.device).view(-1, *([1] * (x.ndim - 1))) % 4
    out = x
    for turns in (1, 2, 3):
        out = torch.where(k == turns, torch.rot90(x, turns, dims=AXIAL_DIMS), out)
    return out


class RandomAxialRotation:
    """Rotation proxy task: k ~ U{0, 1, 2, 3} per sample; returns (rotated (B, C, X, Y, Z), labels (B,) long)."""

    num_classes = 4

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        k = torch.randint(0, 4, (x.shape[0],), device=x.device, generator=generator)
        return rotate_axial(x, k), k


def _axis_indicator(size: int, lo: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """(B, N) box starts/lengths -> (B, N, size) float indicator of ``lo <= i < lo + length``."""
    i = torch.arange(size, device=lo.device)
    return ((i >= lo[..., None]) & (i < (lo + length)[..., None])).float()


class InnerCutout:
    """Inner cutout (paper Sec. 3, "masked volume inpainting"): random boxes inside the sub-volume.

    Per sample a target fraction f ~ U(0, ``max_fraction``) is drawn (paper/official: 30 %). Boxes
    with sides U[``min_block``, ``max_block``] of each axis (official: 5 % - 25 %) are placed fully
    inside the volume and taken in order until their summed volume reaches f (as the official code
    counts), so the covered fraction is at most f plus one box. Each box is filled, with probability
    ``noise_prob``, by uniform noise in [0, 1] (intensities are scaled to [0, 1]) or else by the
    same region of another sample of the batch (a sample alone in its batch gets noise only).

    Call: ``(x (B, C, X, Y, Z), generator) -> (cut (B, C, X, Y, Z), mask (B, 1, X, Y, Z) bool)``.
    """

    def __init__(self, max_fraction: float = 0.3, min_block: float = 0.05, max_block: float = 0.25,
                 max_boxes: int = 128, noise_prob: float = 0.5) -> None:
        if not 0.0 <= max_fraction < 1.0 or not 0.0 < min_block <= max_block <= 1.0:
            raise ValueError(f"InnerCutout: need 0 <= max_fraction < 1 and 0 < min_block <= max_block <= 1, got "
                             f"max_fraction={max_fraction}, min_block={min_block}, max_block={max_block}")
        self.max_fraction, self.min_block, self.max_block = max_fraction, min_block, max_block
        self.max_boxes, self.noise_prob = max_boxes, noise_prob

    def sample_masks(self, shape: torch.Size, device: torch.device,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(noise_mask, swap_mask), each (B, 1, X, Y, Z) bool, disjoint."""
        b, n = shape[0], self.max_boxes
        spatial = shape[2:]
        starts, lengths, fracs = [], [], torch.ones(b, n, device=device)
        for size in spatial:
            lo_len = max(1, round(self.min_block * size))
            hi_len = max(lo_len, round(self.max_block * size))
            u = torch.rand(b, n, device=device, generator=generator)
            length = (lo_len + u * (hi_len - lo_len + 1)).long().clamp(max=hi_len)
            v = torch.rand(b, n, device=device, generator=generator)
            starts.append((v * (size - length + 1)).long())
            lengths.append(length)
            fracs = fracs * length / size
        target = torch.rand(b, 1, device=device, generator=generator) * self.max_fraction
        active = (torch.cumsum(fracs, dim=1) - fracs) < target                  # (B, N): official stop rule
        noise = torch.rand(b, n, device=device, generator=generator) < self.noise_prob
        if b == 1:
            noise = torch.ones_like(noise)
        ix, iy, iz = (_axis_indicator(s, lo, ln) for s, lo, ln in zip(spatial, starts, lengths))
        yz = (iy[..., :, None] * iz[..., None, :]).flatten(2)                    # (B, N, Y*Z)
        masks = []
        for pick in (noise, ~noise):
            w = ix * (active & pick)[..., None]                                  # (B, N, X)
            count = torch.bmm(w.transpose(1, 2), yz)                             # (B, X, Y*Z) boxes per voxel
            masks.append((count > 0.5).view(b, 1, *spatial))
        noise_mask, swap_mask = masks
        return noise_mask, swap_mask & ~noise_mask

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(x.device.type, enabled=False):
            noise_mask, swap_mask = self.sample_masks(x.shape, x.device, generator)
            b = x.shape[0]
            shift = torch.randint(1, max(b, 2), (b,), device=x.device, generator=generator)
            partner = (torch.arange(b, device=x.device) + shift) % b                # never the sample itself
            noise = torch.rand(x.shape, device=x.device, generator=generator, dtype=x.dtype)
            out = torch.where(noise_mask, noise, x)
            out = torch.where(swap_mask, x[partner], out)
        return out, noise_mask | swap_mask


@dataclass
class SSLView:
    """One augmented view: ``image`` (B, C, X, Y, Z) rotated + cut out (the network input), ``target``
    (B, C, X, Y, Z) rotated without cutout (the inpainting target), ``rotation`` (B,) labels 0..3,
    ``mask`` (B, 1, X, Y, Z) the cut-out voxels."""

    image: torch.Tensor
    target: torch.Tensor
    rotation: torch.Tensor
    mask: torch.Tensor


class SSLViewTransform:
    """Single view: random axial rotation, then inner cutout. ``(x, generator) -> SSLView``."""

    def __init__(self, rotate: bool = True, cutout: InnerCutout | None = None) -> None:
        self.rotation = RandomAxialRotation() if rotate else None
        self.cutout = InnerCutout() if cutout is None else cutout

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> SSLView:
        if x.ndim != 5:
            raise ValueError(f"expected a (B, C, X, Y, Z) batch, got shape {tuple(x.shape)}")
        if self.rotation is not None:
            rotated, labels = self.rotation(x, generator)
        else:
            rotated, labels = x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        image, mask = self.cutout(rotated, generator)
        return SSLView(image=image, target=rotated, rotation=labels, mask=mask)


class TwoViewTransform:
    """Two independent views of the same sub-volumes (paper Sec. 3: the contrastive pair)."""

    def __init__(self, view: SSLViewTransform | None = None) -> None:
        self.view = SSLViewTransform() if view is None else view

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> tuple[SSLView, SSLView]:
        return self.view(x, generator), self.view(x, generator)
