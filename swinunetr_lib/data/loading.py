"""Image loading whose errors name the file, and the data checks every case passes as it is loaded.

MONAI's ``LoadImaged`` reports a truncated ``.nii.gz`` as ``EOFError: Compressed file ended ...`` inside a
``RuntimeError("applying transform ...")``, without the path. :class:`LoadImageNamed` is the same
transform, but any failure becomes ``ValueError("<path>: cannot read image (<cause>)")``, which the
command lines print as one line (:func:`swinunetr_lib.utils.cli.run_cli`).

Loaded data is checked where it is cheap, on the arrays already in memory (the checks of
``python -m swinunetr_lib.data validate`` that would otherwise fail a run late or silently): every voxel is
finite (:class:`LoadImageNamed`; NaN would end pretraining in a non-finite loss, inference in an empty label
map) and a label lies on its image's grid (:class:`CheckSameGridd`). Failures are :class:`DataError`\\ s that
name the file.
"""
from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import LoadImaged, MapTransform

from ..utils.cli import error_message
from .manifest_paths import manifest_path_problem


class DataError(ValueError):
    """A file holds data that training or inference cannot use; ``path`` names it, the message says why."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


def data_error_in(err: BaseException) -> DataError | None:
    """The :class:`DataError` in ``err``'s ``raise ... from`` chain (MONAI wraps a transform's error), if any."""
    current: BaseException | None = err
    for _ in range(20):
        if current is None:
            return None
        if isinstance(current, DataError):
            return current
        current = current.__cause__ or current.__context__
    return None


def _file_of(value: Any) -> str:
    """The file name(s) a loader input or a loaded MetaTensor stands for."""
    meta = getattr(value, "meta", None)
    if isinstance(meta, Mapping) and meta.get("filename_or_obj") is not None:
        value = meta["filename_or_obj"]
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def check_finite(array: Any, name: str) -> None:
    """:class:`DataError` naming ``name`` with the number of NaN / Inf voxels when ``array`` holds any."""
    x = array.as_tensor() if hasattr(array, "as_tensor") else torch.as_tensor(np.asarray(array))
    if not x.is_floating_point():
        return
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        n_nan = int(torch.isnan(x).sum())
        raise DataError(name, f"{bad} of {x.numel()} voxels are not finite ({n_nan} NaN, {bad - n_nan} Inf): "
                              "the scan is damaged or was written wrongly; repair or leave out this file")


class LoadImageNamed(LoadImaged):
    """``monai.transforms.LoadImaged`` that names the file(s) it could not read and, with ``check_finite``
    (the default), refuses data with NaN or Inf voxels (:class:`DataError` with their number)."""

    def __init__(self, *args: Any, check_finite: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.check_finite = check_finite

    def __call__(self, data: Mapping[Hashable, Any], reader: Any = None) -> dict[Hashable, Any]:
        try:
            out = super().__call__(data, reader)
        except Exception as err:  # any reader failure: say which file
            files = ", ".join(str(data[k]) for k in self.keys if k in data)
            raise ValueError(f"{files}: cannot read image ({error_message(err)})") from err
        if self.check_finite:
            for k in self.keys:
                if k in out:
                    check_finite(out[k], _file_of(data[k]))
        return out


class CheckVolumed(MapTransform):
    """After ``EnsureChannelFirstd``: every key holds a 3D volume (a 2D slice would fail later inside MONAI with
    "Sequence must have length 2, got 3." and no file named) and, with ``channels``, ``keys[0]`` (the image) has
    that many channels; else :class:`DataError` naming the file. ``what`` names the consumer in the message."""

    def __init__(self, keys: Sequence[str], channels: int | None = None, what: str = "training",
                 allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.channels, self.what = channels, what

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for i, k in enumerate(key for key in self.keys if key in d):
            x = d[k]
            problem = volume_problem(k, tuple(int(n) for n in x.shape[1:]), int(x.shape[0]),
                                     self.channels if i == 0 else None, self.what)
            if problem:
                raise DataError(_file_of(x), problem)
        return d


def volume_problem(key: str, spatial: Sequence[int], n_channels: int, channels: int | None = None,
                   what: str = "training") -> str | None:
    """Why an array of ``spatial`` shape with ``n_channels`` channels is no usable 3D scan (``None``: it is):
    the problem phrase of :class:`CheckVolumed` and of the header check before pretraining's cache."""
    spatial = tuple(spatial)
    if len(spatial) != 3:
        return (f"{key} is {len(spatial)}D (shape {spatial}), not a 3D volume; {what} needs 3D scans: give the "
                "whole series as one 3D file, not a slice")
    if channels is not None and n_channels != channels:
        wanted = "single-channel CT volumes" if channels == 1 else f"{channels}-channel volumes"
        return (f"{key} has {n_channels} channels (shape {spatial} x {n_channels}), {what} needs {channels}: "
                f"give {wanted} (save each channel as its own file)")
    return None


class CheckSameGridd(MapTransform):
    """After loading and ``EnsureChannelFirstd``: every other key (a label) has the spatial shape and the affine
    of ``keys[0]`` (the image), as ``validate`` requires (affines equal within 1e-3 mm); else :class:`DataError`
    naming the label file. Labels on another grid would be cropped and resampled with the image's geometry
    and train on misplaced organs."""

    def __init__(self, keys: Sequence[str], allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = [k for k in self.keys if k in d]
        if len(keys) < 2:
            return d
        image = d[keys[0]]
        for k in keys[1:]:
            other = d[k]
            ishape, oshape = tuple(image.shape[1:]), tuple(other.shape[1:])
            if ishape != oshape:
                raise DataError(_file_of(other), f"{k} shape {oshape} differs from its image's {ishape} "
                                                 f"({_file_of(image)}): the {k} is not on the image grid")
            ia, oa = (np.asarray(getattr(x, "affine", np.eye(4)), dtype=np.float64) for x in (image, other))
            if not np.allclose(ia, oa, atol=1e-3):
                raise DataError(_file_of(other), f"{k} affine differs from its image's by up to "
                                                 f"{float(np.abs(ia - oa).max()):.4g} mm ({_file_of(image)}): "
                                                 f"the {k} is not on the image grid")
        return d


def refuse_paths_outside_root(manifest: str | os.PathLike[str], root: str | os.PathLike[str] | None = None,
                              lists: Sequence[str] = ("training", "validation", "test")) -> None:
    """``DataError`` naming the manifest and the entry when an ``image`` / ``label`` path of ``lists`` breaks the
    rule ``python -m swinunetr_lib.data validate`` applies (:func:`~swinunetr_lib.data.manifest_paths.
    manifest_path_problem`): absolute (``/etc/passwd``), leaving the data root (``../../etc/passwd``), or
    resolving outside it through a link. Malformed manifests are left to the readers."""
    path = Path(manifest)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return
    if not isinstance(data, Mapping):
        return
    base = Path(root) if root is not None else path.parent
    for name in lists:
        entries = data.get(name)
        if not isinstance(entries, list):
            continue
        for i, entry in enumerate(entries):
            fields = {"image": entry} if isinstance(entry, str) else entry if isinstance(entry, Mapping) else {}
            for key in ("image", "label"):
                values = fields.get(key)
                for value in values if isinstance(values, list) else [values]:
                    found = manifest_path_problem(value, base) if isinstance(value, str) and value.strip() else None
                    if found is not None:
                        raise DataError(str(path), f"{name}[{i}] {key} {value!r} {found.problem}")
