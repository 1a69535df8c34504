"""The batch stream of :func:`~swinunetr_lib.train.loop.fit`: endless, seeded per epoch and per batch, resumable
mid-epoch without loading the batches already used.

Seeding: before ``iter(data)`` of epoch ``e`` the global RNGs (``random``, NumPy, torch) are seeded from
``(seed, e, rank)`` and ``set_epoch(e)`` is called on the data, its sampler and its dataset where they have one;
before batch ``k`` of the epoch they are seeded from ``(seed, e, k, rank)``.

Resume mid-epoch (``consumed`` batches of epoch ``e`` already used): where it keeps the batches exactly, the
first ``consumed`` batches are skipped *at the sampler* (:class:`SkipFirst`: indices only, nothing is loaded).
That is the case for

- a list / tuple of batches;
- a ``DataLoader`` over a map-style dataset that declares per-index randomness with a ``set_epoch(epoch)``
  method (its item ``i`` depends only on ``(seed, epoch, i, rank)``, e.g. prepared volumes);
- a ``DataLoader`` loading in-process (``num_workers=0``) whose random transforms draw from the global RNGs
  (seeded per batch here), e.g. fine-tuning's ``AugmentedCases``.

Otherwise (MONAI random transforms that carry their own RNG state from item to item, worker processes without
declared per-index randomness, iterable datasets) the used batches are loaded and dropped, as a fresh run
would have drawn them.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from monai.transforms import Compose, Randomizable
from torch.utils.data import DataLoader, IterableDataset

from ..utils.device import seed_everything


def seed_for(seed: int, *keys: int) -> int:
    """A well-mixed 63-bit seed from a base seed and integer keys (step, rank, ...)."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


class SkipFirst:
    """An index sampler (or batch sampler) that yields what ``sampler`` yields less its first ``skip`` items.

    ``sampler`` is iterated as usual, so it draws its order from the same RNG state as without the skip; only
    indices are skipped, no data is loaded for them. ``before_skip`` / ``after_skip`` run just before the
    first index is drawn and just after the skip (in-process loading: the global RNG state in which an
    unskipped epoch draws its order, then the one of the first batch kept). The skip applies once: a
    persistent-workers iterator that keeps this object iterates the full sampler in later epochs."""

    def __init__(self, sampler: Iterable, skip: int, before_skip: Callable[[], None] | None = None,
                 after_skip: Callable[[], None] | None = None) -> None:
        self.sampler, self.skip = sampler, skip
        self.before_skip, self.after_skip = before_skip, after_skip

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator:
        it = iter(self.sampler)
        skip, self.skip = self.skip, 0
        if skip:
            if self.before_skip is not None:
                self.before_skip()
            for _ in itertools.islice(it, skip):
                pass
            if self.after_skip is not None:
                self.after_skip()
        yield from it


def _has_sequential_randomness(dataset: Any) -> bool:
    """True when ``dataset`` applies MONAI random transforms that keep their own RNG state across items
    (skipping item ``i`` would change the crops of every later item of the epoch)."""
    def random(t: Any) -> bool:  # not Compose.flatten(): a new Compose re-seeds the transforms it holds
        if isinstance(t, Compose):
            return any(random(u) for u in t.transforms)
        return isinstance(t, Randomizable)

    return random(getattr(dataset, "transform", None))


def skips_at_sampler(data: Any) -> bool:
    """Whether a resume of ``data`` mid-epoch skips at the sampler (see the module docstring)."""
    if isinstance(data, Sequence):
        return True
    if not isinstance(data, DataLoader) or isinstance(data.dataset, IterableDataset):
        return False
    if data.persistent_workers and getattr(data, "_iterator", None) is not None:
        return False  # its live iterator keeps the sampler it started with
    if hasattr(data.dataset, "set_epoch"):
        return True
    return data.num_workers == 0 and not _has_sequential_randomness(data.dataset)


def epoch_length(data: Any) -> int | None:
    """Batches per epoch of ``data`` on this rank (``len``), None when it has no length."""
    try:
        return len(data)
    except TypeError:
        return None


def consumed_at_world_size(consumed: int, saved_world: int, world: int, saved_length: int | None,
                           length: int | None) -> int:
    """Batches already used of the current epoch, per rank, for a run of ``world`` ranks resuming a checkpoint of
    ``saved_world`` ranks: the same fraction of the epoch (``consumed * length / saved_length``, floored, from
    the per-rank epoch lengths; ``consumed * saved_world / world`` when they are unknown).

    With a ``DistributedSampler`` this is the exact continuation: it deals one global order (fixed by seed and
    epoch) to the ranks in turn, so after ``consumed`` batches of ``b`` on ``W`` ranks the first
    ``consumed * W * b`` positions of that order are used, whatever the world size (exact when that is a whole
    number of batches at the new size; else up to ``world - 1`` batches of the epoch are seen twice). Data
    that every rank reads whole (the same length at every world size) keeps ``consumed``."""
    if saved_world == world:
        return consumed
    if saved_length and length:
        return consumed * length // saved_length
    return consumed * saved_world // world


class BatchStream:
    """Endless batches of ``data`` for rank ``rank``, starting after ``consumed`` batches of epoch ``epoch``."""

    def __init__(self, data: Iterable, seed: int, rank: int, epoch: int = 0, consumed: int = 0) -> None:
        self.data, self.seed, self.rank = data, seed, rank
        self.epoch, self.consumed = epoch, consumed
        self.loaded_to_skip = 0  # batches loaded only to be dropped on this resume (0 when skipped at the sampler)
        self.length: int | None = None  # batches per epoch on this rank (saved: a resume at another world size)
        self._it = self._start_epoch(consumed)

    def _seed_batch(self, k: int) -> None:
        seed_everything(seed_for(self.seed, 2, self.epoch, k, self.rank))

    def _start_epoch(self, skip: int = 0) -> Iterator:
        seed_everything(seed_for(self.seed, 1, self.epoch, self.rank))
        seen: list[Any] = []
        for obj in (self.data, getattr(self.data, "sampler", None), getattr(self.data, "dataset", None)):
            if hasattr(obj, "set_epoch") and not any(obj is s for s in seen):
                seen.append(obj)
                obj.set_epoch(self.epoch)
        self.length = epoch_length(self.data)
        if skip == 0:
            return iter(self.data)
        if isinstance(self.data, Sequence):
            return itertools.islice(iter(self.data), skip, None)
        if skips_at_sampler(self.data):
            return self._iter_skipping(self.data, skip)  # type: ignore[arg-type]
        it = iter(self.data)
        for k in range(skip):  # replay: load and drop, as a run that never stopped drew them
            self._seed_batch(k)
            if next(it, _END) is _END:
                return iter(())
            self.loaded_to_skip += 1
        return it

    def _iter_skipping(self, loader: DataLoader, skip: int) -> Iterator:
        """``iter(loader)`` with its index sampler wrapped in :class:`SkipFirst` (the loader is left as it was)."""
        in_process = loader.num_workers == 0
        name = "batch_sampler" if loader.batch_sampler is not None else "sampler"
        original = getattr(loader, name)
        wrapper = SkipFirst(original, skip, (lambda: self._seed_batch(0)) if in_process else None,
                            (lambda: self._seed_batch(skip)) if in_process else None)
        object.__setattr__(loader, name, wrapper)  # DataLoader refuses a new sampler through setattr
        try:
            return iter(loader)
        finally:
            object.__setattr__(loader, name, original)

    def next(self, step: int) -> Any:
        """The next batch; the global RNGs are then seeded from ``(seed, step, rank)`` for the step function."""
        self._seed_batch(self.consumed)
        batch = next(self._it, _END)
        if batch is _END:
            if self.consumed == 0:
                raise ValueError("train_data yielded no batch: is the dataset empty?")
            self.epoch, self.consumed = self.epoch + 1, 0
            self._it = self._start_epoch()
            return self.next(step)
        self.consumed += 1
        seed_everything(seed_for(self.seed, 3, step, self.rank))  # step_fn's randomness depends on the step only
        return batch


_END = object()
