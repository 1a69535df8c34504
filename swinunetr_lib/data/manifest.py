"""Data lists in MONAI's decathlon datalist JSON, with paths relative to a data root.

API::

    m = build_manifest(root, layout="auto", n_folds=5, seed=0)   # scan decathlon / btcv / flat layouts
    write_manifest(m, path)                                     # atomic JSON
    train, val = split_fold(m, fold=0)                          # entries with "fold" == 0 become validation
    subsets = labeled_fraction_subsets(m["training"], (0.1, 0.25, 0.5, 1.0), seed=0)  # nested subsets
    entries = resolve_entries(path_or_manifest, root, "training")  # absolute paths for MONAI datasets

A manifest is ``{"name", "description", "modality": {"0": "CT"}, "labels": {"0": "background", ...},
"numTraining", "training": [{"image": rel, "label": rel, "fold": k}, ...], "validation": [...],
"test": [...]}``, readable by ``monai.data.load_decathlon_datalist(path, base_dir=root)``.
Layouts: MSD ``imagesTr/labelsTr/imagesTs`` (Antonelli et al. 2022); BTCV ``img/imgXXXX`` + ``label/labelXXXX``
(``RawData/Training`` + ``RawData/Testing`` in the challenge archive, found from the folder holding ``RawData/``,
from ``RawData/`` or from ``RawData/Training/``) or the Swin UNETR / MONAI layout ``imagesTr/img0001`` +
``labelsTr/label0001`` + ``imagesTs/`` beside ``dataset_0.json``; images and labels pair by file name, else by
case number. ``flat``: every NIfTI under a folder except label maps, unlabeled (pretraining).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..utils.files import atomic_write_text, check_folder_creatable
from .manifest_paths import listed_but_missing, manifest_path_problem
from .registry import dataset_info

NIFTI_SUFFIXES = (".nii.gz", ".nii")
Layout = Literal["auto", "decathlon", "btcv", "flat"]


def _is_nifti(p: Path) -> bool:
    return p.is_file() and p.name.endswith(NIFTI_SUFFIXES) and not p.name.startswith((".", "._"))


def _stem(p: Path) -> str:
    for suf in NIFTI_SUFFIXES:
        if p.name.endswith(suf):
            return p.name[: -len(suf)]
    return p.stem


def _rel(p: Path, root: Path) -> str:
    return p.relative_to(root).as_posix()


def _case_number(p: Path) -> int | None:
    m = re.search(r"(\d+)$", _stem(p))
    return int(m.group(1)) if m else None


def _niftis(folder: Path | None) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_nifti(p)) if folder is not None and folder.is_dir() else []


_BTCV_IMAGE = re.compile(r"img\d+", re.IGNORECASE)


def btcv_folders(root: str | os.PathLike[str]) -> tuple[Path, Path, Path | None] | None:
    """(images, labels, test images) folders of a BTCV download at ``root``; None when there is none.

    Recognised: the challenge archive ``RawData/Training/{img,label}`` + ``RawData/Testing/img`` with ``root``
    the folder holding ``RawData/``, ``RawData/`` itself or ``RawData/Training/``; and the Swin UNETR / MONAI
    layout ``imagesTr/img0001.nii.gz`` + ``labelsTr/label0001.nii.gz`` + ``imagesTs/`` (beside ``dataset_0.json``).
    The folders returned need not exist (a missing label folder is reported by the scan).
    """
    root = Path(root)
    for base, test in ((root, None), (root / "Training", root / "Testing"),
                       (root / "RawData" / "Training", root / "RawData" / "Testing")):
        if (base / "img").is_dir():
            return base / "img", base / "label", None if test is None else test / "img"
    images = _niftis(root / "imagesTr")
    if images and all(_BTCV_IMAGE.fullmatch(_stem(p)) for p in images):
        return root / "imagesTr", root / "labelsTr", root / "imagesTs"
    return None


def detect_layout(root: str | os.PathLike[str]) -> str:
    """``"btcv"`` for a BTCV download (:func:`btcv_folders`, with its label folder), ``"decathlon"`` if
    ``imagesTr/`` exists, else ``"flat"``."""
    root = Path(root)
    found = btcv_folders(root)
    if found is not None and found[1].is_dir():
        return "btcv"
    if (root / "imagesTr").is_dir():
        return "decathlon"
    return "flat"


def pair_images_and_labels(root: Path, image_dir: Path, label_dir: Path) -> list[dict[str, Any]]:
    """One entry per image of ``image_dir``, with the label of ``label_dir`` that has the same file name (MSD:
    ``spleen_2.nii.gz``) or, when no name matches, the same case number (BTCV: ``img0001`` + ``label0001``).

    Raises ``ValueError`` naming both folders when there are images but not one of them pairs with a label.
    An image without a label is kept, unlabeled (the validator flags it)."""
    images, labels = _niftis(image_dir), _niftis(label_dir)
    by_name = {p.name: p for p in labels}
    use_names = any(img.name in by_name for img in images)
    by_number: dict[int | None, Path] = {}
    numbers = [_case_number(p) for p in labels]
    img_numbers = [_case_number(p) for p in images]
    if None not in numbers + img_numbers and len(set(numbers)) == len(numbers) \
            and len(set(img_numbers)) == len(img_numbers):
        by_number = dict(zip(numbers, labels, strict=True))
    entries = []
    for img, number in zip(images, img_numbers, strict=True):
        entry: dict[str, Any] = {"image": _rel(img, root)}
        lab = by_name.get(img.name) if use_names else by_number.get(number)
        if lab is not None:
            entry["label"] = _rel(lab, root)
        entries.append(entry)
    if images and not any("label" in e for e in entries):
        found = (f"{len(labels)} label file(s), e.g. {labels[0].name}" if labels else
                 "no label files" if label_dir.is_dir() else "that folder does not exist")
        raise ValueError(f"{root}: none of the {len(images)} images in {image_dir} (e.g. {images[0].name}) pairs with "
                         f"a label in {label_dir} ({found}); an image pairs with the label of the same file name "
                         "(MSD: spleen_2.nii.gz) or the same case number (BTCV: img0001 + label0001); unlabeled "
                         "images are --layout flat")
    return entries


def scan_decathlon(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Pair ``imagesTr/X.nii.gz`` with ``labelsTr/X.nii.gz`` (MSD names, e.g. ``spleen_2.nii.gz``; by case
    number when no name matches); ``imagesTs/`` is the test list."""
    training = pair_images_and_labels(root, root / "imagesTr", root / "labelsTr")
    return {"training": training, "test": [{"image": _rel(p, root)} for p in _niftis(root / "imagesTs")]}


def scan_btcv(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Pair ``img0001`` with ``label0001`` by the case number, in either BTCV layout (:func:`btcv_folders`)."""
    found = btcv_folders(root)
    if found is None:
        return {"training": []}
    image_dir, label_dir, test_dir = found
    return {"training": pair_images_and_labels(root, image_dir, label_dir),
            "test": [{"image": _rel(p, root)} for p in _niftis(test_dir)]}


_LABEL_FOLDERS = {"labelstr", "labelsts", "label", "labels"}


def is_label_path(rel: str | os.PathLike[str]) -> bool:
    """True for a file inside a label folder (``labelsTr/``, ``label/``, ...) or named ``label*``."""
    rel = Path(rel)
    return any(part.lower() in _LABEL_FOLDERS for part in rel.parts[:-1]) or rel.name.lower().startswith("label")


def scan_flat(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Every NIfTI below ``root`` (recursively) as an unlabeled pretraining entry; label maps (files in
    ``labelsTr/``, ``label/``, ... or named ``label*``) are never taken as scans."""
    return {"training": [{"image": _rel(p, root)} for p in sorted(root.rglob("*"))
                         if _is_nifti(p) and not is_label_path(p.relative_to(root))]}


def _datalist(root: Path) -> tuple[dict[str, Any], str | None]:
    """The dataset's own data list beside its folders (MSD ``dataset.json``, BTCV's ``dataset_0.json``)."""
    for name in ("dataset.json", "dataset_0.json"):
        f = root / name
        if f.is_file():
            try:
                data = json.loads(f.read_text())
            except (OSError, UnicodeDecodeError, ValueError):
                continue
            if isinstance(data, dict):
                return data, name
    return {}, None


def _take_validation_split(lists: dict[str, list[dict[str, Any]]], meta: Mapping[str, Any]) -> int:
    """Move the training entries the dataset's own list names under ``validation`` there; returns how many."""
    wanted = {os.path.normpath(e["image"]) for e in meta.get("validation") or []
              if isinstance(e, Mapping) and isinstance(e.get("image"), str)}
    moved = [e for e in lists["training"] if os.path.normpath(e["image"]) in wanted]
    if moved:
        lists["validation"] = moved
        lists["training"] = [e for e in lists["training"] if os.path.normpath(e["image"]) not in wanted]
    return len(moved)


def assign_folds(entries: Sequence[dict[str, Any]], n_folds: int = 5, seed: int = 0) -> list[dict[str, Any]]:
    """Copy of ``entries`` with a ``"fold"`` key 0..n_folds-1; depends only on the image paths and ``seed``."""
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    order = sorted(range(len(entries)), key=lambda i: str(entries[i].get("image")))
    perm = np.random.default_rng(seed).permutation(len(order))
    out = [dict(e) for e in entries]
    for rank, k in enumerate(perm):
        out[order[k]]["fold"] = rank % n_folds
    return out


def split_fold(manifest: Mapping[str, Any], fold: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, validation) of ``manifest["training"]`` by the ``"fold"`` key (k-fold cross-validation)."""
    entries = list(manifest["training"])
    if any("fold" not in e for e in entries):
        raise KeyError("some training entries have no 'fold' key; build the manifest with n_folds or assign_folds()")
    folds = sorted({e["fold"] for e in entries})
    if fold not in folds:
        raise ValueError(f"fold {fold} not in the manifest's folds {folds}")
    return [e for e in entries if e["fold"] != fold], [e for e in entries if e["fold"] == fold]


def labeled_fraction_subsets(
    entries: Sequence[dict[str, Any]], fractions: Sequence[float] = (0.1, 0.25, 0.5, 1.0), seed: int = 0
) -> dict[float, list[dict[str, Any]]]:
    """Nested subsets (each smaller one inside the larger) holding ``ceil(f * n)`` (>= 1) labeled entries.

    For label-efficiency experiments (Tang et al. 2022: fine-tuning with 10 %-100 % of the BTCV labels).
    """
    labeled = sorted((e for e in entries if "label" in e), key=lambda e: str(e["image"]))
    if not labeled:
        raise ValueError("no labeled entries to take fractions of")
    for f in fractions:
        if not 0 < f <= 1:
            raise ValueError(f"fraction {f} is not in (0, 1]")
    order = [labeled[i] for i in np.random.default_rng(seed).permutation(len(labeled))]
    return {float(f): [dict(e) for e in order[: max(1, int(np.ceil(f * len(order) - 1e-9)))]] for f in fractions}


def build_manifest(
    root: str | os.PathLike[str],
    layout: Layout = "auto",
    n_folds: int = 5,
    seed: int = 0,
    name: str | None = None,
    modality: str = "CT",
    labels: Mapping[int, str] | None = None,
    description: str = "",
    allow_missing: bool = False,
) -> dict[str, Any]:
    """Scan ``root`` and return a decathlon-style manifest with relative paths and k-fold ``"fold"`` keys.

    Name, description, modality and labels come from the arguments, else from the dataset's own data list
    beside its folders (MSD ``dataset.json``, BTCV ``dataset_0.json``), else (BTCV layouts) from the dataset
    registry (``data_manifests/registry.json``: BTCV's 14 classes). When that data list has a ``validation``
    list (BTCV's ``dataset_0.json``: 24 training / 6 validation), those cases form the manifest's
    ``validation`` list and only the others get folds.

    When that data list names images of which some (not all: then it describes another layout) are not on disk,
    that is a ``ValueError`` naming the list, how many and which, unless ``allow_missing``: then the manifest holds
    the cases found and names the others under ``"missing_from_datalist"``.

    Raises ``FileNotFoundError`` naming ``root`` when it is missing, ``ValueError`` when nothing is found,
    when a labeled layout pairs no image with a label (naming both folders), or ``n_folds`` < 1.
    """
    root = Path(root)
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 1:
        raise ValueError(f"n_folds must be an int >= 1, got {n_folds!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} is not a folder")
    kind = detect_layout(root) if layout == "auto" else layout
    scanners = {"decathlon": scan_decathlon, "btcv": scan_btcv, "flat": scan_flat}
    if kind not in scanners:
        raise ValueError(f"layout must be one of {['auto', *scanners]}, got {layout!r}")
    lists = scanners[kind](root)
    if not lists["training"]:
        raise ValueError(f"{root}: no NIfTI images found for layout {kind!r} (expected {_EXPECT[kind]})")
    meta: dict[str, Any] = {}
    missing: list[str] = []
    if kind in ("decathlon", "btcv"):
        meta, list_name = _datalist(root)
        _take_validation_split(lists, meta)
        missing, n_listed = listed_but_missing(root, meta)
        if missing and not allow_missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise ValueError(f"{root / str(list_name)}: {len(missing)} of the {n_listed} images it lists are not on "
                             f"disk ({shown}); copy them, or give --allow-missing to build from the cases found")
    if kind == "btcv" and "labels" not in meta:
        btcv = dataset_info("BTCV")
        meta = {"name": "BTCV", "modality": dict(btcv.modality), **meta, "labels": dict(btcv.labels or {})}
    if n_folds > 1:
        lists["training"] = assign_folds(lists["training"], n_folds, seed)
    out: dict[str, Any] = {
        "name": name or meta.get("name") or root.name,
        "description": description or meta.get("description", f"scanned from a {kind} layout"),
        "modality": meta.get("modality", {"0": modality}),
        "numTraining": len(lists["training"]),
        "training": lists["training"],
    }
    if labels is not None:
        out["labels"] = {str(k): v for k, v in labels.items()}
    elif "labels" in meta:
        out["labels"] = meta["labels"]
    for key in ("validation", "test"):
        if lists.get(key):
            out[key] = lists[key]
    if missing:
        out["missing_from_datalist"] = missing
    return out



_EXPECT = {"decathlon": "imagesTr/*.nii.gz + labelsTr/",
           "btcv": "img/img0001.nii.gz + label/label0001.nii.gz, RawData/Training/{img,label}/ or "
                   "imagesTr/img0001.nii.gz + labelsTr/label0001.nii.gz",
           "flat": "*.nii or *.nii.gz files"}


def check_output_file(path: str | os.PathLike[str], what: str = "output",
                      suffixes: Sequence[str] | None = None) -> Path:
    """Raise ``ValueError`` naming ``what`` and ``path`` when a file cannot be written there.

    Checked before any work is done: ``path`` must not be an existing folder, no existing ancestor may be a
    regular file, and (when given) the name must end in one of ``suffixes`` (case-insensitive).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory; give a file name")
    if suffixes is not None and not path.name.lower().endswith(tuple(s.lower() for s in suffixes)):
        raise ValueError(f"{what} {path}: the file name must end in {' or '.join(suffixes)}")
    check_folder_creatable(path.parent, f"{what} {path}: its folder")
    return path


def parse_fractions(text: str, option: str = "--fractions") -> list[float]:
    """``"0.1,0.25,1"`` -> ``[0.1, 0.25, 1.0]``; each value must be in (0, 1] and name a distinct
    ``_fracNN`` file; errors name ``option``."""
    out: list[float] = []
    for item in str(text).split(","):
        try:
            f = float(item.strip())
        except ValueError:
            raise ValueError(f"{option} {text!r}: {item.strip()!r} is not a number "
                             "(expected a comma list such as 0.1,0.25,0.5,1)") from None
        if not 0 < f <= 1:
            raise ValueError(f"{option} {text!r}: fraction {item.strip()} is not in (0, 1]")
        out.append(f)
    names: dict[int, float] = {}
    for f in out:
        pct = int(round(f * 100))
        if pct in names and names[pct] != f:
            raise ValueError(f"{option} {text!r}: fractions {names[pct]:g} and {f:g} would both be written "
                             f"to the same _frac{pct}.json file")
        names[pct] = f
    return list(dict.fromkeys(out))


def fraction_manifest_path(out: str | os.PathLike[str], fraction: float) -> Path:
    """``m.json`` + 0.25 -> ``m_frac25.json`` (beside ``out``)."""
    out = Path(out)
    return out.with_name(out.stem + f"_frac{int(round(fraction * 100))}.json")


def write_manifest(manifest: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write JSON atomically (indent 2, stable key order as given)."""
    return atomic_write_text(json.dumps(manifest, indent=2) + "\n", path)


def load_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a manifest; errors name the file and the problem."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"manifest {path} is a directory, not a JSON file")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"manifest {path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"manifest {path} is not readable JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"manifest {path}: top level must be a JSON object, got {type(data).__name__}")
    return data


def resolve_entries(
    manifest: str | os.PathLike[str] | Mapping[str, Any], root: str | os.PathLike[str] | None = None,
    key: str = "training",
) -> list[dict[str, Any]]:
    """Entries of list ``key`` with ``image``/``label`` made absolute under ``root``.

    ``root`` defaults to the manifest file's folder when ``manifest`` is a path. Raises ``ValueError`` naming
    the manifest (when it is a file), the entry and the key when an entry is not an object or an
    ``image``/``label`` is not a non-empty string (MSD's ``test`` lists of plain path strings are accepted).
    """
    where = "manifest"
    if isinstance(manifest, (str, os.PathLike)):
        where = f"manifest {manifest}"
        root = Path(manifest).parent if root is None else root
        manifest = load_manifest(manifest)
    if root is None:
        raise ValueError("root is required when the manifest is given as a dict")
    if not isinstance(manifest, Mapping):
        raise ValueError(f"{where}: must be a JSON object, got {type(manifest).__name__}")
    if key not in manifest:
        raise KeyError(f"{where} has no list {key!r}; lists: "
                       f"{[k for k, v in manifest.items() if isinstance(v, list)]}")
    entries = manifest[key]
    if not isinstance(entries, list):
        raise ValueError(f"{where}: {key!r} must be a list of entries, got {type(entries).__name__}")
    out = []
    for i, e in enumerate(entries):
        if isinstance(e, str) and key == "test":  # MSD dataset.json lists test images as plain strings
            e = {"image": e}
        if not isinstance(e, Mapping):
            raise ValueError(f"{where}: {key}[{i}] must be an object with 'image', got {type(e).__name__}")
        e = dict(e)
        for k in ("image", "label"):
            if k in e:
                if not isinstance(e[k], str) or not e[k].strip():
                    raise ValueError(f"{where}: {key}[{i}][{k!r}] must be a non-empty path string, got {e[k]!r}")
                found = manifest_path_problem(e[k], root)  # the rule of `validate`: refused here as there
                if found is not None:
                    raise ValueError(f"{where}: {key}[{i}] {k} {e[k]!r} {found.problem}")
                e[k] = str(Path(root) / e[k])
        out.append(e)
    return out
