"""Manifest validator: reports EVERY problem of a decathlon-style data list at once; never crashes, never writes.

API::

    report = validate_manifest("finetune.json", root=None)   # root defaults to the manifest's folder
    report.ok          # True when no problem has severity "error"
    report.problems    # [Problem(entry="training[3]", field="label", path=..., code="shape_mismatch", message=...)]
    report.table()     # pandas QC table, one row per entry (shape, spacing, value range, classes, status)
    print(report)      # one line per problem: "<entry> <field> '<path>': <problem>"

CLI: ``python -m swinunetr_lib.data validate MANIFEST --root DIR`` (exit status 1 when there are errors).

Checks. Manifest: missing/unreadable JSON, not an object, no data list, list not a list or empty, task classes
(``"labels"``) malformed. Entry: not an object, missing ``image`` (or ``label`` where the manifest declares classes),
path not a string, absolute, or leaving the root, duplicate image (within or across lists), missing file, folder
instead of file, macOS AppleDouble ``._`` file, unreadable/not NIfTI, corrupt gzip, truncated data, not 3D (4D only with
channels last), image and label spatial shape or affine differing, label values not integers or outside the task's
classes, NaN/Inf, constant image, and for CT: values that look normalised or raw (intercept not applied) or beyond the
HU scale. A class absent from one case is not a problem.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.filebasedimages import ImageFileError

from .manifest_paths import manifest_path_problem

DATA_LISTS = ("training", "validation", "test")
HU_SCALE = (-3100.0, 31000.0)  # the widest CT scale in use (extended range); -3024 padding is common


@dataclasses.dataclass(frozen=True)
class Problem:
    entry: str  # "manifest", "training[3]", ...
    code: str  # short name, e.g. "missing_file", "corrupt_gzip", "shape_mismatch"
    message: str
    field: str = ""  # "image" / "label" / "" for the whole entry
    path: str | None = None
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = self.entry + (f" {self.field}" if self.field else "") + (f" '{self.path}'" if self.path else "")
        return f"[{self.severity}] {where}: {self.message} ({self.code})"


@dataclasses.dataclass
class ValidationReport:
    manifest: str
    root: str
    problems: list[Problem]
    rows: list[dict[str, Any]]  # per-entry QC facts

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def codes(self) -> set[str]:
        return {p.code for p in self.problems}

    def table(self) -> Any:
        """QC table (pandas DataFrame): one row per entry, with its problems joined in ``problems``."""
        return pd.DataFrame(self.rows)

    def __str__(self) -> str:
        head = (f"{self.manifest} (root {self.root}): {len(self.rows)} entries, {len(self.errors)} errors, "
                f"{len(self.problems) - len(self.errors)} warnings")
        return "\n".join([head, *map(str, self.problems)])


def _looks_raw_with_padding(data: np.ndarray, lo: float) -> bool:
    """Raw stored CT values (water ~ +1024) with a negative padding value such as -2000: apart from the
    padding, almost no voxel is air (-1100..-900 HU) and a large share sits at +900..+1200 (raw soft tissue),
    which in Hounsfield units would be dense bone."""
    values = data[data > lo]  # the padding value is the minimum
    if values.size == 0:
        return False
    air = np.count_nonzero((values >= -1100) & (values <= -900)) / values.size
    raw_tissue = np.count_nonzero((values >= 900) & (values <= 1200)) / values.size
    return air < 1e-3 and raw_tissue > 0.2


class _Checker:
    def __init__(self, manifest_name: str, root: Path, modality: str | None, classes: set[int] | None,
                 channels: int | None):
        self.name, self.root, self.modality = manifest_name, root, modality
        self.classes, self.channels = classes, channels
        self.problems: list[Problem] = []

    def add(self, entry: str, code: str, message: str, field: str = "", path: str | None = None,
            severity: Literal["error", "warning"] = "error") -> None:
        self.problems.append(Problem(entry, code, message, field, path, severity))

    # -- one file ---------------------------------------------------------------------------------
    def resolve(self, entry: str, field: str, value: Any) -> Path | None:
        found = manifest_path_problem(value, self.root)  # the same rule as training's readers
        if found is not None:
            shown = value if isinstance(value, str) and value.strip() else None
            message = f"'{field}' {found.problem}" if found.code == "bad_path" else f"path {found.problem}"
            self.add(entry, found.code, message, field, shown)
            return None
        full = self.root / value
        if not full.exists():
            self.add(entry, "missing_file", "file does not exist", field, value)
            return None
        if not full.is_file():
            self.add(entry, "not_a_file", "path is a folder, not a file", field, value)
            return None
        return full

    def load(self, entry: str, field: str, rel: str, full: Path) -> tuple[np.ndarray, np.ndarray, tuple] | None:
        """(data, affine, zooms) or None after recording why the file cannot be read."""
        if full.stat().st_size == 0:
            self.add(entry, "unreadable", "file is empty (0 bytes)", field, rel)
            return None
        if full.name.endswith(".gz"):
            with open(full, "rb") as f:
                if f.read(2) != b"\x1f\x8b":
                    self.add(entry, "corrupt_gzip", "named .gz but is not a gzip stream", field, rel)
                    return None
        try:
            img = nib.load(full)
        except ImageFileError as err:
            self.add(entry, "unreadable", f"not a readable NIfTI/medical image ({err})", field, rel)
            return None
        except (gzip.BadGzipFile, zlib.error) as err:
            self.add(entry, "corrupt_gzip", f"gzip stream is corrupt ({err})", field, rel)
            return None
        except EOFError as err:
            self.add(entry, "truncated", f"file ends inside its header ({err})", field, rel)
            return None
        except Exception as err:  # any other reader failure is reported, never raised
            self.add(entry, "unreadable", f"cannot read header: {type(err).__name__}: {err}", field, rel)
            return None
        try:
            data = np.asanyarray(img.dataobj)
        except (zlib.error, gzip.BadGzipFile) as err:
            self.add(entry, "corrupt_gzip", f"gzip stream is corrupt ({err})", field, rel)
            return None
        except EOFError:
            self.add(entry, "truncated", "file is truncated: compressed data ends before the image data", field, rel)
            return None
        except (OSError, ValueError) as err:
            msg = str(err).splitlines()[0]
            code = "truncated" if "Expected" in msg and "bytes" in msg else "unreadable"
            text = f"file is truncated: {msg}" if code == "truncated" else f"cannot read image data: {msg}"
            self.add(entry, code, text, field, rel)
            return None
        except Exception as err:
            self.add(entry, "unreadable", f"cannot read image data: {type(err).__name__}: {err}", field, rel)
            return None
        affine = img.affine if img.affine is not None else np.eye(4)
        return data, np.asarray(affine, float), tuple(float(z) for z in img.header.get_zooms()[:3])

    # -- one entry --------------------------------------------------------------------------------
    def check_image(self, entry: str, rel: str, data: np.ndarray, affine: np.ndarray, row: dict[str, Any]) -> None:
        shape = data.shape
        if data.ndim == 4 and shape[3] >= 1:
            n_ch = shape[3]
            if self.channels is not None and n_ch != self.channels and not (n_ch == 1 and self.channels == 1):
                self.add(entry, "channels", f"image has {n_ch} channels (last axis) but the manifest's modality "
                         f"lists {self.channels}", "image", rel)
        elif data.ndim != 3:
            self.add(entry, "not_3d", f"image is {data.ndim}D with shape {shape}; expected 3D (X, Y, Z) or 4D "
                     "(X, Y, Z, C) with channels last", "image", rel)
            return
        if data.ndim == 3 and self.channels not in (None, 1):
            self.add(entry, "channels", f"image is 3D but the manifest's modality lists {self.channels} channels",
                     "image", rel)
        if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
            self.add(entry, "bad_affine", "affine is singular (zero voxel size)", "image", rel)
        if np.issubdtype(data.dtype, np.floating):
            finite = np.isfinite(data)
            if not finite.all():
                n_nan, n_inf = int(np.isnan(data).sum()), int(np.isinf(data).sum())
                self.add(entry, "nan_inf", f"image holds {n_nan} NaN and {n_inf} Inf voxels", "image", rel)
                data = data[finite]
        if data.size == 0:
            self.add(entry, "empty_image", "image has no finite voxels", "image", rel)
            return
        lo, hi = float(data.min()), float(data.max())
        row.update(value_min=lo, value_max=hi)
        if hi - lo < 1e-6:
            self.add(entry, "constant_image", f"every voxel has the value {lo:g}", "image", rel)
        elif self.modality == "CT":
            if lo >= -1.5 and hi <= 1.5:
                self.add(entry, "implausible_hu", f"CT values span [{lo:g}, {hi:g}]: normalised, not Hounsfield units",
                         "image", rel)
            elif lo >= 0 and hi > 1000:
                self.add(entry, "implausible_hu", f"CT values span [{lo:g}, {hi:g}] with no negative values: raw "
                         "stored pixels (RescaleIntercept not applied?), not Hounsfield units", "image", rel)
            elif _looks_raw_with_padding(data, lo):
                self.add(entry, "implausible_hu", f"CT values span [{lo:g}, {hi:g}] but nothing lies near -1000 HU "
                         "(air) while much lies near +1000: raw stored pixels with a padding value (RescaleIntercept "
                         "not applied?), not Hounsfield units", "image", rel)
            elif lo < HU_SCALE[0] or hi > HU_SCALE[1]:
                self.add(entry, "implausible_hu", f"CT values span [{lo:g}, {hi:g}], beyond the HU scale "
                         f"[{HU_SCALE[0]:g}, {HU_SCALE[1]:g}] (padding value or wrong scaling?)", "image", rel)
            elif lo > -500:
                self.add(entry, "implausible_hu", f"CT minimum is {lo:g} HU: no air in the volume (is it in HU?)",
                         "image", rel, severity="warning")

    def check_label(self, entry: str, rel: str, lab: np.ndarray, row: dict[str, Any]) -> bool:
        if lab.ndim == 4 and lab.shape[3] == 1:
            lab = lab[..., 0]
        if lab.ndim != 3:
            self.add(entry, "not_3d", f"label is {lab.ndim}D with shape {lab.shape}; expected 3D", "label", rel)
            return False
        if np.issubdtype(lab.dtype, np.floating):
            if not np.isfinite(lab).all():
                self.add(entry, "nan_inf", "label holds NaN or Inf values", "label", rel)
                return True
            if not np.array_equal(lab, np.round(lab)):
                self.add(entry, "label_not_integer", "label holds non-integer values (interpolated?)", "label", rel)
                return True
        values = np.unique(lab).astype(np.int64)
        row["label_values"] = " ".join(map(str, values[:20].tolist())) + (" ..." if len(values) > 20 else "")
        if self.classes is not None:
            bad = sorted(set(values.tolist()) - self.classes)
            if bad:
                self.add(entry, "label_out_of_range", f"label values {bad[:10]} are not task classes "
                         f"{min(self.classes)}..{max(self.classes)}", "label", rel)
        elif values.min() < 0:
            self.add(entry, "label_out_of_range", f"negative label values {values[values < 0][:10].tolist()}",
                     "label", rel)
        if values.max() == 0:
            self.add(entry, "empty_label", "label has no foreground voxels", "label", rel, severity="warning")
        return True

    def check_entry(self, list_name: str, idx: int, entry: Any, need_label: bool, seen: dict[str, str],
                    row: dict[str, Any]) -> None:
        name = f"{list_name}[{idx}]"
        if not isinstance(entry, dict):
            self.add(name, "bad_entry", f"entry must be an object with 'image', got {type(entry).__name__}")
            return
        if "image" not in entry:
            self.add(name, "missing_key", f"entry has no 'image' key (keys: {sorted(entry)})")
        if need_label and "label" not in entry:
            self.add(name, "missing_key", "entry has no 'label' key but the manifest declares label classes "
                     "(or other entries of this list have labels)")
        row.update(image=entry.get("image"), label=entry.get("label"))
        loaded: dict[str, tuple | None] = {}
        for field in ("image", "label"):
            if field not in entry:
                continue
            value = entry[field]
            if field == "image" and isinstance(value, str):
                key = os.path.normpath(value)
                if key in seen:
                    self.add(name, "duplicate", f"same image as {seen[key]}", field, value)
                else:
                    seen[key] = name
            full = self.resolve(name, field, value)
            if full is not None and full.name.startswith("._"):
                self.add(name, "appledouble", "macOS AppleDouble file ('._' prefix: Finder metadata that macOS "
                         f"archivers put beside each file), not an image; list {full.name[2:]} instead and delete "
                         "the '._' files", field, value)
                full = None
            loaded[field] = self.load(name, field, value, full) if full is not None else None
        img, lab = loaded.get("image"), loaded.get("label")
        if img is not None:
            row.update(shape="x".join(map(str, img[0].shape)), spacing="x".join(f"{z:g}" for z in img[2]))
            self.check_image(name, entry["image"], img[0], img[1], row)
        label_ok = lab is not None and self.check_label(name, entry["label"], lab[0], row)
        if img is not None and label_ok and lab is not None:
            ishape, lshape = img[0].shape[:3], lab[0].shape[:3]
            if ishape != lshape:
                self.add(name, "shape_mismatch", f"image shape {ishape} != label shape {lshape}", "label",
                         entry["label"])
            elif not np.allclose(img[1], lab[1], atol=1e-3):
                diff = float(np.abs(img[1] - lab[1]).max())
                self.add(name, "affine_mismatch", f"image and label affines differ (max {diff:.4g} mm): the label is "
                         "not on the image grid", "label", entry["label"])


def _task_classes(manifest: Mapping[str, Any], num_classes: int | None, chk: _Checker) -> set[int] | None:
    if num_classes is not None:
        return set(range(num_classes))
    labels = manifest.get("labels")
    if labels is None:
        return None
    try:
        return {int(k) for k in labels}
    except (TypeError, ValueError):
        chk.add("manifest", "bad_labels", f"'labels' must map class ids to names, got {labels!r}")
        return None


def validate_manifest(
    manifest: str | os.PathLike[str] | Mapping[str, Any],
    root: str | os.PathLike[str] | None = None,
    *,
    modality: str | None = None,
    num_classes: int | None = None,
    lists: Sequence[str] = DATA_LISTS,
) -> ValidationReport:
    """Check a manifest (a JSON path or an already loaded dict) and every file it names; never raises.

    Args:
        manifest: path to the JSON (root defaults to its folder) or the dict itself (then ``root`` is required).
        modality: "CT" enables the HU checks; default: the manifest's ``modality["0"]``.
        num_classes: task classes ``0..num_classes-1``; default: the manifest's ``labels`` keys.
        lists: which data lists to check.
    """
    name = str(manifest) if isinstance(manifest, (str, os.PathLike)) else "<manifest dict>"
    root_path = Path(root) if root is not None else (Path(manifest).parent if isinstance(manifest, (str, os.PathLike))
                                                     else Path("."))
    chk = _Checker(name, root_path, modality, None, None)
    rows: list[dict[str, Any]] = []
    try:
        data = _read(manifest, chk)
        if data is None:
            return ValidationReport(name, str(root_path), chk.problems, rows)
        if not root_path.is_dir():
            chk.add("manifest", "missing_root", f"data root {root_path} is not a folder")
        mod = data.get("modality")
        if modality is None and isinstance(mod, dict):
            chk.modality = str(mod.get("0", mod.get(0, ""))) or None
        chk.channels = len(mod) if isinstance(mod, dict) and mod else None
        chk.classes = _task_classes(data, num_classes, chk)
        present = [k for k in lists if k in data]
        if not present:
            chk.add("manifest", "no_lists", f"manifest has none of the data lists {list(lists)}")
        seen: dict[str, str] = {}
        for key in present:
            entries = data[key]
            if not isinstance(entries, list):
                chk.add("manifest", "bad_list", f"'{key}' must be a list of entries, got {type(entries).__name__}")
                continue
            if not entries:
                chk.add("manifest", "empty_list", f"list '{key}' is empty",
                        severity="error" if key == "training" else "warning")
                continue
            some_labeled = any(isinstance(e, dict) and "label" in e for e in entries)
            need_label = key != "test" and (chk.classes is not None or some_labeled)
            for i, entry in enumerate(entries):
                if key == "test" and isinstance(entry, str):  # MSD's dataset.json lists test images as strings
                    entry = {"image": entry}
                row: dict[str, Any] = {"entry": f"{key}[{i}]"}
                before = len(chk.problems)
                try:
                    chk.check_entry(key, i, entry, need_label, seen, row)
                except Exception as err:  # the validator reports, it never crashes
                    chk.add(f"{key}[{i}]", "internal_error", f"unexpected error while checking: {err!r}")
                new = chk.problems[before:]
                row["status"] = "error" if any(p.severity == "error" for p in new) else ("warning" if new else "ok")
                row["problems"] = "; ".join(f"{p.field + ': ' if p.field else ''}{p.message}" for p in new)
                rows.append(row)
    except Exception as err:
        chk.add("manifest", "internal_error", f"unexpected error while validating: {err!r}")
    return ValidationReport(name, str(root_path), chk.problems, rows)


def _read(manifest: str | os.PathLike[str] | Mapping[str, Any], chk: _Checker) -> Mapping[str, Any] | None:
    if not isinstance(manifest, (str, os.PathLike)):
        if not isinstance(manifest, Mapping):
            chk.add("manifest", "not_an_object", f"manifest must be a mapping, got {type(manifest).__name__}")
            return None
        return manifest
    path = Path(manifest)
    if not path.is_file():
        chk.add("manifest", "missing_manifest", f"manifest file {path} does not exist")
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        chk.add("manifest", "bad_json", f"manifest {path} is not valid JSON: {err}")
        return None
    if not isinstance(data, dict):
        chk.add("manifest", "not_an_object", f"manifest top level must be an object, got {type(data).__name__}")
        return None
    return data
