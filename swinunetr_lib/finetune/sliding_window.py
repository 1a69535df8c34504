"""Sliding-window segmentation and Dice of label maps: what validation, inference and evaluation share.

Fine-tuning validates by :func:`sliding_window_predict` and :func:`dice_scores` on the preprocessed grid;
:mod:`swinunetr_lib.infer` predicts the same way and maps the label map back to the scan's grid;
:mod:`swinunetr_lib.infer.evaluation` scores it there. They live here, below all three, so that imports run one way
(model and data -> training -> fine-tuning -> inference -> evaluation; ``tests/test_imports.py``).

Sliding-window inference as in the paper (Tang et al. 2022, Sec. 4.1): overlap 0.5, Gaussian blending
(MONAI ``sliding_window_inference``); Dice is MONAI's ``DiceMetric``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot

from ..utils.device import resolve_device


class InferenceError(RuntimeError):
    """Bad checkpoint or input for inference; the message names the file and the problem."""


def check_window_options(sw_batch_size: Any, overlap: Any, *, cli: bool = False) -> None:
    """Sliding-window settings: ``sw_batch_size`` a whole number >= 1, ``0 <= overlap < 1``; else
    :class:`InferenceError` naming the option (as a command-line flag with ``cli``)."""
    bs_name, ov_name = ("--sw-batch-size", "--overlap") if cli else ("sw_batch_size", "overlap")
    if isinstance(sw_batch_size, bool) or not isinstance(sw_batch_size, int) or sw_batch_size < 1:
        raise InferenceError(f"{bs_name} must be a whole number >= 1 (windows per forward pass), got {sw_batch_size!r}")
    try:
        ok = math.isfinite(float(overlap)) and 0 <= float(overlap) < 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InferenceError(f"{ov_name} must be at least 0 and below 1 (fraction of a window shared with its "
                             f"neighbour), got {overlap!r}")


@torch.no_grad()
def sliding_window_predict(model: torch.nn.Module, image: torch.Tensor, roi_size: Sequence[int], *,
                           sw_batch_size: int = 4, overlap: float = 0.5,
                           device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits (B, K, D, H, W) for image (B, C, D, H, W) by sliding-window inference with Gaussian blending
    (windows of ``roi_size``; paper Sec. 4.1: overlap 0.5). The model is put in eval mode."""
    device = resolve_device(device)
    model.eval()
    x = torch.as_tensor(image).to(device)
    return sliding_window_inference(x, roi_size, sw_batch_size, model, overlap=overlap, mode="gaussian")


def dice_scores(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> np.ndarray:
    """Per-class Dice (without background) of label maps (B, 1, D, H, W) -> (B, K-1); NaN where the
    class is absent from the ground truth (MONAI ``DiceMetric``)."""
    return dice_one_hot(one_hot(pred, num_classes), one_hot(label, num_classes))


def dice_one_hot(p: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-class Dice (without background) of one-hot maps (B, K, D, H, W) -> (B, K-1); NaN where ``y`` has
    no voxel of the class."""
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    return metric(p, y).cpu().numpy()
