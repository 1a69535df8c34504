"""Pretraining from prepared volumes: memory-mapped reads, ``num_samples`` random crops per read, only the crops
scaled (Tang et al. 2022, Sec. 4: HU [-1000, 1000] -> [0, 1], 96^3 sub-volumes).

``python -m swinunetr_lib.data prepare`` (:mod:`swinunetr_lib.data.prepare`) writes each CT once as an
uncompressed RAS-oriented int16 (or float16) ``.npy`` cut to the body's bounding box. :class:`PreparedVolumes`
opens one by ``np.load(mmap_mode="r")`` and copies only the crops out of it: no decompression, no cache, no
full-volume intensity scaling (about 0.01 s per CT for two 96^3 crops against ~3 s for a ``.nii.gz``).

Randomness is per item: the crops of item ``i`` depend only on ``(seed, epoch, i, rank)``
(:func:`index_seed`), never on which worker reads it or what it read before. So DataLoader workers can stay
alive across epochs (``persistent_workers``; :meth:`PreparedVolumes.set_epoch` writes the epoch to shared
memory they read), and a resumed run can skip batches at the sampler without reading them. The NIfTI path
(:mod:`swinunetr_lib.pretrain.dataloader`) draws its crops from the same seeds with the same MONAI functions, so both
paths give the same sub-volumes for the same seed (up to the int16 rounding of HU).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data.utils import get_random_patch, get_valid_patch_size
from monai.transforms.utils import get_largest_connected_component_mask
from monai.utils import MAX_SEED, ensure_tuple_rep

from ..utils import distributed as ddp

PREPARED_FORMAT = "swinunetr-prepared-v1"  # the "format" key of a prepared manifest
PRETRAIN_HU_WINDOW = (-1000.0, 1000.0)  # HU clipped, then scaled to [0, 1], for pretraining (paper Sec. 4)
BODY_THRESHOLD_HU = -500.0  # body vs air: CT air is ~-1000 HU with noise well above -1000, soft tissue ~0 HU, lung
                            # ~-850


def body_mask(img: Any, threshold: float = BODY_THRESHOLD_HU) -> np.ndarray:
    """Largest connected component of ``img > threshold`` (HU), the patient's body, as a bool array of ``img``'s
    shape ((C, X, Y, Z) or (X, Y, Z); connectivity over the spatial axes of the first channel, broadcast to all).

    MONAI's default foreground (``> 0`` after scaling, i.e. > -1000 HU) keeps the whole scan: noise in the air
    passes it. A threshold at -500 HU and the largest component drop the air and the loose bits (table edges,
    noise specks); lungs lie inside the body's box. An image with nothing above the threshold is kept whole.
    """
    x = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    spatial = x[0] if x.ndim == 4 else x
    mask = spatial > threshold
    if not mask.any():
        return np.ones(x.shape, dtype=bool)
    mask = np.asarray(get_largest_connected_component_mask(mask))
    return np.broadcast_to(mask, x.shape) if x.ndim == 4 else mask


class BodyMask:
    """Picklable ``select_fn`` for MONAI's ``CropForegroundd`` / ``generate_spatial_bounding_box``:
    :func:`body_mask`."""

    def __init__(self, threshold: float = BODY_THRESHOLD_HU) -> None:
        self.threshold = threshold

    def __call__(self, img: Any) -> np.ndarray:
        return body_mask(img, self.threshold)


def index_seed(seed: int, epoch: int, index: int, rank: int = 0) -> int:
    """The crop seed of item ``index`` in ``epoch`` on ``rank``: a uint32 from NumPy's SeedSequence (independent
    streams for nearby tuples)."""
    words = [int(v) % 2**32 for v in (seed, epoch, index, rank)]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def crop_slices(shape: Sequence[int], roi_size: Sequence[int], num_samples: int,
                seed: int) -> list[tuple[slice, ...]]:
    """``num_samples`` random ``roi_size`` windows in an image of spatial ``shape`` (already padded to the ROI),
    drawn exactly as MONAI's ``RandSpatialCropSamplesd(random_size=False)`` does after ``set_random_state(seed)``
    (a sub-seed, then ``get_random_patch`` per sample): the NIfTI path and this one cut the same windows."""
    sub_seed = int(np.random.RandomState(seed).randint(MAX_SEED, dtype="uint32"))
    state = np.random.RandomState(sub_seed)
    valid = get_valid_patch_size(shape, roi_size)
    return [get_random_patch(shape, valid, state) for _ in range(num_samples)]


def symmetric_padding(shape: Sequence[int], roi_size: Sequence[int]) -> list[int]:
    """Voxels added before each axis by MONAI's ``SpatialPadd(method="symmetric")`` to reach ``roi_size``."""
    return [max(r - s, 0) // 2 for s, r in zip(shape, roi_size, strict=True)]


def read_prepared_manifest(path: str | os.PathLike[str], split: str = "training") -> tuple[list[dict[str, Any]],
                                                                                           dict[str, Any]]:
    """``(entries, settings)`` of a manifest written by ``data prepare``; each entry gets an absolute ``"image"``
    (``.npy``) and its ``"shape"``. A missing file, another format, an empty split or a missing ``.npy``: an
    error naming the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "prepared.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prepared manifest not found (write it with "
                                "`python -m swinunetr_lib.data prepare MANIFEST --out DIR`)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path}: not a readable JSON file ({err})") from err
    if not isinstance(data, dict) or data.get("format") != PREPARED_FORMAT:
        raise ValueError(f"{path}: not a manifest written by `python -m swinunetr_lib.data prepare` "
                         f"(no \"format\": \"{PREPARED_FORMAT}\")")
    items = data.get(split)
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: split {split!r} is missing or empty")
    entries = [{**e, "image": str(path.parent / e["image"])} for e in items]
    missing = [e["image"] for e in entries if not Path(e["image"]).is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: {len(missing)} prepared volume(s) not found, e.g. {missing[0]}")
    return entries, dict(data.get("settings", {}))


class PreparedVolumes(torch.utils.data.Dataset):
    """Memory-mapped prepared CTs -> per item a list of ``num_samples`` dicts ``{"image": (1, X, Y, Z) float32}``
    in [0, 1] (MONAI's ``list_data_collate`` turns a batch of B items into (B * num_samples, 1, X, Y, Z)).

    A volume smaller than the ROI along an axis is padded symmetrically with 0 (= ``a_min``) as ``SpatialPadd``;
    the pad is never materialised, the window is cut from the memory map and filled around. ``entries``: dicts
    with an ``"image"`` path to a ``.npy`` (X, Y, Z) in HU. Defaults: the paper's 96^3 ROI, 2 crops per volume
    (official ``sw_batch_size``), HU window [-1000, 1000].
    """

    def __init__(self, entries: Sequence[dict[str, Any]], roi_size: int | Sequence[int] = 96, num_samples: int = 2,
                 a_min: float = PRETRAIN_HU_WINDOW[0], a_max: float = PRETRAIN_HU_WINDOW[1], seed: int = 0,
                 rank: int | None = None) -> None:
        self.entries = list(entries)
        self.roi = tuple(int(r) for r in ensure_tuple_rep(roi_size, 3))
        self.num_samples, self.a_min, self.a_max = num_samples, float(a_min), float(a_max)
        self.seed = seed
        self.rank = ddp.rank() if rank is None else rank
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # read by (persistent) worker processes
        self.reads = 0  # volumes read by this process (tests count them)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Crops of the next items come from ``epoch``; seen by worker processes too (shared memory)."""
        self._epoch.fill_(int(epoch))

    def crop_seed(self, index: int) -> int:
        return index_seed(self.seed, self.epoch, index, self.rank)

    def _volume(self, index: int) -> np.ndarray:
        path = self.entries[index]["image"]
        try:
            vol = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot read prepared volume ({err}); run `data prepare` again") from err
        if vol.ndim != 3:
            raise ValueError(f"{path}: expected an (X, Y, Z) array, got shape {vol.shape}")
        return vol

    def crops(self, vol: np.ndarray, seed: int) -> torch.Tensor:
        """``num_samples`` windows of ``vol`` (X, Y, Z) in HU -> (num_samples, 1, *roi) float32 in [0, 1].
        One allocation; each window is converted straight into it and scaled in place (no temporaries)."""
        pad = symmetric_padding(vol.shape, self.roi)
        padded = [max(s, r) for s, r in zip(vol.shape, self.roi, strict=True)]
        out = torch.full((self.num_samples, 1, *self.roi), self.a_min, dtype=torch.float32)
        dst_np = out.numpy()
        for k, window in enumerate(crop_slices(padded, self.roi, self.num_samples, seed)):
            src = tuple(slice(max(w.start - p, 0), min(w.stop - p, s))
                        for w, p, s in zip(window, pad, vol.shape, strict=True))
            dst = tuple(slice(s.start + p - w.start, s.stop + p - w.start)
                        for s, p, w in zip(src, pad, window, strict=True))
            np.copyto(dst_np[(k, 0, *dst)], vol[src], casting="unsafe")  # the only read from disk: this window
        return out.sub_(self.a_min).mul_(1.0 / (self.a_max - self.a_min)).clamp_(0.0, 1.0)

    def __getitem__(self, index: int) -> list[dict[str, torch.Tensor]]:
        vol = self._volume(index)
        self.reads += 1
        return [{"image": c} for c in self.crops(vol, self.crop_seed(index))]  # views of one (n, 1, *roi) tensor
