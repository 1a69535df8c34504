"""CT DICOM series -> NIfTI with correct orientation, spacing and Hounsfield units (MONAI's PydicomReader).

API::

    info = dicom_series_info(folder)                       # DicomSeriesInfo: series, slice count, spacing
    folder, note = locate_series(tree)                     # a TCIA download tree's top -> its single CT series
    arr, affine = read_dicom_series(folder, orientation="RAS")   # HU float32 (X, Y, Z), world RAS+ mm affine
    result = dicom_to_nifti(folder, "ct.nii.gz", orientation="RAS")   # ConversionResult (shape, spacing, HU range)

The pixel values are rescaled to HU with each slice's RescaleSlope/RescaleIntercept; slices are ordered by their
ImagePositionPatient along the slice normal (MONAI stacks by InstanceNumber: when those numbers do not follow the
positions, the series is read from temporary copies renumbered by position); the affine is built from
ImageOrientationPatient/PixelSpacing and turned from DICOM's LPS+ into NIfTI's RAS+ world. The reader's affine is
checked against these header values; where it disagrees (MONAI drops a tag whose value is not valid DICOM, e.g. a
decimal string longer than 16 characters, and falls back to an identity affine) it is rebuilt from the header
values with a warning; a series without the geometry tags is an error, never an identity affine.
Given the top of a download tree (TCIA: ``Patient/Study/Series/1-01.dcm``), the series below it are listed and
the single CT series is read when there is exactly one (:func:`locate_series`). Every command reads DICOM
this way (``infer --input FOLDER`` converts through :func:`dicom_to_nifti`).
``orientation`` reorders/flips voxel axes to the given axis codes (e.g. ``"RAS"``, or ``"LAS"`` to match
``example_seg_dicom.nii.gz``); ``None`` keeps the reader's order.
ITK is not needed (pydicom only).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from monai.data import PydicomReader
from nibabel import orientations as nio

from ..utils.files import atomic_path
from .dicom_tree import DicomError, locate_series
from .manifest import check_output_file


@dataclasses.dataclass
class DicomSeriesInfo:
    folder: Path
    series_uids: dict[str, int]  # SeriesInstanceUID -> number of slices (damaged ones included)
    modality: str
    n_files: int
    unreadable: list[str]  # files that are not part of any series (not DICOM, DICOMDIR, damaged beyond reading)
    files: dict[str, list[Path]] = dataclasses.field(default_factory=dict, repr=False)
    damaged: dict[str, str] = dataclasses.field(default_factory=dict)  # DICOM file name -> problem (truncated, ...)
    damaged_series: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)  # damaged name -> its UID
    headers: dict[str, list[_SliceHeader]] = dataclasses.field(default_factory=dict, repr=False)  # like ``files``
    descriptions: dict[str, str] = dataclasses.field(default_factory=dict)  # SeriesInstanceUID -> SeriesDescription

    def listing(self) -> str:
        """The series, one after the other: ``UID ('description', N slices)``, to choose from with --series-uid."""
        return "; ".join(f"{uid} ({self.descriptions.get(uid) or 'no description'!r}, {n} slice{'s' * (n != 1)})"
                         for uid, n in self.series_uids.items())


@dataclasses.dataclass
class _SliceHeader:
    """The geometry tags of one slice, as pydicom reads them (None where missing or not numeric)."""
    instance: int | None  # InstanceNumber
    ipp: np.ndarray | None  # ImagePositionPatient (3,)
    iop: np.ndarray | None  # ImageOrientationPatient (6,)
    pixel_spacing: np.ndarray | None  # PixelSpacing (2,): between rows, between columns
    position: float | None  # ImagePositionPatient along the slice normal (row x column direction)


@dataclasses.dataclass
class ConversionResult:
    path: Path
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    orientation: str
    hu_min: float
    hu_max: float
    n_slices: int


_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


def _read_file(f: Path) -> tuple[object | None, str | None, bool]:
    """(dataset or None, problem or None, looks like DICOM) of one file; pixel data read, not decoded."""
    try:
        with open(f, "rb") as fh:
            head = fh.read(132)
    except OSError as err:
        return None, f"cannot open: {err.strerror or err}", False
    magic = head[128:132] == b"DICM"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(f)
    except Exception as err:  # any unreadable file is reported, not a crash
        return None, f"not readable ({type(err).__name__}: {str(err)[:80]})", magic
    eof = [str(w.message) for w in caught if "end of file" in str(w.message).lower()]
    if eof:
        return ds, "truncated (end of file reached while reading)", True
    return ds, None, magic or "SeriesInstanceUID" in ds


def _pixel_problem(ds: pydicom.Dataset) -> str | None:
    """Why an image's pixel data is missing or shorter than its header says, else None."""
    if "Rows" not in ds or "Columns" not in ds:
        return None  # not an image object: nothing to check
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return "no pixel data (truncated?)"
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if "PixelData" in ds and ts is not None and not ts.is_compressed:
        try:
            expected = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
                        * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.BitsAllocated) + 7) // 8
        except (AttributeError, TypeError, ValueError):
            return None
        got = len(ds.PixelData)
        if got < expected:
            return f"pixel data has {got} of {expected} bytes (truncated)"
    return None


def _numbers(ds: pydicom.Dataset, keyword: str, n: int) -> np.ndarray | None:
    try:
        values = np.asarray(getattr(ds, keyword), dtype=np.float64).reshape(-1)
    except (AttributeError, TypeError, ValueError):
        return None
    return values if values.shape == (n,) and np.isfinite(values).all() else None


def _slice_header(ds: pydicom.Dataset) -> _SliceHeader:
    try:
        instance = int(ds.InstanceNumber)
    except (AttributeError, TypeError, ValueError):
        instance = None
    ipp, iop = _numbers(ds, "ImagePositionPatient", 3), _numbers(ds, "ImageOrientationPatient", 6)
    position = None if ipp is None or iop is None else float(np.dot(np.cross(iop[:3], iop[3:]), ipp))
    return _SliceHeader(instance, ipp, iop, _numbers(ds, "PixelSpacing", 2), position)


def dicom_series_info(folder: str | os.PathLike[str]) -> DicomSeriesInfo:
    """Read every file (pixel bytes are read, not decoded); lists the series found, the files that are not
    DICOM and the DICOM files that are damaged (truncated, no pixel data)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(f"{folder}: not a folder")
    series: dict[str, int] = {}
    files: dict[str, list[Path]] = {}
    damaged: dict[str, str] = {}
    damaged_series: dict[str, str] = {}
    headers: dict[str, list[_SliceHeader]] = {}
    descriptions: dict[str, str] = {}
    modality, bad, n = "", [], 0
    for f in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        n += 1
        ds, problem, is_dicom = _read_file(f)
        uid = None if ds is None or "SeriesInstanceUID" not in ds else str(ds.SeriesInstanceUID)
        if uid is None:
            bad.append(f.name)
            sop = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
            if is_dicom and sop != _DICOMDIR_SOP_CLASS:  # a DICOM file whose header could not be read in full
                damaged[f.name] = problem or "header incomplete, no SeriesInstanceUID (truncated?)"
            continue
        problem = problem or _pixel_problem(ds)
        series[uid] = series.get(uid, 0) + 1
        descriptions.setdefault(uid, str(ds.get("SeriesDescription", "") or "").strip())
        if problem is not None:
            damaged[f.name] = problem
            damaged_series[f.name] = uid
            continue
        files.setdefault(uid, []).append(f)
        header = _slice_header(ds)
        headers.setdefault(uid, []).append(header)
        modality = modality or str(getattr(ds, "Modality", ""))
    return DicomSeriesInfo(folder, series, modality, n, bad, files, damaged, damaged_series, headers, descriptions)


_AXIS_PAIRS = ("LR", "AP", "SI")


def parse_orientation(orientation: str | None, option: str = "orientation") -> str | None:
    """``"ras"`` -> ``"RAS"``; ``None``/``"none"`` -> ``None``. Raises :class:`DicomError` naming ``option``
    unless it is 3 distinct axis codes, one from each of L/R, A/P, S/I."""
    if orientation is None or (isinstance(orientation, str) and orientation.strip().lower() == "none"):
        return None
    codes = orientation.strip().upper() if isinstance(orientation, str) else ""
    pairs = [next((p for p in _AXIS_PAIRS if c in p), None) for c in codes]
    if len(codes) != 3 or None in pairs or len(set(pairs)) != 3:
        raise DicomError(f"{option} {orientation!r} is not valid: give 3 axis codes, one from each of L/R, A/P, "
                         "S/I (e.g. RAS, LAS, LPS), or 'none' to keep the reader's order")
    return codes


NIFTI_OUT_SUFFIXES = (".nii.gz", ".nii")


def check_nifti_out(out_path: str | os.PathLike[str], what: str = "output") -> Path:
    """Raise :class:`DicomError` naming ``what`` unless ``out_path`` is a writable ``.nii``/``.nii.gz`` file name."""
    try:
        return check_output_file(out_path, what, NIFTI_OUT_SUFFIXES)
    except ValueError as err:
        raise DicomError(str(err)) from None


def _reorient(arr: np.ndarray, affine: np.ndarray, orientation: str | None) -> tuple[np.ndarray, np.ndarray]:
    orientation = parse_orientation(orientation)
    if orientation is None:
        return arr, affine
    start = nio.io_orientation(affine)
    target = nio.axcodes2ornt(tuple(orientation.upper()))
    xform = nio.ornt_transform(start, target)
    out = nio.apply_orientation(arr, xform)
    new_affine = affine @ nio.inv_ornt_aff(xform, arr.shape)
    if nib.aff2axcodes(new_affine) != tuple(orientation):
        raise DicomError(f"reorienting to {orientation} gave {''.join(nib.aff2axcodes(new_affine))}")
    return np.ascontiguousarray(out), new_affine


def read_dicom_series(
    folder: str | os.PathLike[str], orientation: str | None = "RAS", series_uid: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read one CT series; returns (HU float32 array (X, Y, Z), 4x4 RAS+ affine in mm).

    Raises :class:`DicomError` naming the folder when it holds no DICOM, several series (pass
    ``series_uid``), damaged files (naming them), slices without ImageOrientationPatient/ImagePositionPatient/
    PixelSpacing, or slices with unequal spacing; naming ``orientation`` when it is not valid (checked before
    anything is read). Slices are stacked by position whatever their InstanceNumbers say.
    """
    orientation = parse_orientation(orientation)
    folder, _ = locate_series(folder, series_uid)  # a download tree's top: its single CT series
    info = dicom_series_info(folder)
    if not info.series_uids:
        detail = f"; damaged: {_damaged_list(info.damaged)}" if info.damaged else ""
        raise DicomError(f"{folder}: no readable DICOM files ({info.n_files} files, "
                         f"e.g. {info.unreadable[:3]}){detail}")
    if series_uid is None and len(info.series_uids) > 1:
        raise DicomError(f"{folder}: holds {len(info.series_uids)} series: {info.listing()}; choose one with "
                         "--series-uid UID")
    if series_uid is not None and series_uid not in info.series_uids:
        raise DicomError(f"{folder}: no series {series_uid!r} (--series-uid); series found: {info.listing()}")
    chosen = series_uid if series_uid is not None else next(iter(info.series_uids))
    broken = {name: why for name, why in info.damaged.items() if info.damaged_series.get(name, chosen) == chosen}
    if broken:
        raise DicomError(f"{folder}: {len(broken)} DICOM file(s) could not be read: {_damaged_list(broken)}; "
                         "re-export or remove them")
    files, headers = info.files[chosen], info.headers[chosen]
    no_geometry = [f.name for f, h in zip(files, headers, strict=True) if h.position is None]
    if no_geometry:
        raise DicomError(f"{folder}: {len(no_geometry)} slice(s) lack a usable ImageOrientationPatient or "
                         f"ImagePositionPatient (e.g. {no_geometry[:3]}); the slice geometry is unknown")
    no_spacing = [f.name for f, h in zip(files, headers, strict=True)
                  if h.pixel_spacing is None or (h.pixel_spacing <= 0).any()]
    if no_spacing:
        raise DicomError(f"{folder}: {len(no_spacing)} slice(s) lack a usable PixelSpacing (e.g. {no_spacing[:3]})")
    positions = np.array([h.position for h in headers])
    _check_slice_spacing(folder, list(positions), [h.instance for h in headers])
    numbers = [h.instance for h in headers]
    by_number = np.argsort(np.array(numbers), kind="stable") if None not in numbers else None
    if by_number is not None and len(set(numbers)) == len(numbers) and _monotonic(positions[by_number]):
        order = by_number  # MONAI's InstanceNumber order already follows the slice positions (either way)
        renumber = None
    else:  # read copies numbered by position rank, so MONAI stacks them in position order
        order = np.argsort(positions, kind="stable")
        renumber = {int(i): rank + 1 for rank, i in enumerate(order)}

    reader = PydicomReader(affine_lps_to_ras=True, swap_ij=True)
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if renumber is not None:
                _write_renumbered(files, renumber, Path(tmp))
                source = tmp
            elif len(info.series_uids) > 1 or info.unreadable:  # only the chosen series, through links to its files
                for f in files:
                    os.symlink(f.resolve(), Path(tmp) / f.name)
                source = tmp
            else:
                source = str(folder)
            arr, meta = reader.get_data(reader.read(source))
    except Exception as err:
        raise DicomError(f"{folder}: PydicomReader failed: {err}") from err
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise DicomError(f"{folder}: expected one 3D series, got array of shape {arr.shape}")
    if arr.shape[2] < len(files):  # MONAI skips slices it cannot use (e.g. no InstanceNumber)
        raise DicomError(f"{folder}: PydicomReader read {arr.shape[2]} of the series' {len(files)} slices")
    affine = np.asarray(meta["affine"], dtype=np.float64)
    expected = _header_affine(headers[order[0]], headers[order[-1]], len(files))
    problem = _affine_problem(affine, expected)
    if problem is not None:
        dropped = [name for tag, name in _GEOMETRY_TAGS if tag not in meta]
        why = (f"the reader dropped {', '.join(dropped)} (a value that is not valid DICOM, e.g. a decimal string "
               "longer than 16 characters)" if dropped else "the reader's geometry differs from the header")
        warnings.warn(f"{folder}: PydicomReader's affine does not match the DICOM header ({problem}): {why}; the "
                      "affine was rebuilt from the header's ImageOrientationPatient, ImagePositionPatient and "
                      "PixelSpacing values", UserWarning, stacklevel=2)
        affine = expected
    for w in caught:  # pass the reader's warnings on, except its "identity affine" one when that was replaced
        if problem is None or "affine matrix cannot be derived" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    arr, affine = _reorient(arr.astype(np.float32), affine, orientation)
    return arr, affine


_GEOMETRY_TAGS = (("00200037", "ImageOrientationPatient"), ("00200032", "ImagePositionPatient"),
                  ("00280030", "PixelSpacing"))


def _monotonic(values: np.ndarray) -> bool:
    steps = np.diff(values)
    return bool((steps > 0).all() or (steps < 0).all())


def _write_renumbered(files: list[Path], renumber: dict[int, int], folder: Path) -> None:
    """Copies of ``files`` in ``folder``, file i with InstanceNumber ``renumber[i]`` (nothing else changed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-conformant values were already read (and reported) once
        for i, f in enumerate(files):
            ds = pydicom.dcmread(f)
            ds.InstanceNumber = renumber[i]
            ds.save_as(folder / f.name)


def _header_affine(first: _SliceHeader, last: _SliceHeader, n: int) -> np.ndarray:
    """The RAS+ affine PydicomReader(swap_ij=True) builds for slices stacked from ``first`` to ``last``."""
    affine = np.eye(4)
    row_spacing, column_spacing = first.pixel_spacing
    affine[:3, 0] = first.iop[:3] * column_spacing  # voxel axis 0: along a row (column index)
    affine[:3, 1] = first.iop[3:] * row_spacing  # voxel axis 1: down a column (row index)
    affine[:3, 2] = (last.ipp - first.ipp) / max(n - 1, 1)
    affine[:3, 3] = first.ipp
    affine[:2] *= -1  # LPS+ -> RAS+
    return affine


def _affine_problem(affine: np.ndarray, expected: np.ndarray, rtol: float = 1e-3) -> str | None:
    """What differs between the reader's affine and the one from the header values (None: they agree)."""
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        return "not a finite 4x4 matrix"
    sizes, want = np.linalg.norm(affine[:3, :3], axis=0), np.linalg.norm(expected[:3, :3], axis=0)
    if not np.allclose(sizes, want, rtol=rtol, atol=0):
        return (f"voxel sizes {np.round(sizes, 4).tolist()} mm, expected {np.round(want, 4).tolist()} mm from "
                "PixelSpacing and the slice positions")
    if not np.allclose(affine[:3, :3], expected[:3, :3], rtol=0, atol=rtol * want.max()):
        return "axis directions differ from ImageOrientationPatient"
    if not np.allclose(affine[:3, 3], expected[:3, 3], rtol=0, atol=rtol * want.max()):
        return (f"origin {np.round(affine[:3, 3], 3).tolist()} mm, expected {np.round(expected[:3, 3], 3).tolist()} "
                "mm from ImagePositionPatient")
    return None


def _damaged_list(damaged: dict[str, str], limit: int = 5) -> str:
    items = [f"{name} ({why})" for name, why in list(damaged.items())[:limit]]
    return ", ".join(items) + (f", ... ({len(damaged) - limit} more)" if len(damaged) > limit else "")


def _check_slice_spacing(folder: Path, positions: list[float], instances: list[int | None] | None = None) -> None:
    """Slices must be evenly spaced along the slice normal (a gap or duplicate slice would distort geometry); a
    gap is named by the slice positions (mm) and InstanceNumbers on either side of it."""
    if len(positions) < 3:
        return
    order = np.argsort(np.asarray(positions), kind="stable")
    pos = np.asarray(positions, dtype=np.float64)[order]
    steps = np.diff(pos)
    numbers = [instances[i] if instances is not None else None for i in order]

    def where(k: int) -> str:
        a, b = (f" (InstanceNumber {numbers[j]})" if numbers[j] is not None else "" for j in (k, k + 1))
        return f"between the slices at {pos[k]:.4g} mm{a} and {pos[k + 1]:.4g} mm{b}"

    if steps.min() < 1e-3:
        k = int(np.argmin(steps))
        both = " and ".join(str(n) for n in numbers[k:k + 2] if n is not None)
        raise DicomError(f"{folder}: duplicate slice positions: two slices at {pos[k]:.4g} mm"
                         f"{f' (InstanceNumbers {both})' if both else ''}")
    usual = float(np.median(steps))
    odd = np.flatnonzero(~np.isclose(steps, usual, rtol=1e-2, atol=1e-2))
    if odd.size:
        k = int(odd[0])
        gap = steps[k] / usual
        guess = f", about {round(gap) - 1} slice(s) missing there" if gap > 1.5 else ""
        more = f" ({odd.size - 1} more uneven step(s))" if odd.size > 1 else ""
        raise DicomError(f"{folder}: slices are not evenly spaced: a step of {steps[k]:.4g} mm instead of "
                         f"{usual:.4g} mm {where(k)}{guess}{more}; re-export the complete series")


def dicom_to_nifti(
    folder: str | os.PathLike[str], out_path: str | os.PathLike[str], orientation: str | None = "RAS",
    series_uid: str | None = None,
) -> ConversionResult:
    """Convert a CT series to NIfTI (int16 HU when the values are whole numbers, else float32); atomic write.

    ``out_path`` (``.nii``/``.nii.gz``, not a folder) and ``orientation`` are checked before the series is read.
    """
    check_nifti_out(out_path)
    orientation = parse_orientation(orientation)
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
