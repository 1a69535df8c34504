"""The deterministic per-volume chain of pretraining (load, RAS, optional resampling, crop to the body), shared
by the cached loader (:mod:`swinunetr_lib.pretrain.dataloader`) and ``python -m swinunetr_lib.data prepare``,
and the image list of a pretraining manifest."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.data import load_decathlon_datalist
from monai.transforms import (
    CropForegroundd,
    EnsureChannelFirstd,
    Orientationd,
    Spacingd,
)

from ..paths import resolve_path
from .loading import CheckVolumed, LoadImageNamed, refuse_paths_outside_root
from .manifest_paths import missing_files_problem
from .prepared_volumes import BODY_THRESHOLD_HU, BodyMask


def volume_transforms(spacing: Sequence[float] | None = None, body_threshold: float = BODY_THRESHOLD_HU,
                      key: str = "image") -> list[Any]:
    """The deterministic per-volume steps in HU, shared with ``data prepare``: load (errors name the file), channel
    first, RAS, optional resampling to ``spacing`` mm (bilinear), crop to the body's bounding box -> (1, X, Y, Z)."""
    steps: list[Any] = [LoadImageNamed(keys=key, image_only=True), EnsureChannelFirstd(keys=key),
                        CheckVolumed(keys=key, channels=1, what="pretraining"),  # a 2D slice, RGB: file named
                        Orientationd(keys=key, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))]
    if spacing is not None:
        steps.append(Spacingd(keys=key, pixdim=tuple(spacing), mode="bilinear"))
    steps.append(CropForegroundd(keys=key, source_key=key, select_fn=BodyMask(body_threshold), allow_smaller=True))
    return steps


def load_image_list(manifest: str | os.PathLike[str], split: str = "training",
                    base_dir: str | os.PathLike[str] | None = None) -> list[dict[str, str]]:
    """``[{"image": absolute path}, ...]`` from a decathlon-style manifest (paths relative to ``base_dir``,
    default the manifest's folder). Missing manifest, split or image files, and relative paths that leave
    ``base_dir``, raise with the file named."""
    path = resolve_path(manifest)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    base = Path(base_dir) if base_dir is not None else path.parent
    refuse_paths_outside_root(path, base, (split,))  # "../../etc/passwd": refused, as `validate` does
    try:
        items = load_decathlon_datalist(str(path), is_segmentation=False, data_list_key=split, base_dir=str(base))
    except (ValueError, KeyError) as err:
        raise ValueError(f"{path}: cannot read split {split!r}: {err}") from err
    if not items:
        raise ValueError(f"{path}: split {split!r} is empty")
    files = [{"image": str(it["image"])} for it in items]
    missing = [f["image"] for f in files if not Path(f["image"]).exists()]
    if missing:
        raise FileNotFoundError(f"{path}: {missing_files_problem(missing, len(files), base, base_dir is not None)}")
    return files
