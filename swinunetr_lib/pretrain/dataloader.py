"""Pretraining data pipeline with MONAI transforms (Tang et al. 2022, Sec. 4 "Pre-training datasets").

Per volume: load -> channel first -> RAS -> (optional) resample -> crop to the body -> HU [-1000, 1000] ->
[0, 1] with clipping -> pad to the ROI -> ``num_samples`` random ROI crops. Deterministic steps are cached
(:class:`monai.data.CacheDataset`, ``copy_cache=False``), so each epoch only redoes the random crops. Under DDP
the volumes are partitioned once per rank (MONAI's ``partition_dataset``) and each rank caches only its own
part; a cache that would not fit in RAM is refused before loading, pointing at the memory-mapped path
(``python -m swinunetr_lib.data prepare``, :mod:`swinunetr_lib.data.prepared_volumes`), which is what the paper's
5,050 CTs need (``ssl_dataloader(prepared=...)``).

The body is the largest connected component above -500 HU (:func:`swinunetr_lib.data.prepared_volumes.body_mask`):
MONAI's default foreground (> -1000 HU) removes nothing on real CT, whose air is noisy.
Crops are drawn per item from ``(seed, epoch, index, rank)``
(:func:`swinunetr_lib.data.prepared_volumes.index_seed`), identically here and for prepared volumes.

Spacing: the default is ``None`` (no resampling), which is what the official pretraining code does;
the paper's BTCV fine-tuning spacing ``(1.5, 1.5, 2.0)`` is one ``spacing=`` argument away.
A batch of ``batch_size`` volumes yields ``batch_size * num_samples`` sub-volumes (B, 1, X, Y, Z).
"""
from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator, Sequence
from multiprocessing.pool import ThreadPool
from typing import Any

import nibabel as nib
import torch
from monai.data import CacheDataset, DataLoader, partition_dataset
from monai.data.utils import set_rnd
from monai.transforms import (
    Compose,
    EnsureTyped,
    RandSpatialCropSamplesd,
    ScaleIntensityRanged,
    SpatialPadd,
)
from monai.utils import ensure_tuple_rep

from ..data.loading import DataError, volume_problem
from ..data.prepared_volumes import (
    BODY_THRESHOLD_HU,
    PRETRAIN_HU_WINDOW,
    PreparedVolumes,
    index_seed,
    read_prepared_manifest,
)
from ..data.pretrain_volumes import load_image_list, volume_transforms
from ..utils import distributed as ddp


def ssl_transforms(roi_size: int | Sequence[int] = 96, num_samples: int = 2,
                   spacing: Sequence[float] | None = None, a_min: float = PRETRAIN_HU_WINDOW[0],
                   a_max: float = PRETRAIN_HU_WINDOW[1],
                   key: str = "image", body_threshold: float = BODY_THRESHOLD_HU) -> Compose:
    """MONAI dictionary transforms for pretraining (defaults: official code, ROI 96^3, 2 crops per volume)."""
    roi = ensure_tuple_rep(roi_size, 3)
    steps = volume_transforms(spacing, body_threshold, key)
    steps += [ScaleIntensityRanged(keys=key, a_min=a_min, a_max=a_max, b_min=0.0, b_max=1.0, clip=True),
              SpatialPadd(keys=key, spatial_size=roi),
              EnsureTyped(keys=key, dtype=torch.float32, track_meta=False),
              RandSpatialCropSamplesd(keys=key, roi_size=roi, num_samples=num_samples, random_size=False)]
    return Compose(steps)


def ssl_dataset(files: Sequence[dict[str, str]], roi_size: int | Sequence[int] = 96, num_samples: int = 2,
                spacing: Sequence[float] | None = None, cache_rate: float = 1.0, num_workers: int = 0,
                seed: int = 0, rank: int | None = None, check_ram: bool = True) -> CacheDataset:
    """Cached dataset; each item is a list of ``num_samples`` dicts with ``"image"`` (1, X, Y, Z) in [0, 1].
    Each volume is checked as it is loaded (NaN / Inf voxels: an error naming the file). Item ``i``'s crops come
    from ``index_seed(seed, epoch, i, rank)`` (:meth:`set_epoch`). With ``check_ram`` a cache larger than the
    available memory is refused before anything is loaded (:func:`check_cache_fits`)."""
    if check_ram:
        check_cache_fits(files[:int(math.ceil(cache_rate * len(files)))], spacing)
    return _CheckedCacheDataset(list(files), ssl_transforms(roi_size, num_samples, spacing), cache_rate=cache_rate,
                                num_workers=num_workers, progress=False, copy_cache=False, seed=seed,
                                rank=ddp.rank() if rank is None else rank)


def estimate_cache_bytes(files: Sequence[dict[str, str]], spacing: Sequence[float] | None = None) -> int:
    """Upper bound of the cache's size: float32 voxels of each volume (header only; after resampling to
    ``spacing``; before the body crop)."""
    total = 0
    for f in files:
        try:
            header = nib.load(f["image"]).header
        except Exception as err:  # any reader failure: say which file
            raise ValueError(f"{f['image']}: cannot read image header ({err})") from err
        full_shape = tuple(int(n) for n in header.get_data_shape())
        problem = volume_problem("image", full_shape[:3], math.prod(full_shape[3:]), 1, "pretraining")
        if problem:  # a 2D slice or several channels: named here, not as a zip() or convolution error later
            raise DataError(f["image"], problem)
        shape, zooms = full_shape, header.get_zooms()[:3]
        scale = [float(z) / s for z, s in zip(zooms, spacing, strict=True)] if spacing is not None else [1.0] * 3
        total += 4 * math.prod(max(1, round(n * k)) for n, k in zip(shape, scale, strict=True))
    return total


def available_ram_bytes() -> int:
    """Memory the OS can give without swapping (``MemAvailable``; else free pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class CacheTooLargeError(ValueError):
    """The NIfTI cache would not fit in this node's free RAM (a ``ValueError``: command lines print one line)."""


def check_cache_fits(files: Sequence[dict[str, str]], spacing: Sequence[float] | None = None,
                     fraction: float = 0.9) -> None:
    """:class:`CacheTooLargeError` (one line: volumes, estimated GB, available GB, what to do) when caching ``files`` on
    every rank of this node (``LOCAL_WORLD_SIZE``, set by torchrun) would take more than ``fraction`` of the free
    RAM."""
    if not files:
        return
    need = estimate_cache_bytes(files, spacing)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    avail = available_ram_bytes()
    if need * local > fraction * avail:
        ranks = f" x {local} ranks on this node" if local > 1 else ""
        raise CacheTooLargeError(f"caching {len(files)} volumes needs ~{need / 1e9:.1f} GB of RAM per rank{ranks} "
                          f"but {avail / 1e9:.1f} GB are available: prepare them once with `python -m "
                          "swinunetr_lib.data prepare MANIFEST --out DIR` and pretrain with --prepared-dir DIR "
                          "(memory-mapped, no cache), or lower --cache-rate")


class _CheckedCacheDataset(CacheDataset):
    """``CacheDataset`` whose cache is filled in the calling thread (``num_workers`` <= 1) or by worker threads that
    have all ended before an error of one volume propagates: MONAI's pool leaves a thread running the next
    volume's transforms, and a thread inside a torch operation when the interpreter exits aborts the process
    (``terminate called without an active exception``) after the one-line error.

    Item ``i``'s random crops are seeded from ``(seed, epoch, i, rank)``; the epoch lives in shared memory, so
    persistent DataLoader workers see :meth:`set_epoch`."""

    def __init__(self, *args: Any, seed: int = 0, rank: int = 0, **kwargs: Any) -> None:
        self.seed, self.rank = seed, rank
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        super().__init__(*args, **kwargs)
        self._crop = next(t for t in self.transform.transforms if isinstance(t, RandSpatialCropSamplesd))

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def _transform(self, index: int) -> Any:
        self._crop.set_random_state(seed=index_seed(self.seed, int(self._epoch), index, self.rank))
        return super()._transform(index)

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


class EpochSampler(torch.utils.data.Sampler[int]):
    """The indices of an epoch from ``base`` (a ``RandomSampler``, ``SequentialSampler`` or ``DistributedSampler``),
    without the first ``skip``: a resumed run starts mid-epoch without reading the batches it already used."""

    def __init__(self, base: torch.utils.data.Sampler[int]) -> None:
        self.base, self.skip = base, 0

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)  # type: ignore[arg-type]


class EpochDataLoader(DataLoader):
    """MONAI DataLoader whose order and random crops depend only on ``(seed, epoch)``.

    :func:`swinunetr_lib.train.loop.fit` calls ``set_epoch`` before each epoch: it re-seeds the shuffling
    generator from (seed, epoch, rank), sets the dataset's epoch (its crops are seeded per item from
    ``(seed, epoch, index, rank)``; datasets without ``set_epoch`` get their random transforms re-seeded) and,
    under DDP, the ``DistributedSampler``. ``set_epoch(epoch, skip_batches=k)`` starts that epoch at batch ``k``
    without loading the first ``k`` (resume). ``self.sampler`` is an :class:`EpochSampler`. Worker options
    (``pin_memory``, ``persistent_workers``, ``prefetch_factor``) pass through ``kwargs``.
    """

    def __init__(self, dataset: Any, batch_size: int, shuffle: bool = True, num_workers: int = 0,
                 seed: int = 0, drop_last: bool = True, distributed: bool = False, **kwargs: Any) -> None:
        self.seed = seed
        generator = torch.Generator()  # worker seeds (drawn at each new iterator)
        generator.manual_seed(seed)
        self.order_generator = torch.Generator()  # the shuffle alone: the order is the same with or without workers
        self.order_generator.manual_seed(seed)
        base: torch.utils.data.Sampler[int]
        if distributed:
            base = torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        elif shuffle:
            base = torch.utils.data.RandomSampler(dataset, generator=self.order_generator)
        else:
            base = torch.utils.data.SequentialSampler(dataset)
        super().__init__(dataset, batch_size=batch_size, sampler=EpochSampler(base), num_workers=num_workers,
                         drop_last=drop_last, generator=generator, **kwargs)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        rank = ddp.rank()  # under DDP each rank must draw its own crops, not the same positions as rank 0
        self.generator.manual_seed(self.seed * 100_003 + epoch + 1_000_003 * rank)
        self.order_generator.manual_seed(self.seed * 100_003 + epoch + 1_000_003 * rank)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        else:
            set_rnd(self.dataset, self.seed * 100_019 + epoch + 1_000_033 * rank)
        self.sampler.set_epoch(epoch)
        self.sampler.skip = skip_batches * (self.batch_size or 1)


def default_num_workers(device: torch.device | str = "cpu") -> int:
    """DataLoader workers per rank when none are asked for: none on a CPU (the model uses the cores), else
    ``min(4, cores per local rank - 1)``; one core feeds ~45+ sub-volumes/s from prepared volumes."""
    if torch.device(device).type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(4, cores // local - 1))


def ssl_dataloader(manifest: str | os.PathLike[str], roi_size: int | Sequence[int] = 96, batch_size: int = 2,
                   num_samples: int = 2, spacing: Sequence[float] | None = None, cache_rate: float = 1.0,
                   num_workers: int = 0, seed: int = 0, split: str = "training", distributed: bool = False,
                   base_dir: str | os.PathLike[str] | None = None, prepared: bool = False,
                   pin_memory: bool = False) -> EpochDataLoader:
    """Manifest -> dataset -> loader of (batch_size * num_samples, 1, X, Y, Z) sub-volumes in ``["image"]``.

    ``prepared``: ``manifest`` is a folder or manifest written by ``data prepare``; volumes are memory-mapped
    (:class:`~swinunetr_lib.data.prepared_volumes.PreparedVolumes`, no cache). Otherwise NIfTI volumes are cached
    (``cache_rate``). Under DDP (``distributed``) the volumes are partitioned once per rank (shuffled with
    ``seed``, padded to equal parts) and each rank caches and reads only its part, shuffled per epoch.
    Workers (``num_workers > 0``) persist across epochs and prefetch; ``pin_memory`` for copies to a GPU.
    ``drop_last`` unless a rank has fewer volumes than ``batch_size`` (then the batch is smaller).
    """
    if prepared:
        files, settings = read_prepared_manifest(manifest, split)
        if spacing is not None and settings.get("spacing") is not None \
                and [float(s) for s in settings["spacing"]] != [float(s) for s in spacing]:
            raise ValueError(f"{manifest}: prepared at spacing {settings['spacing']} mm, not the requested {spacing}; "
                             "prepare again with --spacing or leave spacing out")
    else:
        files = load_image_list(manifest, split, base_dir)
    if distributed and ddp.world_size() > 1:
        files = partition_dataset(files, num_partitions=ddp.world_size(), shuffle=True, seed=seed,
                                  even_divisible=True)[ddp.rank()]
    if prepared:
        ds: Any = PreparedVolumes(files, roi_size, num_samples, seed=seed)
    else:
        ds = ssl_dataset(files, roi_size, num_samples, spacing, cache_rate, num_workers, seed=seed)
    extra: dict[str, Any] = {"pin_memory": pin_memory}
    if num_workers > 0:
        extra.update(persistent_workers=True, prefetch_factor=4)
    return EpochDataLoader(ds, batch_size=batch_size, num_workers=num_workers, seed=seed,
                           drop_last=len(files) >= batch_size, **extra)
