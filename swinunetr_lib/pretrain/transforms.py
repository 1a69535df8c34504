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
CUTOUT_MODES = ("single", "official")  # see InnerCutout


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
        raise ValueError(f"axial rotation needs a (B, C, X, Y, Z) batch with X == Y, "
                         f"got shape {tuple(x.shape)} (B, C, X, Y, Z)")
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


def _minmax_normal_extremes(volume: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per box of ``volume`` (B, N) voxels: the extremes (lo, hi) of that many standard normals, drawn exactly.

    The maximum of n i.i.d. N(0, 1) is ``Phi^-1(U^(1/n))``; the minimum is minus an independent copy. Given
    the extremes, the other voxels are i.i.d. normals truncated to [lo, hi], so ``(z - lo) / (hi - lo)``
    reproduces "fill the box with normal noise, min-max scaled to [0, 1] over the box" voxel for voxel in
    distribution, without materialising one noise tensor per box.
    """
    n = volume.clamp(min=1.0)
    u = torch.rand((2, *volume.shape), device=volume.device, generator=generator).clamp(min=1e-12)
    tail = -torch.expm1(torch.log(u) / n)                                   # 1 - U^(1/n), accurately
    hi, lo = -torch.special.ndtri(tail[0]), torch.special.ndtri(tail[1])
    return lo, hi


class InnerCutout:
    """Inner cutout (paper Sec. 3, "masked volume inpainting"): random boxes inside the sub-volume.

    Two modes (``mode``); the default is ``"single"``:

    - ``"single"`` (default; the paper's description: "up to 30 %" cut out, one pass): per sample a target
      fraction f ~ U(0, ``max_fraction``) is drawn. Boxes with sides U[``min_block``, ``max_block``] of each
      axis are placed fully inside the volume and taken in order until their summed volume reaches f (as the
      official code counts), so the covered fraction is at most f plus one box. Each box is filled, with
      probability ``noise_prob``, by uniform noise in [0, 1] (intensities are scaled to [0, 1]) or else by
      the same region of another sample of the batch (a sample alone in its batch gets noise only).
      Measured at 96^3: changed fraction mean 0.135 (5/50/95 % 0.020 / 0.150 / 0.237), noise std 0.289.
    - ``"official"`` (the official pretraining code, ``aug_rand``): two passes per sample. Pass 1 draws
      f ~ U(0, ``max_fraction``) and boxes with starts U{0 .. S - t - 1}, sides U{t .. m - 1} (t =
      ``int(min_block * S)``, m = ``int(max_block * S)``) clipped at the far border, until f is reached,
      each filled with normal noise min-max scaled to [0, 1] over the box (std ~0.15). Pass 2 picks a
      batch index j ~ U{0 .. B - 1}; if j differs from the sample (probability (B - 1) / B) it draws a
      fresh set of boxes the same way and copies sample j's content there; samples are processed in order,
      so an earlier j gives its already cut-out content, a later one its original. ``noise_prob`` is not
      used. Measured at 96^3 with B = 4: changed fraction mean ~0.22 (5/50/95 % ~0.05 / 0.22 / 0.36).

    Why ``"single"`` is the default: it is what the paper states (at most ~30 % of a sub-volume), it keeps
    seeded runs and checkpoints made before the option existed reproducible, and ``"official"`` is one
    setting away (``PretrainConfig.cutout_mode``) for matching the released weights' training.

    Call: ``(x (B, C, X, Y, Z), generator) -> (cut (B, C, X, Y, Z), mask (B, 1, X, Y, Z) bool)``.
    ``last_noise_mask`` keeps the (B, 1, X, Y, Z) voxels of the last call whose final value is noise.
    """

    def __init__(self, max_fraction: float = 0.3, min_block: float = 0.05, max_block: float = 0.25,
                 max_boxes: int | None = None, noise_prob: float = 0.5, mode: str = "single") -> None:
        if not 0.0 <= max_fraction < 1.0 or not 0.0 < min_block <= max_block <= 1.0:
            raise ValueError(f"InnerCutout: need 0 <= max_fraction < 1 and 0 < min_block <= max_block <= 1, got "
                             f"max_fraction={max_fraction}, min_block={min_block}, max_block={max_block}")
        if mode not in CUTOUT_MODES:
            raise ValueError(f"InnerCutout: mode must be one of {CUTOUT_MODES}, got {mode!r}")
        if not 0.0 <= noise_prob <= 1.0:
            raise ValueError(f"InnerCutout: noise_prob must be in [0, 1], got {noise_prob}")
        self.max_fraction, self.min_block, self.max_block = max_fraction, min_block, max_block
        # boxes drawn per sample and pass (the unused ones are masked out): the official mode's clipped boxes
        # are smaller, 256 keeps its budget from being cut short (128 would truncate ~2 % of the draws)
        self.max_boxes = max_boxes if max_boxes is not None else (256 if mode == "official" else 128)
        self.noise_prob, self.mode = noise_prob, mode
        self.last_noise_mask: torch.Tensor | None = None

    def _boxes(self, shape: torch.Size, device: torch.device, generator: torch.Generator,
               official: bool) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Box starts and lengths per axis, each (B, N) long, and which boxes are used, (B, N) bool."""
        b, n = shape[0], self.max_boxes
        starts, lengths, fracs = [], [], torch.ones(b, n, device=device)
        for size in shape[2:]:
            if official:  # sides U{t .. m-1}, starts U{0 .. S-t-1}, clipped at the border
                lo_len = max(1, int(self.min_block * size))
                hi_len = max(lo_len, int(self.max_block * size) - 1)
                n_starts = max(1, size - lo_len)
            else:         # sides U{round(min*S) .. round(max*S)}, fully inside
                lo_len = max(1, round(self.min_block * size))
                hi_len = max(lo_len, round(self.max_block * size))
            u = torch.rand(b, n, device=device, generator=generator)
            length = (lo_len + u * (hi_len - lo_len + 1)).long().clamp(max=hi_len)
            v = torch.rand(b, n, device=device, generator=generator)
            if official:
                start = (v * n_starts).long().clamp(max=n_starts - 1)
                length = torch.minimum(length, size - start)
            else:
                start = (v * (size - length + 1)).long()
            starts.append(start)
            lengths.append(length)
            fracs = fracs * length / size
        target = torch.rand(b, 1, device=device, generator=generator) * self.max_fraction
        active = (torch.cumsum(fracs, dim=1) - fracs) < target                  # (B, N): official stop rule
        return starts, lengths, active

    @staticmethod
    def _cover(spatial: torch.Size, starts: list[torch.Tensor], lengths: list[torch.Tensor],
               weights: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per weight (B, N): sum over boxes of weight * indicator, as (B, 1, X, Y, Z) float."""
        b = starts[0].shape[0]
        ix, iy, iz = (_axis_indicator(s, lo, ln) for s, lo, ln in zip(spatial, starts, lengths, strict=True))
        yz = (iy[..., :, None] * iz[..., None, :]).flatten(2)                    # (B, N, Y*Z)
        return [torch.bmm((ix * w[..., None]).transpose(1, 2), yz).view(b, 1, *spatial) for w in weights]

    def sample_masks(self, shape: torch.Size, device: torch.device,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Single mode: (noise_mask, swap_mask), each (B, 1, X, Y, Z) bool, disjoint."""
        b, n = shape[0], self.max_boxes
        starts, lengths, active = self._boxes(shape, device, generator, official=False)
        noise = torch.rand(b, n, device=device, generator=generator) < self.noise_prob
        if b == 1:
            noise = torch.ones_like(noise)
        counts = self._cover(shape[2:], starts, lengths, [(active & noise).float(), (active & ~noise).float()])
        noise_mask, swap_mask = (c > 0.5 for c in counts)
        return noise_mask, swap_mask & ~noise_mask

    def _official(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        b, c = x.shape[:2]
        spatial = x.shape[2:]
        # pass 1: boxes of normal noise, min-max scaled per box
        starts, lengths, active = self._boxes(x.shape, x.device, generator, official=True)
        volume = c * torch.stack(lengths).prod(dim=0).float()                   # (B, N) voxels per box
        lo, hi = _minmax_normal_extremes(volume, generator)
        act = active.float()
        count, sum_lo, sum_hi = self._cover(spatial, starts, lengths, [act, act * lo, act * hi])
        mask1 = count > 0.5
        lo_v, hi_v = sum_lo / count.clamp(min=1), sum_hi / count.clamp(min=1)  # overlaps: mean of the boxes' extremes
        lo_v, hi_v = lo_v.expand(x.shape), hi_v.expand(x.shape)
        p_lo, p_hi = torch.special.ndtr(lo_v), torch.special.ndtr(hi_v)
        u = torch.rand(x.shape, device=x.device, generator=generator)
        z = torch.special.ndtri((p_lo + u * (p_hi - p_lo)).clamp(1e-7, 1 - 1e-7))
        fill = ((z - lo_v) / (hi_v - lo_v).clamp(min=1e-6)).clamp(0, 1)
        out = torch.where(mask1, fill.to(x.dtype), x)
        # pass 2: with probability (B-1)/B per sample, boxes copied from sample j (in loop order, as official)
        partner = torch.randint(0, b, (b,), device=x.device, generator=generator)
        starts, lengths, active = self._boxes(x.shape, x.device, generator, official=True)
        active = active & (partner != torch.arange(b, device=x.device))[:, None]
        mask2 = self._cover(spatial, starts, lengths, [active.float()])[0] > 0.5
        for i in range(b):
            src = out.index_select(0, partner[i:i + 1])
            out[i:i + 1] = torch.where(mask2[i:i + 1], src, out[i:i + 1])
        self.last_noise_mask = mask1 & ~mask2
        return out, mask1 | mask2

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(x.device.type, enabled=False):
            if self.mode == "official":
                return self._official(x, generator)
            noise_mask, swap_mask = self.sample_masks(x.shape, x.device, generator)
            b = x.shape[0]
            shift = torch.randint(1, max(b, 2), (b,), device=x.device, generator=generator)
            partner = (torch.arange(b, device=x.device) + shift) % b                # never the sample itself
            noise = torch.rand(x.shape, device=x.device, generator=generator, dtype=x.dtype)
            out = torch.where(noise_mask, noise, x)
            out = torch.where(swap_mask, x[partner], out)
        self.last_noise_mask = noise_mask
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
