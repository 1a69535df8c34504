"""Task presets for fine-tuning: BTCV, the 10 MSD tasks and the demo phantom cohort, and their transforms.

A :class:`TaskPreset` holds everything that must be identical at training and inference time: input
channels, label set, target spacing, intensity preset and ROI. The fine-tuning checkpoint stores it, so
:mod:`swinunetr_lib.infer` rebuilds the same preprocessing and refuses a checkpoint of another task.

- BTCV (Tang et al. 2022, Sec. 4.1 / official fine-tuning recipe): 14 outputs (background + 13 organs),
  spacing 1.5 x 1.5 x 2.0 mm, HU [-175, 250] -> [0, 1], ROI 96^3, label-balanced positive/negative crops,
  random flips and 90 degree rotations (p 0.2), intensity scale and shift (p 0.1), as the official script.
- MSD (Simpson et al. 2019; Sec. 4.1 of the paper): CT tasks clip to a per-task HU window and scale to
  [0, 1]; MR tasks z-score each channel over its non-zero voxels. Windows and spacings are those of MONAI's
  DynUNet MSD recipe (``task_params.py``: nnU-Net-style target spacings and foreground 0.5-99.5 percentile
  windows; Task09_Spleen 0.79 x 0.79 x 1.6 mm); channels and label sets are those of the datasets'
  ``dataset.json``.
- ``demo_*``: the synthetic phantom cohort (:mod:`swinunetr_lib.data.phantom`), coarser spacing to be
  CPU-sized.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any, Literal

from monai import transforms as T

from ..data.labels import BTCV_LABELS
from ..data.loading import CheckSameGridd, CheckVolumed, LoadImageNamed
from ..data.registry import dataset_info

Keys = Sequence[str]


@dataclasses.dataclass(frozen=True)
class TaskPreset:
    """Preprocessing and label definition of one segmentation task (all sizes in voxels, spacing in mm)."""

    name: str
    modality: Literal["CT", "MR"]
    labels: dict[int, str]                      # class id -> name, 0 = background
    in_channels: int = 1
    channel_names: tuple[str, ...] = ("CT",)
    spacing: tuple[float, float, float] | None = (1.5, 1.5, 2.0)  # None keeps the native grid
    intensity: Literal["ct_window", "mr_zscore"] = "ct_window"
    window: tuple[float, float] = (-175.0, 250.0)  # HU clip range scaled to [0, 1] (CT only)
    roi_size: tuple[int, int, int] = (96, 96, 96)
    num_samples: int = 4                        # crops per volume per step (RandCropByPosNegLabeld)
    pos: float = 1.0
    neg: float = 1.0
    flip_prob: float = 0.2
    rot90_prob: float = 0.2
    scale_intensity_prob: float = 0.1
    shift_intensity_prob: float = 0.5

    @property
    def out_channels(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["labels"] = {str(k): v for k, v in self.labels.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskPreset:
        d = dict(d)
        d["labels"] = {int(k): v for k, v in d["labels"].items()}
        for key in ("channel_names", "spacing", "window", "roi_size"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)

    def with_overrides(self, **changes: Any) -> TaskPreset:
        """A copy with some fields changed (e.g. ``roi_size=(64, 64, 64)`` for a CPU run)."""
        for key in ("spacing", "roi_size", "window"):
            if changes.get(key) is not None:
                changes[key] = tuple(float(v) if key != "roi_size" else int(v) for v in changes[key])
        return dataclasses.replace(self, **changes)


# Augmentation probabilities of the official BTCV script (research-contributions SwinUNETR/BTCV/main.py:
# RandFlipd 0.2, RandRotate90d 0.2, RandScaleIntensityd 0.1, RandShiftIntensityd 0.1). MONAI's BTCV tutorial
# notebook shifts with probability 0.5; the official script, which this preset follows, with 0.1.
BTCV = TaskPreset("btcv", "CT", {0: "background", **BTCV_LABELS}, flip_prob=0.2, rot90_prob=0.2,
                  scale_intensity_prob=0.1, shift_intensity_prob=0.1)

# Preprocessing per MSD task (target spacing mm, CT window HU or None for MR): the ``spacing`` and
# ``clip_values`` tables of MONAI's DynUNet MSD pipeline (Project-MONAI/tutorials,
# modules/dynunet_pipeline/task_params.py), checked value by value; a 0/0 clip there means MR (z-score).
# Task09_Spleen's slices are 1.6 mm there, not the dataset's 5 mm median slice thickness. Channels and
# label sets come from the dataset registry (data_manifests/registry.json, i.e. each task's dataset.json).
_MSD: dict[str, tuple[tuple[float, float, float], tuple[float, float] | None]] = {
    "Task01_BrainTumour": ((1.0, 1.0, 1.0), None),
    "Task02_Heart": ((1.25, 1.25, 1.37), None),
    "Task03_Liver": ((0.77, 0.77, 1.0), (-17.0, 201.0)),
    "Task04_Hippocampus": ((1.0, 1.0, 1.0), None),
    "Task05_Prostate": ((0.62, 0.62, 3.6), None),
    "Task06_Lung": ((0.79, 0.79, 1.24), (-1024.0, 325.0)),
    "Task07_Pancreas": ((0.8, 0.8, 2.5), (-96.0, 215.0)),
    "Task08_HepaticVessel": ((0.8, 0.8, 1.5), (-3.0, 243.0)),
    "Task09_Spleen": ((0.79, 0.79, 1.6), (-41.0, 176.0)),
    "Task10_Colon": ((0.78, 0.78, 3.0), (-30.0, 165.82)),
}


def _msd_preset(task: str) -> TaskPreset:
    info = dataset_info(task)
    spacing, window = _MSD[task]
    channels = tuple(info.modality[str(i)] for i in range(info.input_channels))
    modality = "CT" if window is not None else "MR"
    if (modality == "CT") != (channels == ("CT",)):
        raise ValueError(f"{task}: registry modality {channels} disagrees with the preset's {modality} preprocessing")
    return TaskPreset(
        name=task, modality=modality,  # type: ignore[arg-type]
        labels={int(k): v for k, v in info.labels.items()}, in_channels=info.input_channels,
        channel_names=channels, spacing=spacing, intensity="ct_window" if modality == "CT" else "mr_zscore",
        window=window if window is not None else (0.0, 1.0))


# Demo phantom cohort (3 mm phantoms): BTCV labels; MSD-like CT single organ and 2-channel MR-like tasks.
DEMO_SPACING = (4.5, 4.5, 4.5)
_DEMO: dict[str, TaskPreset] = {
    # No flips or 90-degree turns: a lateral flip swaps left and right kidney / adrenal gland without
    # swapping their labels, and every scan is reoriented to RAS anyway, so a short CPU schedule spends no
    # steps on views it will never see (the BTCV preset keeps the official recipe's flips and turns).
    # Intensity shifts keep p 0.5, the value the demo results in the README were measured with.
    "demo_btcv": BTCV.with_overrides(name="demo_btcv", spacing=DEMO_SPACING, roi_size=(64, 64, 64), num_samples=2,
                                     flip_prob=0.0, rot90_prob=0.0, shift_intensity_prob=0.5),
    "demo_ct": TaskPreset("demo_ct", "CT", {0: "background", 1: "spleen"}, spacing=DEMO_SPACING,
                          window=(-41.0, 176.0), roi_size=(64, 64, 64), num_samples=2),
    "demo_mr": TaskPreset("demo_mr", "MR", {0: "background", 1: "liver", 2: "kidney", 3: "spleen"}, in_channels=2,
                          channel_names=("T1-like", "T2-like"), spacing=DEMO_SPACING, intensity="mr_zscore",
                          window=(0.0, 1.0), roi_size=(64, 64, 64), num_samples=2),
}


def msd_tasks() -> list[str]:
    """The 10 MSD task names (``Task01_BrainTumour`` ... ``Task10_Colon``)."""
    return list(_MSD)


# The demo cohort's MSD-style phantom tasks (swinunetr_lib.data.cohort) use the demo presets.
_ALIASES = {"Task901_PhantomSpleen": "demo_ct", "Task902_PhantomMR": "demo_mr"}


def preset_names() -> list[str]:
    return ["btcv", *_MSD, *_DEMO, *_ALIASES]


def get_preset(name: str, **overrides: Any) -> TaskPreset:
    """Preset by name (``"btcv"``, an MSD task name or its number like ``"Task09"``, or ``"demo_btcv"``,
    ``"demo_ct"``, ``"demo_mr"``); keyword overrides replace fields (``spacing=None``: native grid)."""
    if name.lower() == "btcv":
        preset = BTCV
    elif name in _DEMO:
        preset = _DEMO[name]
    elif name in _ALIASES:
        preset = dataclasses.replace(_DEMO[_ALIASES[name]], name=name)
    else:
        matches = [t for t in _MSD if t == name or t.split("_")[0].lower() == name.lower()]
        if not matches:
            raise KeyError(f"unknown task preset {name!r}; known: {preset_names()}")
        preset = _msd_preset(matches[0])
    return preset.with_overrides(**overrides) if overrides else preset


# ------------------------------------------------------------------ which preset fits a dataset's data list

# BTCV's dataset_0.json (Swin UNETR / MONAI layout) names its classes in short; tumour / tumor both occur in MSD.
_SHORT_NAMES = {"bg": "background", "rkid": "kidney right", "lkid": "kidney left", "gall": "gallbladder",
                "eso": "esophagus", "sto": "stomach", "ivc": "inferior vena cava", "veins": "portal and splenic veins",
                "rad": "adrenal gland right", "lad": "adrenal gland left"}
# MSD dataset.json "name"s that are not their task folder's suffix.
_MSD_DATASET_NAMES = {"brats": "Task01_BrainTumour", "leftatrium": "Task02_Heart"}


def _words(name: Any) -> tuple[str, ...]:
    text = re.sub(r"[^a-z0-9]+", " ", str(name).lower()).strip()
    text = _SHORT_NAMES.get(text.replace(" ", ""), text)
    return tuple(sorted(w.replace("tumour", "tumor") for w in text.split()))


def _class_map(labels: Any) -> dict[int, tuple[str, ...]] | None:
    try:
        return {int(k): _words(v) for k, v in dict(labels).items()}
    except (TypeError, ValueError):
        return None


def format_labels(labels: Any) -> str:
    """``{0: background, 1: spleen}`` for a message (keys as numbers, names unquoted)."""
    try:
        items = sorted(dict(labels).items(), key=lambda kv: int(kv[0]))
    except (TypeError, ValueError):
        return repr(labels)
    return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"


def manifest_mismatch(preset: TaskPreset, manifest: Any) -> str | None:
    """What the data list's ``labels`` / ``modality`` say that ``preset`` contradicts; None when they agree
    (or the list says nothing). Label names compare by their words (``kidney_right`` = ``Right kidney``;
    BTCV's short names such as ``rkid`` are known); channels compare by count and CT versus not CT."""
    if not isinstance(manifest, dict):
        return None
    problems = []
    labels = manifest.get("labels")
    if isinstance(labels, dict) and labels and _class_map(labels) != {k: _words(v) for k, v in preset.labels.items()}:
        problems.append(f"its labels {format_labels(labels)} are not task {preset.name}'s "
                        f"{format_labels(preset.labels)}")
    modality = manifest.get("modality")
    if isinstance(modality, dict) and modality:
        values = [str(v).strip() for v in modality.values()]
        is_ct = all(v.upper() == "CT" for v in values)
        if len(values) != preset.in_channels or is_ct != (preset.modality == "CT"):
            problems.append(f"its modality {format_labels(modality)} ({len(values)} channel(s)) is not task "
                            f"{preset.name}'s ({preset.modality}, {preset.in_channels} channel(s): "
                            f"{', '.join(preset.channel_names)})")
    return "; ".join(problems) or None


def matching_presets(manifest: Any, names: Sequence[str] | None = None) -> list[str]:
    """Presets (of ``names``, default all) whose classes and channels fit a data list that declares its labels."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("labels"), dict) or not manifest["labels"]:
        return []
    return [n for n in (names or preset_names()) if manifest_mismatch(get_preset(n), manifest) is None]


def _squash(text: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower())


def named_preset(*names: Any) -> tuple[str, str] | None:
    """(preset, the name that gave it) for the first of ``names`` (a data list's ``name``, its folder's name)
    that names a preset: ``btcv``/``BTCV``, ``Task09_Spleen`` or the MSD dataset name ``Spleen``, ``BRATS``, ..."""
    for value in names:
        if not isinstance(value, str) or not value.strip():
            continue
        key = _squash(value)
        for preset in preset_names():
            if key == _squash(preset) or (preset in _MSD and key == _squash(preset.split("_", 1)[1])):
                return preset, value
        if key in _MSD_DATASET_NAMES:
            return _MSD_DATASET_NAMES[key], value
    return None


# --------------------------------------------------------------------------------------- transforms


def intensity_transform(preset: TaskPreset, key: str = "image") -> T.MapTransform:
    """CT: clip to ``preset.window`` HU and scale to [0, 1]. MR: per-channel z-score over non-zero voxels."""
    if preset.intensity == "ct_window":
        return T.ScaleIntensityRanged(keys=key, a_min=preset.window[0], a_max=preset.window[1],
                                      b_min=0.0, b_max=1.0, clip=True)
    return T.NormalizeIntensityd(keys=key, nonzero=True, channel_wise=True)


def _foreground(preset: TaskPreset):
    """Body mask used to crop away air: above the window's lower end (CT), non-zero in any channel (MR)."""
    if preset.intensity == "ct_window":
        low = preset.window[0]
        return lambda x: x > low
    return lambda x: x > 0


def preprocess_transforms(preset: TaskPreset, keys: Keys = ("image", "label"), reader: str | None = None) -> T.Compose:
    """Deterministic, invertible part: load (refusing NaN / Inf voxels and a label on another grid than its
    image: :class:`~swinunetr_lib.data.loading.DataError` naming the file), channel first, RAS, resample, crop to
    the body, intensity.

    Output ``image`` (C, X, Y, Z) float32 on the preset's grid; ``label`` (1, X, Y, Z) class ids.
    ``keys[0]`` is the image; a label key, if given, is resampled with nearest neighbour. ``reader``
    picks MONAI's image reader (``"PydicomReader"`` for a DICOM folder; ``None``: by file suffix).
    """
    keys = list(keys)
    modes = ["bilinear"] + ["nearest"] * (len(keys) - 1)
    steps: list[Any] = [
        LoadImageNamed(keys=keys, image_only=False, reader=reader),  # refuses NaN / Inf voxels, naming the file
        T.EnsureChannelFirstd(keys=keys),
        CheckVolumed(keys=keys, what=f"task {preset.name}"),  # a 2D slice: an error naming the file
        CheckSameGridd(keys=keys),  # a label on another grid than its image: an error naming the label file
        T.EnsureTyped(keys=keys, dtype="float32", track_meta=True),
        T.Orientationd(keys=keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
    ]
    if preset.spacing is not None:
        steps.append(T.Spacingd(keys=keys, pixdim=preset.spacing, mode=modes))
    steps += [
        T.CropForegroundd(keys=keys, source_key=keys[0], select_fn=_foreground(preset), margin=2, allow_smaller=True),
        intensity_transform(preset, keys[0]),
    ]
    return T.Compose(steps)


def augment_transforms(preset: TaskPreset, keys: Keys = ("image", "label")) -> T.Compose:
    """Random part of the training pipeline (official BTCV recipe): pad to the ROI, ``num_samples``
    label-balanced ROI crops, flips on each axis, 90 degree rotations, intensity scale and shift.

    The 90-degree turns are in the axial (x, y) plane, so they need ``roi_size[0] == roi_size[1]``.
    """
    keys = list(keys)
    if preset.rot90_prob > 0 and preset.roi_size[0] != preset.roi_size[1]:
        raise ValueError(f"{preset.name}: 90-degree turns (rot90_prob={preset.rot90_prob}) need a square axial ROI, "
                         f"got roi_size={list(preset.roi_size)}; use rot90_prob=0 or roi_size[0] == roi_size[1]")
    return T.Compose([
        T.SpatialPadd(keys=keys, spatial_size=preset.roi_size),
        T.RandCropByPosNegLabeld(keys=keys, label_key=keys[1], spatial_size=preset.roi_size, pos=preset.pos,
                                 neg=preset.neg, num_samples=preset.num_samples, image_key=keys[0],
                                 image_threshold=0.0 if preset.intensity == "ct_window" else -1e9),
        *[T.RandFlipd(keys=keys, prob=preset.flip_prob, spatial_axis=a) for a in range(3)],
        T.RandRotate90d(keys=keys, prob=preset.rot90_prob, max_k=3),
        T.RandScaleIntensityd(keys=keys[0], factors=0.1, prob=preset.scale_intensity_prob),
        T.RandShiftIntensityd(keys=keys[0], offsets=0.1, prob=preset.shift_intensity_prob),
        T.ToTensord(keys=keys, track_meta=False),
    ])
