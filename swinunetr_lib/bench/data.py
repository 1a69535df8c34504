"""``python -m swinunetr_lib.bench data``: pretraining sub-volumes per second per CPU core, three ways.

On one synthetic CT of ``volume_size`` (default 512 x 512 x 300 at 0.8 x 0.8 x 1.5 mm, int16 ``.nii.gz``, LPS
like a DICOM conversion; air as noise around -1000 HU, a body-shaped ellipse of soft tissue with lungs and a
spine, a table below it), each in this process with one torch thread (one DataLoader worker):

- ``nifti``: the uncached pipeline per read (load + decompress, RAS, crop to the body, scale, pad, crops);
- ``cache``: ``CacheDataset`` after its one-time fill (``copy_cache=False``): the crops only;
- ``prepared``: ``data prepare`` once, then :class:`~swinunetr_lib.data.prepared_volumes.PreparedVolumes`: a memory
  map, ``num_samples`` crops, the crops scaled (the file was just written: a warm page cache).

Each path: CPU seconds per volume (median; the wall time too), sub-volumes per second per core (``num_samples`` per
volume) and the cores one GPU needs to be fed at 25 and 45 sub-volumes/s (``ceil(rate / per-core rate)``). Goal (issue
#15): from prepared volumes one core feeds at least 45 sub-volumes/s of 96^3.
"""
from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from ..config import Config
from ..data.prepare import prepare_volume
from ..data.prepared_volumes import PreparedVolumes
from ..pretrain.dataloader import ssl_dataset, ssl_transforms

GOAL_SUBVOLUMES_PER_S = 45.0  # one H200 at the paper's size (bench ssl's goal), fed by one core
FEED_RATES = (25.0, 45.0)     # sub-volumes/s one GPU consumes (today / goal)


@dataclass
class DataBenchConfig(Config):
    """``bench data``."""
    volume_size: list[int] = field(default_factory=lambda: [512, 512, 300])  # synthetic CT in voxels (X, Y, Z)
    spacing_mm: list[float] = field(default_factory=lambda: [0.8, 0.8, 1.5])  # its voxel size (a typical abdominal CT)
    roi_size: int = 96            # cubic sub-volume side in voxels (paper: 96)
    num_samples: int = 2          # crops per volume read (official sw_batch_size: 2)
    repeats: int = 3              # timed reads of the uncached NIfTI path (seconds each at 512^2 x 300)
    fast_repeats: int = 50        # timed reads of the cache and prepared paths
    seed: int = 0                 # random seed (synthetic CT, crops)
    workdir: str = ""             # folder for the synthetic CT and its prepared copy; "" = a temporary folder
    json: str = ""                # also write the results to this JSON file


def synthetic_ct(size: list[int], spacing: list[float], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z) int16 HU and its LPS affine: noisy air, an elliptic body (soft tissue ~40 HU), two lungs
    (-850 HU) in the upper half, a spine (700 HU) and a table (-100 HU) just below the body."""
    x, y, z = size
    rng = np.random.default_rng(seed)
    hu = rng.standard_normal((x, y, z), dtype=np.float32) * 20.0
    gx = ((np.arange(x, dtype=np.float32) - x / 2) / (0.4 * x))[:, None]
    gy = ((np.arange(y, dtype=np.float32) - y / 2) / (0.3 * y))[None, :]
    body = gx ** 2 + gy ** 2 <= 1.0                                   # (X, Y), the same in every slice
    hu += np.where(body, 40.0, -1000.0)[..., None]
    lungs = ((np.abs(gx) - 0.45) ** 2 / 0.06 + (gy + 0.1) ** 2 / 0.35 <= 1.0) & body
    hu[..., z // 2:] += np.where(lungs, -890.0, 0.0)[..., None]
    spine = (gx ** 2 + (gy - 0.6) ** 2) <= 0.02
    hu += np.where(spine, 660.0, 0.0)[..., None]
    table_y = min(y - 1, int(y / 2 + 0.3 * y) + max(2, y // 40))
    hu[max(0, x // 10):x - x // 10, table_y:table_y + max(1, y // 100)] += 900.0  # -1000 + 900: the table
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16), np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])


def _time(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds of this process) per call, after one warm-up call. The CPU time
    is what a core spends; on a shared machine the wall time also holds the waits for one."""
    fn()  # warm-up (imports, page cache, allocator)
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return float(np.median(walls)), float(np.median(cpus))


def _path_numbers(times: tuple[float, float], num_samples: int) -> dict[str, Any]:
    wall, cpu = times
    rate = num_samples / max(cpu, 1e-9)
    return {"seconds_per_volume": cpu, "wall_seconds_per_volume": wall, "subvolumes_per_s": rate,
            **{f"cores_for_{int(r)}": math.ceil(r / rate) for r in FEED_RATES}}


def bench_data(cfg: DataBenchConfig, emit: Callable[[dict[str, Any]], None] = lambda r: None) -> dict[str, Any]:
    """Run the data benchmark; returns the numbers :func:`format_data_table` prints."""
    if len(cfg.volume_size) != 3 or min(cfg.volume_size) < 1 or len(cfg.spacing_mm) != 3:
        raise ValueError(f"volume_size={cfg.volume_size} / spacing_mm={cfg.spacing_mm}: need 3 positive values each")
    for name in ("roi_size", "num_samples", "repeats", "fast_repeats"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}={getattr(cfg, name)} must be >= 1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one DataLoader worker
    tmp = tempfile.TemporaryDirectory(prefix="bench_data_") if not cfg.workdir else None
    work = Path(cfg.workdir or tmp.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"benchmark": "data", "complete": False, "config": cfg.to_dict(),
                              "torch": torch.__version__, "paths": {}}
    try:
        t = time.perf_counter()
        hu, affine = synthetic_ct(cfg.volume_size, cfg.spacing_mm, cfg.seed)
        src = work / "synthetic_ct.nii.gz"
        nib.save(nib.Nifti1Image(hu, affine), src)
        result["synthesis_s"] = time.perf_counter() - t
        result["nifti_mb"] = src.stat().st_size / 1e6
        del hu
        files = [{"image": str(src)}]

        chain = ssl_transforms(cfg.roi_size, cfg.num_samples)
        chain.set_random_state(cfg.seed)
        result["paths"]["nifti"] = _path_numbers(_time(lambda: chain({"image": str(src)}), cfg.repeats),
                                                 cfg.num_samples)
        emit(result)

        t = time.perf_counter()
        ds = ssl_dataset(files, cfg.roi_size, cfg.num_samples, cache_rate=1.0, seed=cfg.seed, rank=0, check_ram=False)
        result["cache_fill_s"] = time.perf_counter() - t
        result["cache_mb_per_volume"] = ds._cache[0]["image"].numel() * 4 / 1e6  # after the body crop
        epochs = iter(range(10**9))
        result["paths"]["cache"] = _path_numbers(
            _time(lambda ds=ds: (ds.set_epoch(next(epochs)), ds[0]), cfg.fast_repeats), cfg.num_samples)
        del ds  # frees the cache before the next path (the lambda got ds as its default argument)
        emit(result)

        t = time.perf_counter()
        settings = {"spacing": None, "dtype": "int16", "hu_min": -1024.0, "hu_max": 3071.0, "body_threshold": -500.0}
        meta = prepare_volume(str(src), work, settings)
        result["prepare_s"] = time.perf_counter() - t
        result["prepared_mb"] = (work / meta["file"]).stat().st_size / 1e6
        result["prepared_shape"] = meta["shape"]
        pv = PreparedVolumes([{"image": str(work / meta["file"])}], cfg.roi_size, cfg.num_samples, seed=cfg.seed,
                             rank=0)
        result["paths"]["prepared"] = _path_numbers(
            _time(lambda: (pv.set_epoch(next(epochs)), pv[0]), cfg.fast_repeats), cfg.num_samples)
        rate = result["paths"]["prepared"]["subvolumes_per_s"]
        at_size = cfg.roi_size == 96 and cfg.num_samples == 2 and cfg.volume_size == [512, 512, 300]
        result["goal"] = {"metric": "prepared subvolumes_per_s (one core)", "target": f">= {GOAL_SUBVOLUMES_PER_S}",
                          "at_paper_size": at_size, "met": bool(rate >= GOAL_SUBVOLUMES_PER_S) if at_size else None}
        result["complete"] = True
        emit(result)
        return result
    finally:
        torch.set_num_threads(threads)
        if tmp is not None:
            tmp.cleanup()


def format_data_table(r: dict[str, Any]) -> str:
    c = r["config"]
    rows = [("benchmark", f"data: one synthetic CT {'x'.join(map(str, c['volume_size']))} "
                          f"({r.get('nifti_mb', 0):.0f} MB .nii.gz), {c['num_samples']} crops of {c['roi_size']}^3 "
                          "per read, 1 core"),
            ("path", "CPU s/volume (wall)   sub-volumes/s/core   cores for 25/s   cores for 45/s")]
    for name, p in r["paths"].items():
        rows.append((name, f"{p['seconds_per_volume']:8.4f} ({p['wall_seconds_per_volume']:8.4f})   "
                           f"{p['subvolumes_per_s']:18.1f}   {p['cores_for_25']:14d}   {p['cores_for_45']:14d}"))
    if "cache_fill_s" in r:
        rows.append(("cache: one-time fill, size", f"{r['cache_fill_s']:.2f} s, {r['cache_mb_per_volume']:.0f} MB "
                                                   "float32 per volume (after the body crop)"))
    if "prepare_s" in r:
        rows.append(("prepared: one-time prepare, size", f"{r['prepare_s']:.2f} s, {r['prepared_mb']:.0f} MB int16 "
                                                         f"{r['prepared_shape']} (cut to the body)"))
    if r.get("complete"):
        g = r["goal"]
        rate = r["paths"]["prepared"]["subvolumes_per_s"]
        verdict = {True: "met", False: "NOT met"}[g["met"]] if g["at_paper_size"] else "not at the paper's size"
        rows.append((f"goal: {g['metric']} {g['target']}", f"{rate:.1f} -> {verdict}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
