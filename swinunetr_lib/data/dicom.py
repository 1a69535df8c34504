"""CT DICOM series -> NIfTI with correct orientation, spacing and Hounsfield units (MONAI's PydicomReader).

API::

    info = dicom_series_info(folder)                       # DicomSeriesInfo: series, slice count, spacing
    arr, affine = read_dicom_series(folder, orientation="RAS")   # HU float32 (X, Y, Z), world RAS+ mm affine
    result = dicom_to_nifti(folder, "ct.nii.gz", orientation="RAS")   # ConversionResult (shape, spacing, HU range)

The pixel values are rescaled to HU with each slice's RescaleSlope/RescaleIntercept; slices are ordered by their
ImagePositionPatient along the slice normal; the affine is built from ImageOrientationPatient/PixelSpacing and
turned from DICOM's LPS+ into NIfTI's RAS+ world. ``orientation`` reorders/flips voxel axes to the given axis
codes (e.g. ``"RAS"``, or ``"LAS"`` to match ``example_seg_dicom.nii.gz``); ``None`` keeps the reader's order.
ITK is not needed (pydicom only).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np

from ..utils import atomic_path


class DicomError(ValueError):
    """A DICOM folder cannot be converted; the message names the folder and the problem."""


@dataclasses.dataclass
class DicomSeriesInfo:
    folder: Path
    series_uids: dict[str, int]  # SeriesInstanceUID -> number of slices
    modality: str
    n_files: int
    unreadable: list[str]
    files: dict[str, list[Path]] = dataclasses.field(default_factory=dict, repr=False)
    positions: dict[str, list[float]] = dataclasses.field(default_factory=dict, repr=False)  # along slice normal


@dataclasses.dataclass
class ConversionResult:
    path: Path
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    orientation: str
    hu_min: float
    hu_max: float
    n_slices: int


def dicom_series_info(folder: str | os.PathLike[str]) -> DicomSeriesInfo:
    """Read headers only; lists the series found and files that are not DICOM."""
    import pydicom

    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(f"{folder}: not a folder")
    series: dict[str, int] = {}
    files: dict[str, list[Path]] = {}
    positions: dict[str, list[float]] = {}
    modality, bad, n = "", [], 0
    for f in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        n += 1
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            uid = str(ds.SeriesInstanceUID)
        except Exception:  # noqa: BLE001 - any unreadable file is listed, not fatal here
            bad.append(f.name)
            continue
        series[uid] = series.get(uid, 0) + 1
        files.setdefault(uid, []).append(f)
        try:
            o = np.asarray(ds.ImageOrientationPatient, float)
            pos = float(np.dot(np.cross(o[:3], o[3:]), np.asarray(ds.ImagePositionPatient, float)))
            positions.setdefault(uid, []).append(pos)
        except (AttributeError, TypeError, ValueError):
            pass
        modality = modality or str(getattr(ds, "Modality", ""))
    return DicomSeriesInfo(folder, series, modality, n, bad, files, positions)


def _reorient(arr: np.ndarray, affine: np.ndarray, orientation: str | None) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib
    from nibabel import orientations as nio

    if orientation is None:
        return arr, affine
    start = nio.io_orientation(affine)
    target = nio.axcodes2ornt(tuple(orientation.upper()))
    xform = nio.ornt_transform(start, target)
    out = nio.apply_orientation(arr, xform)
    new_affine = affine @ nio.inv_ornt_aff(xform, arr.shape)
    assert nib.aff2axcodes(new_affine) == tuple(orientation.upper())
    return np.ascontiguousarray(out), new_affine


def read_dicom_series(
    folder: str | os.PathLike[str], orientation: str | None = "RAS", series_uid: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read one CT series; returns (HU float32 array (X, Y, Z), 4x4 RAS+ affine in mm).

    Raises :class:`DicomError` naming the folder when it holds no DICOM, several series (pass
    ``series_uid``), or slices with unequal spacing.
    """
    from monai.data import PydicomReader

    folder = Path(folder)
    info = dicom_series_info(folder)
    if not info.series_uids:
        raise DicomError(f"{folder}: no readable DICOM files ({info.n_files} files, e.g. {info.unreadable[:3]})")
    if series_uid is None and len(info.series_uids) > 1:
        raise DicomError(f"{folder}: holds {len(info.series_uids)} series {info.series_uids}; pass series_uid=")
    if series_uid is not None and series_uid not in info.series_uids:
        raise DicomError(f"{folder}: no series {series_uid!r}; series found: {info.series_uids}")
    reader = PydicomReader(affine_lps_to_ras=True)
    try:
        if len(info.series_uids) > 1:  # read only the chosen series, through a folder of links to its files
            with tempfile.TemporaryDirectory() as tmp:
                for f in info.files[str(series_uid)]:
                    os.symlink(f.resolve(), Path(tmp) / f.name)
                arr, meta = reader.get_data(reader.read(tmp))
        else:
            arr, meta = reader.get_data(reader.read(str(folder)))
    except Exception as err:  # noqa: BLE001
        raise DicomError(f"{folder}: PydicomReader failed: {err}") from err
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise DicomError(f"{folder}: expected one 3D series, got array of shape {arr.shape}")
    affine = np.asarray(meta["affine"], dtype=np.float64)
    _check_slice_spacing(folder, info.positions.get(series_uid if series_uid is not None else next(iter(info.series_uids)), []))
    arr, affine = _reorient(arr.astype(np.float32), affine, orientation)
    return arr, affine


def _check_slice_spacing(folder: Path, positions: list[float]) -> None:
    """Slices must be evenly spaced along the slice normal (a gap or duplicate slice would distort geometry)."""
    if len(positions) < 3:
        return
    steps = np.diff(np.sort(np.asarray(positions)))
    if steps.min() < 1e-3:
        raise DicomError(f"{folder}: duplicate slice positions (two slices at the same location)")
    if not np.allclose(steps, np.median(steps), rtol=1e-2, atol=1e-2):
        raise DicomError(f"{folder}: slices are not evenly spaced (steps {sorted(set(np.round(steps, 3)))} mm); "
                         "missing slices?")


def dicom_to_nifti(
    folder: str | os.PathLike[str], out_path: str | os.PathLike[str], orientation: str | None = "RAS",
    series_uid: str | None = None,
) -> ConversionResult:
    """Convert a CT series to NIfTI (int16 HU when the values are whole numbers, else float32); atomic write."""
    import nibabel as nib

    arr, affine = read_dicom_series(folder, orientation, series_uid)
    data = arr.astype(np.int16) if np.all(arr == np.round(arr)) and arr.min() >= -32768 and arr.max() <= 32767 else arr
    nii = nib.Nifti1Image(data, affine)
    nii.set_qform(affine, code=1)
    nii.set_sform(affine, code=1)
    nii.header.set_xyzt_units("mm")
    nii.header["descrip"] = b"CT HU from DICOM (swinunetr_lib.data.dicom)"
    with atomic_path(out_path) as tmp:
        nib.save(nii, tmp)
    return ConversionResult(Path(out_path), tuple(arr.shape), tuple(float(s) for s in nib.affines.voxel_sizes(affine)),
                            "".join(nib.aff2axcodes(affine)), float(arr.min()), float(arr.max()), int(arr.shape[2]))
