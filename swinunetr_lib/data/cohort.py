"""The bundled demo cohort: the real example CT (labels remapped to BTCV) + synthetic phantoms.

API (stable)::

    c = build_demo_cohort(out_dir=None, n_phantoms=12, seed=0)  # idempotent; default paths.demo_cohort_dir()
    c.root               # folder; every manifest path is relative to it
    c.pretrain_manifest  # {"training": [{"image"}...], "validation": [{"image"}]}  (CT only, unlabeled)
    c.finetune_manifest  # {"training": [{"image", "label", "fold"}...], "validation": [{"image", "label"}]}
    c.fraction_manifests # {0.1: Path, 0.25: ..., 0.5: ..., 1.0: ...} labeled-fraction subsets of training
    c.msd_manifests      # {"Task901_PhantomSpleen": Path, "Task902_PhantomMR": Path} (MSD-style folders)

Layout under ``root``: ``imagesTr/``, ``labelsTr/`` (fine-tuning: ``example_ct_sm`` + ``phantom_XXX``),
``unlabeled/`` (pretraining-only CTs: full ``example_ct`` + extra phantoms), ``msd/TaskNNN_*/`` (imagesTr,
labelsTr, dataset.json), ``pretrain.json``, ``finetune.json``, ``finetune_frac*.json``, ``README.txt`` and
``cohort.json`` (the build parameters; written last, so a complete build is recognised and not redone).
Phantoms are 128 x 96 x 72 voxels at 3 mm isotropic by default (the real examples' spacing), every phantom
file name starts with ``phantom_`` and its NIfTI ``descrip`` says it is a synthetic phantom. The held-out
``validation`` list of ``finetune.json`` holds ``n_validation`` phantoms only; the real example is in training.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from .. import paths
from ..config import Config
from ..utils.files import atomic_path, atomic_write_text, check_folder_creatable
from .example_data import fetch_example
from .labels import BTCV_LABELS, totalseg_to_btcv
from .manifest import assign_folds, labeled_fraction_subsets, write_manifest
from .phantom import PHANTOM_DESCRIP, default_shape, make_abdomen_phantom, make_msd_phantom, write_phantom
from .phantom_variability import check_variability

COHORT_VERSION = 1
FRACTIONS = (0.1, 0.25, 0.5, 1.0)


@dataclasses.dataclass
class DemoCohort:
    """Paths of a built demo cohort (all manifests' paths are relative to ``root``)."""

    root: Path
    pretrain_manifest: Path
    finetune_manifest: Path
    fraction_manifests: dict[float, Path]
    msd_manifests: dict[str, Path]
    params: dict[str, Any]

    def manifests(self) -> dict[str, Path]:
        out = {"pretrain": self.pretrain_manifest, "finetune": self.finetune_manifest}
        out.update({f"finetune_frac{int(f * 100)}": p for f, p in self.fraction_manifests.items()})
        out.update(self.msd_manifests)
        return out


def _cohort(root: Path, params: dict[str, Any]) -> DemoCohort:
    return DemoCohort(
        root=root, pretrain_manifest=root / "pretrain.json", finetune_manifest=root / "finetune.json",
        fraction_manifests={f: root / f"finetune_frac{int(f * 100)}.json" for f in FRACTIONS},
        msd_manifests={t: root / "msd" / t / "dataset.json" for t in ("Task901_PhantomSpleen", "Task902_PhantomMR")},
        params=params,
    )


def _generator_digest() -> str:
    """Digest of the code that draws the cohort, so a changed generator triggers a rebuild."""
    h = hashlib.sha256()
    for name in ("phantom.py", "phantom_variability.py", "labels.py", "cohort.py"):
        h.update((Path(__file__).with_name(name)).read_bytes())
    return h.hexdigest()[:16]


def _save_nifti(arr: np.ndarray, affine: np.ndarray, path: Path, descrip: str) -> None:
    nii = nib.Nifti1Image(arr, affine)
    nii.header["descrip"] = descrip[:79].encode()
    nii.set_qform(affine, code=1)
    nii.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(nii, tmp)


def _is_complete(c: DemoCohort) -> bool:
    stamp = c.root / "cohort.json"
    if not stamp.is_file():
        return False
    try:
        saved = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    if saved.get("params") != c.params:
        return False
    return (all((c.root / f).is_file() for f in saved.get("files", []))
            and all(p.is_file() for p in c.manifests().values()))


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_params(n_phantoms: Any, seed: Any, spacing: Any, shape: Any, n_validation: Any, n_unlabeled: Any,
                  n_msd: Any, include_real: Any, force: Any) -> tuple[tuple[float, ...], tuple[int, ...] | None]:
    """Validate :func:`build_demo_cohort`'s parameters (before anything is written); errors name the parameter."""
    for name, value, low in (("n_phantoms", n_phantoms, 2), ("n_validation", n_validation, 1),
                             ("n_unlabeled", n_unlabeled, 0), ("n_msd", n_msd, 2), ("seed", seed, 0)):
        if not _is_int(value) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if n_phantoms < n_validation + 1:
        raise ValueError(f"need n_validation >= 1 and n_phantoms > n_validation, got {n_phantoms=} {n_validation=}")
    for name, value in (("include_real", include_real), ("force", force)):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name} must be true or false, got {value!r}")
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        sp = ()
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp) \
            or any(isinstance(s, (bool, str)) for s in spacing):
        raise ValueError(f"spacing must be three positive numbers in mm, got {spacing!r}")
    if shape is not None:
        if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) != 3 \
                or not all(_is_int(v) and v >= 8 for v in shape):
            raise ValueError(f"shape must be three ints >= 8 (or None), got {shape!r}")
        shp: tuple[int, ...] | None = tuple(int(v) for v in shape)
    else:
        shp = None
        grid = default_shape(sp)  # type: ignore[arg-type]
        if min(grid) < 8:
            raise ValueError(f"spacing {list(sp)} mm is too coarse: the default field of view would be {list(grid)} "
                             "voxels (each axis needs >= 8)")
    return sp, shp


def _check_out_dir(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise ValueError(f"out_dir {root} exists and is not a folder")
    check_folder_creatable(root, f"out_dir {root}")


def build_demo_cohort(
    out_dir: str | os.PathLike[str] | None = None,
    n_phantoms: int = 12,
    seed: int = 0,
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0),
    shape: tuple[int, int, int] | None = None,
    n_validation: int = 3,
    n_unlabeled: int = 4,
    n_msd: int = 6,
    include_real: bool = True,
    force: bool = False,
    variability: float = 0.0,
) -> DemoCohort:
    """Build (or find already built) the demo cohort; returns its paths.

    Args:
        out_dir: target folder; ``None`` -> ``swinunetr_lib.paths.demo_cohort_dir()``.
        n_phantoms: labeled abdomen phantoms (seeds ``seed .. seed+n_phantoms-1``); the last ``n_validation``
            form the held-out validation list.
        spacing, shape: phantom grid; ``shape=None`` covers 384 x 288 x 216 mm (128 x 96 x 72 at 3 mm).
        n_unlabeled: extra phantoms used only for pretraining (the first one is its validation image).
        n_msd: cases per MSD-style phantom task (single-organ CT spleen; 2-channel MR-like).
        include_real: add the real TotalSegmentator example CT (labels remapped to BTCV ids).
        force: rebuild even when a complete build with the same parameters exists.
        variability: 0..1, how much the abdomen phantoms (labeled and unlabeled) differ as patients do
            (``make_abdomen_phantom(..., variability)``); 0 (default): the template phantoms, as before.
    """
    spacing, shape = _check_params(n_phantoms, seed, spacing, shape, n_validation, n_unlabeled, n_msd,
                                   include_real, force)
    variability = check_variability(variability)
    root = Path(out_dir) if out_dir is not None else paths.demo_cohort_dir()
    _check_out_dir(root)
    params = {"version": COHORT_VERSION, "generator": _generator_digest(), "n_phantoms": n_phantoms, "seed": seed,
              "spacing": [float(s) for s in spacing], "shape": None if shape is None else [int(s) for s in shape],
              "n_validation": n_validation, "n_unlabeled": n_unlabeled, "n_msd": n_msd, "include_real": include_real}
    if variability > 0:  # only then, so that the parameters (and cohort.json) of a template cohort are unchanged
        params["variability"] = variability
    cohort = _cohort(root, params)
    if not force and _is_complete(cohort):
        return cohort
    if include_real:  # fetch (and verify) the real example before anything is written
        real = {name: fetch_example(name) for name in
                ("example_ct_sm.nii.gz", "example_seg.nii.gz", "example_ct.nii.gz", "class_map.json")}
    root.mkdir(parents=True, exist_ok=True)
    (root / "cohort.json").unlink(missing_ok=True)
    files: list[str] = []
    labeled: list[dict[str, Any]] = []
    unlabeled: list[dict[str, Any]] = []
    note = "phantom_* files are SYNTHETIC PHANTOMS generated by swinunetr_lib.data.phantom, not patient data"

    if include_real:
        ct, seg = real["example_ct_sm.nii.gz"], real["example_seg.nii.gz"]
        nii = nib.load(seg)
        btcv, report = totalseg_to_btcv(np.asanyarray(nii.dataobj), real["class_map.json"])
        for src, rel in ((ct, "imagesTr/example_ct_sm.nii.gz"),
                         (real["example_ct.nii.gz"], "unlabeled/example_ct.nii.gz")):
            with atomic_path(root / rel) as tmp:
                shutil.copyfile(src, tmp)
            files.append(rel)
        _save_nifti(btcv, nii.affine, root / "labelsTr/example_ct_sm.nii.gz", "TotalSegmentator labels -> BTCV ids")
        files.append("labelsTr/example_ct_sm.nii.gz")
        labeled.append({"image": "imagesTr/example_ct_sm.nii.gz", "label": "labelsTr/example_ct_sm.nii.gz"})
        unlabeled.append({"image": "unlabeled/example_ct.nii.gz"})

    phantom_entries = []
    for k in range(n_phantoms):
        s = seed + k
        img, lab = f"imagesTr/phantom_{s:03d}.nii.gz", f"labelsTr/phantom_{s:03d}.nii.gz"
        write_phantom(root / img, root / lab, make_abdomen_phantom(s, shape=shape, spacing=spacing,
                                                                     variability=variability))
        files += [img, lab]
        phantom_entries.append({"image": img, "label": lab})
    validation = phantom_entries[n_phantoms - n_validation:]
    labeled += phantom_entries[: n_phantoms - n_validation]
    extra = []
    for k in range(n_unlabeled):
        s = seed + 1000 + k
        img = f"unlabeled/phantom_{s:03d}.nii.gz"
        ph = make_abdomen_phantom(s, shape=shape, spacing=spacing, variability=variability)
        _save_nifti(np.round(ph.image).astype(np.int16), ph.affine, root / img, PHANTOM_DESCRIP)
        files.append(img)
        extra.append({"image": img})

    labels = {str(k): v for k, v in {0: "background", **BTCV_LABELS}.items()}
    common = {"modality": {"0": "CT"}, "tensorImageSize": "3D", "reference": note}
    training = assign_folds(labeled, n_folds=5, seed=seed)
    finetune = {"name": "demo_cohort_finetune", "description": "BTCV-style 13-organ labels; " + note, **common,
                "labels": labels, "numTraining": len(training), "numValidation": len(validation),
                "phantoms": [e["image"] for e in training + validation if "phantom_" in e["image"]],
                "training": training, "validation": validation}
    write_manifest(finetune, cohort.finetune_manifest)
    pre_train = [{"image": e["image"]} for e in labeled] + unlabeled + extra[1:]
    pre_val = extra[:1] if extra else [{"image": validation[0]["image"]}]
    pretrain = {"name": "demo_cohort_pretrain", "description": "unlabeled CTs for self-supervised pretraining; " + note,
                **common, "numTraining": len(pre_train),
                "phantoms": [e["image"] for e in pre_train + pre_val if "phantom_" in e["image"]],
                "training": pre_train, "validation": pre_val}
    write_manifest(pretrain, cohort.pretrain_manifest)
    for f, subset in labeled_fraction_subsets(training, FRACTIONS, seed=seed).items():
        write_manifest({**finetune, "name": f"demo_cohort_finetune_frac{int(f * 100)}", "labeled_fraction": f,
                        "numTraining": len(subset), "training": subset}, cohort.fraction_manifests[f])

    files += _build_msd_tasks(root, n_msd, seed, spacing, shape, note)
    atomic_write_text(f"Demo cohort of swinunetr_lib (built by build_demo_cohort).\n{note}.\n"
                      "imagesTr/example_ct_sm.nii.gz and unlabeled/example_ct.nii.gz are real CTs from the "
                      "TotalSegmentator test files (Apache-2.0); their labels are model outputs remapped to BTCV "
                      "ids.\n",
                      root / "README.txt")
    atomic_write_text(json.dumps({"params": params, "files": files}, indent=2) + "\n", root / "cohort.json")
    return cohort


def _build_msd_tasks(root: Path, n: int, seed: int, spacing, shape, note: str) -> list[str]:
    """MSD-style folders: Task901_PhantomSpleen (CT, 1 channel) and Task902_PhantomMR (MR-like, 2 channels)."""
    files = []
    tasks = {
        "Task901_PhantomSpleen": dict(task="ct_single_organ", modality={"0": "CT"},
                                      labels={"0": "background", "1": "spleen"}),
        "Task902_PhantomMR": dict(task="mr_multichannel", modality={"0": "T1-like", "1": "T2-like"},
                                  labels={"0": "background", "1": "liver", "2": "kidney", "3": "spleen"}),
    }
    for t_i, (name, spec) in enumerate(tasks.items()):
        task_dir = root / "msd" / name
        entries = []
        for k in range(n):
            s = seed + 2000 + 100 * t_i + k
            ph = make_msd_phantom(s, task=spec["task"], shape=shape, spacing=spacing, n_channels=2)  # type: ignore[arg-type]
            img, lab = f"imagesTr/phantom_{s:04d}.nii.gz", f"labelsTr/phantom_{s:04d}.nii.gz"
            write_phantom(task_dir / img, task_dir / lab, ph)
            files += [f"msd/{name}/{img}", f"msd/{name}/{lab}"]
            entries.append({"image": img, "label": lab})
        n_val = max(1, n // 3)
        dataset = {"name": name, "description": f"MSD-style {spec['task']} task; " + note,
                   "tensorImageSize": "3D" if spec["task"] == "ct_single_organ" else "4D",
                   "modality": spec["modality"], "labels": spec["labels"], "reference": note,
                   "numTraining": n - n_val, "numValidation": n_val, "phantoms": [e["image"] for e in entries],
                   "training": assign_folds(entries[: n - n_val], n_folds=min(5, max(1, n - n_val)), seed=seed),
                   "validation": entries[n - n_val:]}
        write_manifest(dataset, task_dir / "dataset.json")
    return files


@dataclasses.dataclass
class DemoCohortConfig(Config):
    """Parameters of :func:`build_demo_cohort` as plain values (for the CLI and notebooks)."""

    out_dir: str | None = None     # target folder; None = data_dir()/demo_cohort ($SWINUNETR_DATA_DIR or data/)
    n_phantoms: int = 12           # labeled abdomen phantoms; the last n_validation are held out
    seed: int = 0                  # first phantom seed (phantoms use seed .. seed+n_phantoms-1)
    spacing: list[float] = dataclasses.field(default_factory=lambda: [3.0, 3.0, 3.0])  # phantom voxel size (mm)
    n_validation: int = 3          # held-out phantoms in finetune.json's validation list
    n_unlabeled: int = 4           # extra phantoms used only for pretraining
    n_msd: int = 6                 # cases per MSD-style phantom task (CT spleen; 2-channel MR-like)
    include_real: bool = True      # add the real TotalSegmentator example CT (labels remapped to BTCV ids)
    force: bool = False            # rebuild even when a complete build with the same parameters exists
    variability: float = 0.0       # 0..1: abdomen phantoms differ as patients do (pose, organ shape, HU); 0 = template

    def build(self) -> DemoCohort:
        kw = self.to_dict()
        kw["spacing"] = tuple(kw["spacing"])
        return build_demo_cohort(**kw)
