"""``python -m swinunetr_lib.data prepare MANIFEST --out DIR``: every CT once into memory-mappable arrays.

Per volume, in parallel worker processes (a progress bar; a rerun skips finished volumes, so an interrupted
run resumes): the pretraining path's deterministic steps (:func:`swinunetr_lib.data.pretrain_volumes.volume_transforms`:
load, RAS, optional resampling, crop to the body's bounding box, :func:`swinunetr_lib.data.prepared_volumes.body_mask`),
then HU clipped to ``[hu_min, hu_max]`` and stored uncompressed as ``DIR/volumes/<name>.npy`` (int16, rounded;
or float16) beside ``<name>.json`` (shape, spacing, affine of the stored grid, body box in the oriented grid,
source path, size, modification time and SHA-256). ``DIR/prepared.json`` lists the prepared volumes
(paths relative to DIR); :class:`swinunetr_lib.data.prepared_volumes.PreparedVolumes` reads them.

A volume counts as finished when its ``.json`` exists and records the same source (path, size, modification
time) and settings; each file is written to a temporary name and renamed, the ``.json`` last. ``DIR`` is locked
while a prepare runs there (a second one is refused), and a killed prepare's temporary files are removed by the next.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose
from tqdm.auto import tqdm

from ..config import Config
from ..utils.cli import error_message
from ..utils.files import atomic_path, atomic_write_text, check_folder_creatable, remove_stale_temp_files
from ..utils.run_lock import run_dir_lock
from .example_data import sha256_of
from .prepared_volumes import BODY_THRESHOLD_HU, PREPARED_FORMAT
from .pretrain_volumes import load_image_list, volume_transforms

DTYPES = ("int16", "float16")


@dataclass
class PrepareConfig(Config):
    out: str = ""                        # output folder: volumes/ and prepared.json (required)
    data_root: str = ""                  # folder the manifest's paths are relative to; "" = the manifest's folder
    split: str = "training"              # name of the manifest's list to prepare
    spacing: list[float] | None = None   # resample to this voxel size in mm (e.g. 1.5,1.5,1.5); None = native, as the
                                         # official pretraining code
    dtype: str = "int16"                 # int16 (HU rounded to 1) or float16 (HU, ~0.1 % relative precision)
    hu_min: float = -1024.0              # HU below this are clipped (air; the paper's window starts at -1000)
    hu_max: float = 3071.0               # HU above this are clipped (12-bit CT range; the paper's window ends at 1000)
    body_threshold: float = BODY_THRESHOLD_HU  # HU above which a voxel may belong to the body (largest component)
    num_workers: int = 0                 # worker processes; 0 = all cores but one
    progress: bool = True                # show a progress bar


def settings_of(cfg: PrepareConfig) -> dict[str, Any]:
    """What defines a prepared volume besides its source; a change re-prepares it."""
    return {"spacing": cfg.spacing, "dtype": cfg.dtype, "hu_min": cfg.hu_min, "hu_max": cfg.hu_max,
            "body_threshold": cfg.body_threshold}


def check_prepare_config(cfg: PrepareConfig) -> None:
    if not cfg.out:
        raise ValueError("--out is required: the folder to write the prepared volumes to")
    if cfg.dtype not in DTYPES:
        raise ValueError(f"--dtype {cfg.dtype!r}: expected one of {', '.join(DTYPES)}")
    if not cfg.hu_min < cfg.hu_max:
        raise ValueError(f"--hu-min {cfg.hu_min} must be below --hu-max {cfg.hu_max}")
    if cfg.dtype == "int16" and (cfg.hu_min < -32768 or cfg.hu_max > 32767):
        raise ValueError(f"HU range [{cfg.hu_min}, {cfg.hu_max}] does not fit int16; use --dtype float16")
    if cfg.spacing is not None and (len(cfg.spacing) != 3 or not all(s > 0 for s in cfg.spacing)):
        raise ValueError(f"--spacing {cfg.spacing}: need 3 positive voxel sizes in mm")
    if cfg.num_workers < 0:
        raise ValueError(f"--num-workers {cfg.num_workers} must be >= 0 (0: all cores but one)")
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise ValueError(f"--out {cfg.out} is a file, not a folder")
    check_folder_creatable(cfg.out, f"--out {cfg.out}")


def volume_name(source: str) -> str:
    """File stem for a source: its name without .nii/.nii.gz plus 8 hex digits of its path (unique, stable)."""
    name = Path(source).name
    for ext in (".nii.gz", ".nii", ".mha", ".nrrd"):
        if name.endswith(ext):
            name = name[:-len(ext)]
            break
    return f"{name}-{hashlib.sha1(source.encode()).hexdigest()[:8]}"


def _source_stamp(source: str) -> dict[str, Any]:
    st = os.stat(source)
    return {"source": source, "source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns}


def is_finished(meta_path: Path, source: str, settings: dict[str, Any]) -> bool:
    """True when ``meta_path`` records this source (path, size, mtime) and these settings, and its array exists."""
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return False
    stamp = _source_stamp(source)
    return (all(meta.get(k) == v for k, v in stamp.items()) and meta.get("settings") == settings
            and (meta_path.parent / meta.get("file", "")).is_file())



def prepare_volume(source: str, out_dir: str | os.PathLike[str], settings: dict[str, Any]) -> dict[str, Any]:
    """Prepare one CT (see the module doc); returns its metadata (also written as ``<name>.json``)."""
    torch.set_num_threads(1)  # one volume per process; the pool gives the parallelism
    out_dir = Path(out_dir)
    name = volume_name(source)
    transforms = Compose(volume_transforms(settings["spacing"], settings["body_threshold"]))
    loaded = Compose(transforms.transforms[:-1])({"image": source})["image"]  # (1, X, Y, Z) oriented, resampled
    img = transforms.transforms[-1]({"image": loaded})["image"]               # cut to the body's box
    hu = np.clip(img.array[0], settings["hu_min"], settings["hu_max"])
    arr = np.rint(hu).astype(np.int16) if settings["dtype"] == "int16" else hu.astype(np.float16)
    affine = np.asarray(img.affine, dtype=np.float64)
    origin_shift = np.linalg.solve(np.asarray(loaded.affine, dtype=np.float64), affine[:, 3])[:3]
    box_start = [int(round(v)) for v in origin_shift]
    meta = {**_source_stamp(source), "file": f"{name}.npy", "shape": list(arr.shape), "dtype": settings["dtype"],
            "spacing": [float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(0))], "affine": affine.tolist(),
            "orientation": "RAS", "source_shape": list(loaded.shape[1:]),
            "body_box": [box_start, [b + s for b, s in zip(box_start, arr.shape, strict=True)]],
            "source_sha256": sha256_of(source), "settings": settings}
    with atomic_path(out_dir / f"{name}.npy") as tmp:
        np.save(tmp, np.ascontiguousarray(arr), allow_pickle=False)
    atomic_write_text(json.dumps(meta, indent=1), out_dir / f"{name}.json")
    return meta


def _prepare_one(source: str, out_dir: str, settings: dict[str, Any]) -> tuple[str, dict[str, Any] | None, str]:
    """Pool task: (source, metadata or None, error message)."""
    try:
        return source, prepare_volume(source, out_dir, settings), ""
    except Exception as err:  # reported per volume; the others go on
        return source, None, error_message(err)


def prepare(manifest: str | os.PathLike[str], cfg: PrepareConfig) -> dict[str, Any]:
    """Prepare every volume of ``manifest``'s split into ``cfg.out``; returns the prepared manifest (also written
    as ``cfg.out/prepared.json``). Volumes that fail are listed in it under ``"failed"`` and raise at the end
    (one line: how many, the first with its reason); the others are kept, so a rerun only retries those.

    ``cfg.out`` is locked while it runs (:func:`~swinunetr_lib.utils.run_lock.run_dir_lock`): a second prepare
    into the same folder while this one lives is refused with one line (two would mix their volumes and
    settings); the temporary files a killed prepare left there are removed first."""
    check_prepare_config(cfg)
    files = [f["image"] for f in load_image_list(manifest, cfg.split, cfg.data_root or None)]
    out = Path(cfg.out)
    with run_dir_lock(out):
        vol_dir = out / "volumes"
        vol_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(out, vol_dir)
        return _prepare_locked(manifest, cfg, files, out, vol_dir)


def _prepare_locked(manifest: str | os.PathLike[str], cfg: PrepareConfig, files: list[str], out: Path,
                    vol_dir: Path) -> dict[str, Any]:
    """:func:`prepare`'s work, while it holds ``out``'s lock."""
    settings = settings_of(cfg)
    todo = [f for f in files if not is_finished(vol_dir / f"{volume_name(f)}.json", f, settings)]
    metas: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    workers = cfg.num_workers or max(1, (os.cpu_count() or 2) - 1)
    bar = tqdm(total=len(files), initial=len(files) - len(todo), desc="prepare", unit="volume",
               disable=not cfg.progress, file=sys.stderr)

    def record(source: str, meta: dict[str, Any] | None, err: str) -> None:
        if meta is None:
            failed[source] = err
        else:
            metas[source] = meta
        bar.update()

    if todo and (workers == 1 or len(todo) == 1):
        for f in todo:
            record(*_prepare_one(f, str(vol_dir), settings))
    elif todo:
        with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            for fut in as_completed([pool.submit(_prepare_one, f, str(vol_dir), settings) for f in todo]):
                record(*fut.result())
    bar.close()
    entries = []
    for f in files:
        if f in failed:
            continue
        meta = metas.get(f) or json.loads((vol_dir / f"{volume_name(f)}.json").read_text())
        entries.append({"image": f"volumes/{meta['file']}", "meta": f"volumes/{volume_name(f)}.json",
                        "shape": meta["shape"], "source": f})
    result = {"format": PREPARED_FORMAT, "settings": settings, "source_manifest": str(Path(manifest).resolve()),
              "numTraining": len(entries), cfg.split: entries,
              "failed": [{"source": s, "error": e} for s, e in failed.items()]}
    atomic_write_text(json.dumps(result, indent=1), out / "prepared.json")
    if failed:
        first = next(iter(failed.items()))
        raise ValueError(f"{len(failed)} of {len(files)} volume(s) failed, e.g. {first[0]}: {first[1]} "
                         f"({out / 'prepared.json'} lists the {len(entries)} others; rerun to retry)")
    return result
