"""DICOM download trees: the series below a folder (headers only) and the one to read (:func:`locate_series`).

Moved out of :mod:`swinunetr_lib.data.dicom` (which imports them from here) to keep modules small; a TCIA
download (NBIA Data Retriever: ``Collection/Patient/Study/Series/1-01.dcm``) holds its series in sub-folders.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import pydicom


class DicomError(ValueError):
    """A DICOM folder cannot be converted; the message names the folder and the problem."""


@dataclasses.dataclass
class SeriesLocation:
    """One DICOM series found below a folder (headers only: pixel data is not read)."""
    folder: Path
    uid: str
    modality: str
    n_files: int
    description: str = ""
    localizer: bool = False  # ImageType says LOCALIZER (scout views are CT too)

    def describe(self, top: Path) -> str:
        where = self.folder.relative_to(top).as_posix() if self.folder != top else "."
        desc = f", {self.description!r}" if self.description else ""
        return f"{where} ({self.modality or '?'}{', localizer' if self.localizer else ''}, {self.n_files} files{desc})"


def _series_header(f: Path) -> object | None:
    """The header of a DICOM file with a SeriesInstanceUID (pixel data not read), else None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(f, stop_before_pixels=True,
                                 specific_tags=["SeriesInstanceUID", "Modality", "SeriesDescription", "ImageType"])
    except Exception:  # not DICOM (metadata.csv, LICENSE, ...) or unreadable: not a series file
        return None
    return ds if "SeriesInstanceUID" in ds else None


def _holds_dicom(folder: Path) -> bool:
    return any(f.is_file() and not f.name.startswith(".") and _series_header(f) is not None
               for f in sorted(folder.iterdir()))


def find_series(top: str | os.PathLike[str]) -> list[SeriesLocation]:
    """Every DICOM series in ``top`` and its sub-folders, one per (folder, SeriesInstanceUID), in path order."""
    top = Path(top)
    found: dict[tuple[Path, str], SeriesLocation] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            ds = _series_header(Path(dirpath) / name)
            if ds is None:
                continue
            key = (Path(dirpath), str(ds.SeriesInstanceUID))
            if key not in found:
                image_type = [str(v).upper() for v in (ds.get("ImageType") or [])] \
                    if not isinstance(ds.get("ImageType"), str) else [str(ds.ImageType).upper()]
                found[key] = SeriesLocation(Path(dirpath), key[1], str(ds.get("Modality", "") or ""), 0,
                                            str(ds.get("SeriesDescription", "") or "").strip(),
                                            "LOCALIZER" in image_type)
            found[key].n_files += 1
    return list(found.values())


def locate_series(folder: str | os.PathLike[str], series_uid: str | None = None) -> tuple[Path, str | None]:
    """(folder holding the series to read, a note saying which was taken, or None when it is ``folder`` itself).

    A folder that holds DICOM files itself is returned as it is. A download tree such as TCIA's (NBIA Data
    Retriever: ``Collection/Patient/Study/Series/1-01.dcm`` with ``metadata.csv`` at the top) holds them only in
    sub-folders: the series found there are listed, and the one with ``series_uid``, or else the single CT
    series (localizers aside) when there is exactly one, is taken; otherwise :class:`DicomError` lists them
    all. A folder without any DICOM below it is returned unchanged (the reader then says what it holds).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(f"{folder}: not a folder")
    if _holds_dicom(folder):
        return folder, None
    series = find_series(folder)
    if not series:
        return folder, None
    listing = "; ".join(s.describe(folder) for s in series)
    if series_uid is not None:
        chosen = [s for s in series if s.uid == series_uid]
        if not chosen:
            raise DicomError(f"{folder}: no series {series_uid!r} below it; series found: {listing}")
    else:
        chosen = [s for s in series if s.modality.upper() == "CT" and not s.localizer]
        if len(chosen) != 1:
            raise DicomError(f"{folder}: no DICOM files in the folder itself; {len(series)} series below it, "
                             f"{len(chosen)} of them CT: {listing}; give one series folder")
    return chosen[0].folder, (f"{folder}: no DICOM files in the folder itself; {len(series)} series below it: "
                              f"{listing}; reading {chosen[0].folder}")
