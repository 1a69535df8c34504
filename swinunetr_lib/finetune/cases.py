"""The cases of a fine-tuning run: preprocessed once (the cache), checked as they load, augmented per step.

:func:`preprocess_cases` runs the task preset's deterministic pipeline (:func:`~swinunetr_lib.finetune.task_presets.
preprocess_transforms`: orientation, spacing, foreground crop, intensity) once per case and checks it
(finite voxels, the label on the image's grid, its values classes of the task); :class:`AugmentedCases` draws
the label-balanced random crops and augmentations of the preset (Tang et al. 2022, Sec. 4.1) from that cache
with a seed from the global NumPy RNG, so :func:`swinunetr_lib.train.loop.fit`'s exact resume holds.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai import transforms as T

from ..data.loading import DataError, data_error_in
from ..utils.cli import error_message
from .task_presets import TaskPreset, augment_transforms, format_labels, preprocess_transforms


def preprocess_cases(entries: Sequence[dict[str, Any]], preset: TaskPreset, *,
                     with_indices: bool = False) -> list[dict]:
    """Run the deterministic pipeline once per case (the cache), checking each case as it is loaded (finite
    voxels, the label on the image's grid: :class:`~swinunetr_lib.data.loading.DataError` naming the file; label
    values: :func:`check_label_values`); optionally add foreground/background
    voxel indices so that each random crop does not rescan the label. The indices are flat positions, so
    they are taken after padding to the ROI, on the array the crops are cut from (the training pipeline's
    own padding is then a no-op)."""
    steps: list[Any] = [preprocess_transforms(preset)]
    if with_indices:
        steps += [T.SpatialPadd(keys=["image", "label"], spatial_size=preset.roi_size),
                  T.FgBgToIndicesd(keys="label", image_key="image",
                                   image_threshold=0.0 if preset.intensity == "ct_window" else -1e9)]
    pipeline = T.Compose(steps)
    out = []
    for e in entries:
        try:
            out.append(pipeline(dict(e)))
        except Exception as err:  # name the case that broke
            bad = data_error_in(err)  # NaN voxels, a label on another grid: already names its file
            if bad is not None:
                raise DataError(bad.path, bad.problem) from err
            raise ValueError(f"{e['image']}: preprocessing failed ({error_message(err)})") from err
        channels = out[-1]["image"].shape[0]
        if channels != preset.in_channels:  # before the label values: another task's data shows here first
            raise ValueError(f"{e['image']}: {channels} channel(s), task {preset.name} expects "
                             f"{preset.in_channels} ({', '.join(preset.channel_names)})")
        if "label" in e:
            check_label_values(out[-1]["label"], preset, e["label"])
    return out


def check_label_values(label: Any, preset: TaskPreset, path: Any) -> None:
    """``ValueError`` naming ``path`` unless every value of ``label`` is a class id of ``preset``
    (0..K-1, whole numbers): labels of another task would otherwise crash the loss mid-run or train silently.
    Values that are not whole numbers get their own advice (round and cast), not "another task"."""
    values = torch.unique(torch.as_tensor(label).detach().double())
    k = preset.out_channels
    fractional = values[values != torch.round(values)]
    if fractional.numel():  # 0.9999: a label map saved as floats (resampled, or rounded off), not another task's
        shown = [round(float(v), 6) for v in fractional[:5].tolist()]
        raise ValueError(f"{path}: label values {shown}{' ...' if fractional.numel() > 5 else ''} are not whole "
                         f"numbers; a label map holds integer class ids (0..{k - 1}): round it (numpy.rint) and save "
                         "it as integers (e.g. uint8), and resample labels only with nearest neighbour")
    bad = values[(values < 0) | (values >= k)]
    if bad.numel():
        shown = [int(v) if float(v).is_integer() else float(v) for v in bad[:10].tolist()]
        raise ValueError(f"{path}: label values {shown}{' ...' if bad.numel() > 10 else ''} are not classes of task "
                         f"{preset.name} (0..{k - 1}: {format_labels(preset.labels)}); these labels belong to "
                         "another task (choose it with --task) or need remapping")


class AugmentedCases(torch.utils.data.Dataset):
    """Cached preprocessed cases + random augmentation whose seed comes from the global NumPy RNG.

    ``fit`` re-seeds the global RNGs before each batch, so batch ``k`` is the same on a resumed run.
    Each item is a list of ``num_samples`` crops {"image": (C, *roi), "label": (1, *roi)}.
    """

    def __init__(self, cases: list[dict], preset: TaskPreset) -> None:
        self.cases = cases
        self.augment = augment_transforms(preset)
        # use the cached indices instead of scanning the label for every crop
        for t in self.augment.transforms:
            if isinstance(t, T.RandCropByPosNegLabeld) and "label_fg_indices" in cases[0]:
                t.fg_indices_key, t.bg_indices_key = "label_fg_indices", "label_bg_indices"

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> list[dict]:
        self.augment.set_random_state(seed=int(np.random.randint(0, 2**31 - 1)))
        case = self.cases[i]
        item = {k: (v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)) for k, v in case.items()}
        crops = self.augment(item)
        return [{"image": c["image"], "label": c["label"]} for c in crops]
