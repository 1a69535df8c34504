"""Pretraining data pipeline with MONAI transforms (Tang et al. 2022, Sec. 4 "Pre-training datasets").

Per volume: load -> channel first -> RAS -> (optional) resample -> HU [-1000, 1000] -> [0, 1] with
clipping -> crop to foreground -> pad to the ROI -> ``num_samples`` random ROI crops. Deterministic
steps are cached (:class:`monai.data.CacheDataset`), so each epoch only redoes the random crops.

Spacing: the default is ``None`` (no resampling), which is what the official pretraining code does;
the paper's BTCV fine-tuning spacing ``(1.5, 1.5, 2.0)`` is one ``spacing=`` argument away.
A batch of ``batch_size`` volumes yields ``batch_size * num_samples`` sub-volumes (B, 1, X, Y, Z).
"""
from __future__ import annotations

import os
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any, Sequence

import torch
from monai.data import CacheDataset, DataLoader, load_decathlon_datalist
from monai.data.utils import set_rnd
from monai.transforms import (Compose, CropForegroundd, EnsureChannelFirstd, EnsureTyped, Orientationd,
                              RandSpatialCropSamplesd, ScaleIntensityRanged, SpatialPadd, Spacingd)
from monai.utils import ensure_tuple_rep

from . import distributed as ddp
from .loading import LoadImageNamed, refuse_paths_outside_root
from .paths import resolve_path


def ssl_transforms(roi_size: int | Sequence[int] = 96, num_samples: int = 2,
                   spacing: Sequence[float] | None = None, a_min: float = -1000.0, a_max: float = 1000.0,
                   key: str = "image") -> Compose:
    """MONAI dictionary transforms for pretraining (defaults: official code, ROI 96^3, 2 crops per volume)."""
    roi = ensure_tuple_rep(roi_size, 3)
    steps: list[Any] = [LoadImageNamed(keys=key, image_only=True), EnsureChannelFirstd(keys=key),
                        Orientationd(keys=key, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))]
    if spacing is not None:
        steps.append(Spacingd(keys=key, pixdim=tuple(spacing), mode="bilinear"))
    steps += [ScaleIntensityRanged(keys=key, a_min=a_min, a_max=a_max, b_min=0.0, b_max=1.0, clip=True),
              CropForegroundd(keys=key, source_key=key, allow_smaller=True),
              SpatialPadd(keys=key, spatial_size=roi),
              EnsureTyped(keys=key, dtype=torch.float32, track_meta=False),
              RandSpatialCropSamplesd(keys=key, roi_size=roi, num_samples=num_samples, random_size=False)]
    return Compose(steps)


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
        hint = "" if base_dir is not None else (f"; its paths are taken relative to the manifest's folder {base}: "
                                                "give the data folder as --data-root")
        raise FileNotFoundError(f"{path}: {len(missing)} image(s) not found, e.g. {missing[0]}{hint}")
    return files


def ssl_dataset(files: Sequence[dict[str, str]], roi_size: int | Sequence[int] = 96, num_samples: int = 2,
                spacing: Sequence[float] | None = None, cache_rate: float = 1.0, num_workers: int = 0) -> CacheDataset:
    """Cached dataset; each item is a list of ``num_samples`` dicts with ``"image"`` (1, X, Y, Z) in [0, 1].
    Each volume is checked as it is loaded (NaN / Inf voxels: an error naming the file)."""
    return _CheckedCacheDataset(list(files), ssl_transforms(roi_size, num_samples, spacing), cache_rate=cache_rate,
                                num_workers=num_workers, progress=False)


class _CheckedCacheDataset(CacheDataset):
    """``CacheDataset`` whose cache is filled in the calling thread (``num_workers`` <= 1) or by worker threads that
    have all ended before an error of one volume propagates: MONAI's pool leaves a thread running the next
    volume's transforms, and a thread inside a torch operation when the interpreter exits aborts the process
    (``terminate called without an active exception``) after the one-line error."""

    def _fill_cache(self, indices: Sequence[int] | None = None) -> list:
        if self.cache_num <= 0:
            return []
        indices = list(range(self.cache_num)) if indices is None else list(indices)
        if (self.num_workers or os.cpu_count() or 1) <= 1:
            return [self._load_cache_item(i) for i in indices]
        pool = ThreadPool(self.num_workers)
        try:
            return list(pool.imap(self._load_cache_item, indices))
        finally:
            pool.terminate()  # queued volumes are dropped ...
            pool.join()       # ... and the ones being loaded finish before anything is raised


class EpochDataLoader(DataLoader):
    """MONAI DataLoader whose order and random crops depend only on ``(seed, epoch)``.

    :func:`swinunetr_lib.train.fit` calls ``set_epoch`` before each epoch: it re-seeds the shuffling
    generator and the random transforms of the dataset (in-process loading) from (seed, epoch, rank) and,
    under DDP, the ``DistributedSampler``. Workers (``num_workers > 0``) get seeds derived from the same generator.
    """

    def __init__(self, dataset: Any, batch_size: int, shuffle: bool = True, num_workers: int = 0,
                 seed: int = 0, drop_last: bool = True, distributed: bool = False, **kwargs: Any) -> None:
        self.seed = seed
        generator = torch.Generator()
        generator.manual_seed(seed)
        sampler = None
        if distributed:
            sampler = torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
            shuffle = False
        super().__init__(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=num_workers,
                         drop_last=drop_last, generator=generator, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        rank = ddp.rank()  # under DDP each rank must draw its own crops, not the same positions as rank 0
        self.generator.manual_seed(self.seed * 100_003 + epoch + 1_000_003 * rank)
        set_rnd(self.dataset, self.seed * 100_019 + epoch + 1_000_033 * rank)
        if isinstance(self.sampler, torch.utils.data.DistributedSampler):
            self.sampler.set_epoch(epoch)


def ssl_dataloader(manifest: str | os.PathLike[str], roi_size: int | Sequence[int] = 96, batch_size: int = 2,
                   num_samples: int = 2, spacing: Sequence[float] | None = None, cache_rate: float = 1.0,
                   num_workers: int = 0, seed: int = 0, split: str = "training", distributed: bool = False,
                   base_dir: str | os.PathLike[str] | None = None) -> EpochDataLoader:
    """Manifest -> cached dataset -> loader of (batch_size * num_samples, 1, X, Y, Z) sub-volumes in ``["image"]``.

    ``drop_last`` unless the split has fewer volumes than ``batch_size`` (then the batch is smaller).
    """
    files = load_image_list(manifest, split, base_dir)
    ds = ssl_dataset(files, roi_size, num_samples, spacing, cache_rate, num_workers)
    drop_last = len(files) >= batch_size * (torch.distributed.get_world_size() if distributed else 1)
    return EpochDataLoader(ds, batch_size=batch_size, num_workers=num_workers, seed=seed, drop_last=drop_last,
                           distributed=distributed)
