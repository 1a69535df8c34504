"""Baselines to read every number against: chance levels of the SSL losses, a trivial inpainting, an
all-background segmentation.

A loss or a score means little alone. Each function here gives the value a model would reach *without
learning anything*, at the settings in use:

- :func:`rotation_chance`: cross-entropy of a uniform guess over the 4 rotations, ln 4 ~ 1.386. By Gibbs'
  inequality no fixed guess does better on average when the labels are uniform (they are: k ~ U{0..3}).
- :func:`contrastive_chance`: NT-Xent (:class:`swinunetr_lib.pretrain.losses.ContrastiveLoss`) when all similarities
  are equal, ln(2N - 1) for N sub-volumes (2N views): the positive is one of the 2N - 1 candidates of each row.
  N is the batch the loss sees: ``batch_size * num_samples`` per process, times the number of processes with
  ``contrastive_negatives="global"`` (:func:`ssl_batch_subvolumes`). N = 1 gives 0 (no negatives).
- :func:`trivial_fill` / :func:`trivial_fill_l1`: inpaint each cut-out box with the mean of the voxels the
  model can see (the visible voxels of that crop) and copy the visible voxels: the L1 inside the cut-outs,
  or over the whole crop (what :class:`swinunetr_lib.pretrain.losses.ReconstructionLoss` averages). With
  ``copy_visible=False`` every voxel gets that mean: the L1 of a decoder whose output ignores its input
  (a constant image), the reconstruction loss's chance level.
- :func:`all_background_dice`: Dice per organ of a prediction that is background everywhere (0 for every
  organ present, NaN for an absent one, as MONAI's ``DiceMetric(ignore_empty=True)``).
- :func:`add_baselines`: dashed reference lines on the panels of
  :func:`swinunetr_lib.viz.curves.plot_learning_curves`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from matplotlib.figure import Figure

from ..finetune.sliding_window import dice_scores


def rotation_chance(num_classes: int = 4) -> float:
    """Cross-entropy of the uniform guess over ``num_classes`` rotations: ln(num_classes) (4 in the paper, Sec. 3)."""
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes} must be >= 1")
    return math.log(num_classes)


def ssl_batch_subvolumes(batch_size: int, num_samples: int, world_size: int = 1,
                         contrastive_negatives: str = "global") -> int:
    """N, the sub-volumes the contrastive loss contrasts per step: ``batch_size * num_samples`` per process
    (each volume gives ``num_samples`` crops), times ``world_size`` when negatives are gathered ("global")."""
    if min(batch_size, num_samples, world_size) < 1:
        raise ValueError(f"batch_size={batch_size}, num_samples={num_samples}, world_size={world_size}: "
                         "each must be >= 1")
    if contrastive_negatives not in ("global", "per_gpu"):
        raise ValueError(f"contrastive_negatives={contrastive_negatives!r}: expected 'global' or 'per_gpu'")
    n = batch_size * num_samples
    return n * world_size if contrastive_negatives == "global" else n


def contrastive_chance(n_subvolumes: int) -> float:
    """NT-Xent with all similarities equal, for N sub-volumes (2N views): ln(2N - 1); 0 for N = 1.

    Each of the 2N rows is a softmax over the 2N - 1 other views, one of which is the positive
    (:class:`swinunetr_lib.pretrain.losses.ContrastiveLoss`); embeddings that carry no information give each the
    probability 1 / (2N - 1), whatever the temperature.
    """
    if n_subvolumes < 1:
        raise ValueError(f"n_subvolumes={n_subvolumes} must be >= 1")
    return math.log(2 * n_subvolumes - 1)


def trivial_fill(image: torch.Tensor, mask: torch.Tensor, *, copy_visible: bool = True) -> torch.Tensor:
    """The inpainting that learns nothing: visible voxels copied, each cut-out voxel set to its crop's mean
    visible intensity (``copy_visible=False``: every voxel set to that mean). ``image`` (B, C, X, Y, Z),
    ``mask`` (B, 1, X, Y, Z) bool (True: cut out) -> (B, C, X, Y, Z).

    ``image`` may be the uncorrupted target: only its visible voxels are read."""
    if image.ndim != 5 or mask.ndim != 5 or mask.shape[0] != image.shape[0] or mask.shape[2:] != image.shape[2:]:
        raise ValueError(f"expected image (B, C, X, Y, Z) and mask (B, 1, X, Y, Z); got {tuple(image.shape)} "
                         f"and {tuple(mask.shape)}")
    visible = (~mask.bool()).expand_as(image).float()
    mean = (image.float() * visible).sum(dim=(1, 2, 3, 4)) / visible.sum(dim=(1, 2, 3, 4)).clamp(min=1)
    fill = mean.view(-1, 1, 1, 1, 1).to(image.dtype)
    return torch.where(mask.bool().expand_as(image), fill, image) if copy_visible else fill.expand_as(image).clone()


def trivial_fill_l1(target: torch.Tensor, mask: torch.Tensor, *, region: str = "cutout",
                    copy_visible: bool = True) -> float:
    """L1 of :func:`trivial_fill` against ``target`` (B, C, X, Y, Z): averaged over the cut-out voxels
    (``region="cutout"``) or over every voxel (``"all"``, comparable with the logged reconstruction loss)."""
    if region not in ("cutout", "all"):
        raise ValueError(f"region={region!r}: expected 'cutout' or 'all'")
    err = (trivial_fill(target, mask, copy_visible=copy_visible) - target).abs().float()
    if region == "all":
        return float(err.mean())
    inside = mask.bool().expand_as(target)
    if not inside.any():
        raise ValueError("trivial_fill_l1: the mask cuts out no voxel")
    return float(err[inside].mean())


def all_background_dice(label: torch.Tensor | np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class Dice (classes 1..K-1) of an all-background prediction against ``label`` (B, 1, X, Y, Z) or
    (X, Y, Z) ids: 0 where the class is present, NaN where absent (MONAI ``DiceMetric``, ``ignore_empty``)."""
    y = torch.as_tensor(np.asarray(label) if not isinstance(label, torch.Tensor) else label).long()
    if y.ndim == 3:
        y = y[None, None]
    if y.ndim != 5:
        raise ValueError(f"label must be (X, Y, Z) or (B, 1, X, Y, Z) ids; got shape {tuple(y.shape)}")
    return dice_scores(torch.zeros_like(y), y, num_classes)


def add_baselines(fig: Figure, lines: Mapping[str, Mapping[str, float]]) -> Figure:
    """Dashed horizontal reference lines on the panels of ``plot_learning_curves`` (titled by column):
    ``lines = {"rotation": {"chance ln 4": 1.386}, ...}``; each panel gets a legend. Returns ``fig``."""
    styles = ("--", ":", "-.")
    found = set()
    for ax in fig.axes:
        col = ax.get_title()
        for i, (name, value) in enumerate(lines.get(col, {}).items()):
            ax.axhline(value, color="k", ls=styles[i % len(styles)], lw=1, label=f"{name} {value:.4g}")
            found.add(col)
        if col in lines:
            ax.legend(fontsize=7)
    missing = set(lines) - found
    if missing:
        titles = [a.get_title() for a in fig.axes]
        raise KeyError(f"add_baselines: no panel titled {sorted(missing)}; panels are {titles}")
    return fig
