"""Checkpoints of :func:`~swinunetr_lib.train.loop.fit`: what ``last.pt`` holds, how every rank resumes from it,
RNG states, changed settings on resume, and SIGINT / SIGTERM.

``last.pt`` holds tensors and plain values only (a resume reads it with ``weights_only=True``): model, optimizer,
scheduler and GradScaler states, the step, the data position (epoch, batches used of it per rank, world size),
the best validation value, the RNG states of rank 0 (CPU, and of its own CUDA device only), the TrainConfig and
the caller's run settings. The metrics history is *not* in it: ``metrics.csv`` is the record, and a resumed run
reads its rows up to the checkpoint's step back (:func:`~swinunetr_lib.train.metrics_log.read_metrics`).

Resume at another world size (``W`` ranks wrote the checkpoint, ``W'`` resume it):

- exact always: model, optimizer, scheduler, GradScaler, step, epoch, best value, the LR schedule;
- the data position: the resumed run continues the current epoch at the same fraction of it
  (:func:`~swinunetr_lib.train.batch_stream.consumed_at_world_size`). With a ``DistributedSampler`` (one global order
  per epoch, fixed by seed and epoch and dealt to the ranks in turn) that is the exact continuation of the
  sample order when ``consumed * W`` is a multiple of ``W'`` (else up to ``W' - 1`` batches of that epoch are
  seen twice), and later epochs are the same global order. With data partitioned per rank up front
  (``ssl_data.ssl_dataloader``) the partitions themselves change with the world size: same fraction, other
  samples;
- not as in an uninterrupted run at ``W`` ranks: which rank gets which sample, hence rank-seeded crops and the
  per-step augmentation (seeded from step and rank), and the global batch (``W'`` times the per-rank batch; the
  LR is not rescaled). At the same world size everything is bitwise exact on CPU.

All ranks read ``last.pt`` and agree on the step they resume from (an all-gather of each rank's view); ranks
that disagree (one does not see the file: no shared file system, another path) all stop with one line naming
the file, instead of training from different steps until a collective hangs.
"""
from __future__ import annotations

import contextlib
import random
import signal
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..utils import distributed as ddp
from ..utils.cli import error_message
from ..utils.files import CheckpointError, safe_torch_load
from .batch_stream import consumed_at_world_size, epoch_length
from .metrics_log import read_metrics

if TYPE_CHECKING:
    from .loop import TrainConfig

# Settings a resumed run may change (applied from the new config, reported in one line): the schedule's length
# and shape, logging, validation and checkpoint cadence (a new best_metric starts best.pt over), and how the run
# executes, not what it computes. Every other TrainConfig field (seed, weight_decay, grad_clip, precision)
# defines the run: a change is refused.
RESUME_MAY_CHANGE = frozenset({"max_steps", "lr", "warmup_steps", "checkpoint_every", "val_interval", "log_every",
                               "progress", "best_metric", "resume", "grad_checkpoint", "compile", "deterministic",
                               "dist_timeout_min"})
_SCHEDULE = ("lr", "warmup_steps", "max_steps")
_NO_FILE, _UNREADABLE = -1, -2  # a rank's view of last.pt besides its step


class ResumeMismatchError(ValueError):
    """``last.pt`` was written with settings that define the run and now differ."""


# --- RNG states ------------------------------------------------------------------------------------------------

def rng_state(device: torch.device) -> dict[str, Any]:
    """Every global RNG state as tensors and plain values (loadable with ``weights_only=True``); on CUDA the state
    of ``device`` only (a checkpoint of an 8-GPU job then resumes where fewer GPUs are visible)."""
    legacy = np.random.get_state(legacy=False)  # {"bit_generator", "state": {"key": uint32 array, "pos"}, ...}
    numpy_state = {"bit_generator": str(legacy["bit_generator"]),
                   "key": torch.from_numpy(np.asarray(legacy["state"]["key"]).astype(np.int64)),
                   "pos": int(legacy["state"]["pos"]), "has_gauss": int(legacy["has_gauss"]),
                   "gauss": float(legacy["gauss"])}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    """Restore :func:`rng_state`'s states; the CUDA state goes to ``device`` (ignored off CUDA). Checkpoints of
    earlier versions hold a list with one state per GPU visible to rank 0: the entry of ``device``'s index is
    taken when the list has one, else the first (rank 0's own device)."""
    random.setstate(state["python"])
    n = state["numpy"]
    if isinstance(n, dict):
        np.random.set_state((n["bit_generator"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["gauss"]))
    else:  # checkpoints of earlier versions: np.random.get_state()'s tuple
        np.random.set_state(n)
    torch.set_rng_state(state["torch"].cpu())  # RNG states must be CPU byte tensors
    cuda = state.get("cuda")
    if cuda is None or device.type != "cuda":
        return
    if isinstance(cuda, (list, tuple)):
        if not cuda:
            return
        index = device.index if device.index is not None else torch.cuda.current_device()
        cuda = cuda[index] if index < len(cuda) else cuda[0]
    torch.cuda.set_rng_state(cuda.cpu(), device)


# --- what a checkpoint holds, and reading it on every rank --------------------------------------------------------

def checkpoint_state(model: torch.nn.Module, optimizer: Any, scheduler: Any, scaler: Any, *, step: int, epoch: int,
                     consumed: int, epoch_batches: int | None, best: float | None, cfg: TrainConfig,
                     run_settings: Mapping[str, Any] | None, device: torch.device) -> dict[str, Any]:
    """The dict ``last.pt`` / ``best.pt`` hold (no metrics history: ``metrics.csv`` is the record)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "step": step, "epoch": epoch, "consumed": consumed,
            "epoch_batches": epoch_batches, "world_size": ddp.world_size(), "best_value": best,
            "rng": rng_state(device), "config": cfg.to_dict(),
            "run": plain(dict(run_settings or {}))}


def _ranks(ranks: list[int]) -> str:
    shown = ", ".join(map(str, ranks[:8])) + (", ..." if len(ranks) > 8 else "")
    return f"rank{'s' if len(ranks) > 1 else ''} {shown}"


def load_agreed(path: Path, resume: bool, device: torch.device) -> dict[str, Any] | None:
    """``path`` read on this rank (None: no file, or ``resume`` off), once every rank has the same view of it.

    Each rank reads the file itself and the ranks all-gather what they saw (its step, no file, unreadable). When
    the views differ every rank raises the same one-line ``ValueError`` naming the file and who saw what; an
    unreadable or foreign file raises on every rank (delete it or start with resume=false)."""
    state, problem = None, ""
    if resume and path.exists():
        try:  # tensors and plain values only (to CPU: load_state_dict moves them to the parameters' device)
            state = safe_torch_load(path, allow_numpy_rng=True)
        except CheckpointError as err:
            problem = err.problem
        if state is not None and not (isinstance(state, dict) and isinstance(state.get("step"), int)):
            state, problem = None, "no step in it: not a checkpoint of this library's training loop"
    view = state["step"] if state is not None else (_UNREADABLE if problem else _NO_FILE)
    views = [v[0] for v in ddp.all_gather_ints([view], device)]
    if len(set(views)) > 1:
        groups: dict[int, list[int]] = {}
        for r, v in enumerate(views):
            groups.setdefault(v, []).append(r)
        seen = "; ".join(f"{'no file' if v == _NO_FILE else 'unreadable' if v == _UNREADABLE else f'step {v}'} on "
                         f"{_ranks(rs)}" for v, rs in groups.items())
        ddp.shutdown_distributed()  # every rank is here: leave the process group together, then stop
        raise ValueError(f"{path}: the ranks disagree on where to resume ({seen}); every rank must see the same "
                         "run folder (a shared file system, the same path) -- or start over with resume=false")
    if problem:
        ddp.shutdown_distributed()
        raise ValueError(f"{path}: cannot resume from this checkpoint ({problem}); "
                         "delete it or start with resume=false")
    return state


@dataclass
class Resumed:
    """Where a resumed run continues: step, data position (per rank, at this world size), best value, history."""
    step: int = 0
    epoch: int = 0
    consumed: int = 0
    best: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def restore(state: Mapping[str, Any], path: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any,
            scaler: Any, cfg: TrainConfig, run_settings: Mapping[str, Any] | None, device: torch.device,
            train_data: Any, metrics_csv: Path) -> Resumed:
    """Load ``state`` (read by :func:`load_agreed`) into the model, optimizer, scheduler and scaler, restore the
    RNG states, apply changed settings of :data:`RESUME_MAY_CHANGE` (one printed line) and refuse changed
    settings that define the run (:class:`ResumeMismatchError`)."""
    main = ddp.is_main_process()
    changes = resume_changes(state, cfg, run_settings, path)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        out = Resumed(state["step"], state["epoch"], state["consumed"], state["best_value"])
        set_rng_state(state["rng"], device)
    except Exception as err:  # a corrupt or foreign checkpoint: say which and what to do
        raise ValueError(f"{path}: cannot resume from this checkpoint ({error_message(err).splitlines()[0]}); "
                         "delete it or start with resume=false") from err
    out.history = read_metrics(metrics_csv, out.step) if metrics_csv.exists() else list(state.get("history", []))
    if any(k in changes for k in _SCHEDULE):
        follow_schedule(optimizer, scheduler, cfg)
    if "best_metric" in changes:
        out.best = None  # the saved best value measured another metric
    if changes and main:
        print(f"{path}: resuming at step {out.step} with changed settings: "
              + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items()))
    saved_world, world = int(state.get("world_size", 1)), ddp.world_size()
    if saved_world != world:
        used = out.consumed
        out.consumed = consumed_at_world_size(used, saved_world, world, state.get("epoch_batches"),
                                              epoch_length(train_data))
        if main:
            print(f"{path}: written by {saved_world} rank(s), resumed by {world}: model, optimizer, schedule and "
                  f"step {out.step} are exact; epoch {out.epoch} goes on after {out.consumed} batch(es) per rank "
                  f"(was {used} of {state.get('epoch_batches')}); which rank gets which sample (so crops and "
                  "augmentation) and the global batch differ from a run that kept its world size")
    return out


# --- changed settings -------------------------------------------------------------------------------------------

def plain(value: Any) -> Any:
    """``value`` with tuples as lists (a setting compares equal whether it came from YAML, JSON or a checkpoint)."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def resume_changes(state: Mapping[str, Any], cfg: TrainConfig, run_settings: Mapping[str, Any] | None,
                   last_path: Path) -> dict[str, tuple[Any, Any]]:
    """The TrainConfig settings that differ from ``last.pt``'s and may change (name -> (saved, new)).

    A changed setting that defines the run (a TrainConfig field outside :data:`RESUME_MAY_CHANGE`, or any of the
    caller's ``run_settings``: model size, ROI, task, data) raises :class:`ResumeMismatchError` naming them all.
    Checkpoints that did not record a setting are not compared on it."""
    saved_cfg = state.get("config") if isinstance(state.get("config"), Mapping) else {}
    fixed, changes = [], {}
    for name, new in cfg.to_dict().items():
        if name in saved_cfg and plain(saved_cfg[name]) != plain(new):
            if name in RESUME_MAY_CHANGE:
                changes[name] = (saved_cfg[name], new)
            else:
                fixed.append(f"{name} was {saved_cfg[name]!r}, now {new!r}")
    saved_run = state.get("run") if isinstance(state.get("run"), Mapping) else None
    if saved_run is not None and run_settings is not None:
        for name, new in run_settings.items():
            if name in saved_run and plain(saved_run[name]) != plain(new):
                fixed.append(f"{name} was {saved_run[name]!r}, now {new!r}")
    if fixed:
        raise ResumeMismatchError(f"{last_path}: cannot resume with other settings that define the run: "
                                  f"{'; '.join(fixed)}; restore them, choose another run folder, or start over "
                                  "with resume=false")
    return changes


def follow_schedule(optimizer: torch.optim.Optimizer, scheduler: Any, cfg: TrainConfig) -> None:
    """After loading a checkpoint: the LR schedule of the new ``cfg`` (lr, warm-up, max_steps) from the current
    step on. The scheduler's lambda is already the new one; its base LR and the optimizer's LR are set here, as
    ``LambdaLR`` computes them, so the next step uses the new LR."""
    factor = scheduler.lr_lambdas[0]
    scheduler.base_lrs = [cfg.lr for _ in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["initial_lr"] = cfg.lr
        group["lr"] = cfg.lr * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


# --- SIGINT / SIGTERM -------------------------------------------------------------------------------------------

class StopRequest:
    """Set by SIGINT / SIGTERM during ``fit``: the run ends after the current step, with a checkpoint."""

    def __init__(self) -> None:
        self.signum: int | None = None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """SIGINT and SIGTERM only ask to stop (a second one stops at once); the previous handlers are restored on
    exit. Signal handlers can only be installed in the main thread: elsewhere nothing changes."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: Any) -> None:
        if request.signum is not None:
            raise KeyboardInterrupt
        request.signum = signum

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


def stop_signal(request: StopRequest, device: torch.device) -> int | None:
    """The signal that asks this run to stop, agreed over all ranks (every rank stops at the same step)."""
    if not ddp.is_distributed():
        return request.signum
    go_on = ddp.all_reduce_min(torch.tensor(0 if request.signum else 1, dtype=torch.int32, device=device))
    return None if bool(go_on) else (request.signum or signal.SIGTERM)
