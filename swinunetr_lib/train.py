"""The one training loop: :func:`fit`. Pretraining and fine-tuning supply a step function and data.

What ``fit`` does, top to bottom: AdamW + linear warm-up then cosine decay (paper Sec. 4: AdamW,
lr 4e-4, 500 warm-up steps), mixed precision (bf16 where the GPU supports it, fp16 + GradScaler on
other GPUs, fp32 on CPU), gradient clipping (after unscaling, so it also works under fp16), gradient
checkpointing, optional ``torch.compile``, DDP under ``torchrun``, CSV + TensorBoard logs, tqdm,
atomic checkpoints and exact resume. A non-finite loss raises :class:`NonFiniteLossError` before the
optimizer step, so the last checkpoint on disk stays the last good one. Checkpoints hold tensors and
plain values only (RNG states included), so a resume reads them with ``weights_only=True``; the run folder
is locked, changed settings are checked on resume, and SIGINT / SIGTERM end the run with a checkpoint
(see :func:`fit`).

Contract for exact resume (bitwise on CPU):

- ``step_fn(model, batch, device) -> {"loss": scalar with grad, **other scalars}`` may use any global
  RNG (torch, NumPy, ``random``): ``fit`` re-seeds all of them from ``(seed, step, rank)`` right before
  fetching each batch, so a step's randomness depends only on its index. For on-device generators,
  seed them from the global torch RNG inside ``step_fn`` (e.g. ``torch.randint(2**62, ())``).
  ``step_fn`` should only call ``model(...)`` (under DDP / compile ``model`` is a wrapper); use
  :func:`unwrap` for attributes.
- ``train_data`` is re-iterated epoch after epoch. Before each ``iter(train_data)`` the global RNGs
  are seeded from ``(seed, epoch, rank)`` and ``train_data.set_epoch(epoch)`` (or
  ``train_data.sampler.set_epoch``) is called when present. An epoch must therefore yield the same
  batches given the same epoch index and RNG state (a list, a DataLoader with ``shuffle=True`` and
  no persistent workers, or a loader with ``set_epoch`` such as ``ssl_data.EpochDataLoader``). On
  resume, ``fit`` replays the seeding and skips the batches already consumed in the current epoch.
- Gradient checkpointing sets ``use_checkpoint = True`` on every submodule that has that attribute
  (MONAI's ``SwinTransformerBlock`` / ``BasicLayer`` read it at run time); a model without one raises.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from . import distributed as ddp
from .config import Config
from .cpu_bf16 import cpu_bf16_conv3d_grad_is_wrong, keep_small_convs_fp32
from .utils import (CheckpointError, RunInterrupted, atomic_torch_save, atomic_write_text, error_message,
                    remove_stale_temp_files, run_dir_lock, safe_torch_load, seed_everything)

StepFn = Callable[[nn.Module, Any, torch.device], dict[str, torch.Tensor]]
ValFn = Callable[[nn.Module, int], dict[str, float]]


@dataclass
class TrainConfig(Config):
    max_steps: int = 1000         # optimizer steps in total
    lr: float = 4e-4              # peak AdamW learning rate, reached after warm-up (paper Sec. 4: 4e-4)
    weight_decay: float = 1e-5    # AdamW weight decay (paper: 1e-5)
    warmup_steps: int = 500       # linear warm-up steps, then cosine decay to 0 at max_steps (paper: 500)
    grad_clip: float = 1.0        # max global gradient L2 norm; 0 disables; unscaled first under fp16
    precision: str = "auto"       # autocast dtype: auto | bf16 | fp16 | fp32
                                  # (auto: bf16 if supported, else fp16 on GPU; fp32 on CPU)
    grad_checkpoint: bool = False  # recompute activations in backward (MONAI use_checkpoint)
    compile: bool = False         # torch.compile the model
    checkpoint_every: int = 100   # optimizer steps between checkpoints/last.pt (also written at the end); 0: end only
    val_interval: int = 0         # optimizer steps between validations; 0: no validation
    log_every: int = 1            # optimizer steps between metrics.csv / TensorBoard rows
    seed: int = 0                 # random seed (initialisation, data order, augmentation)
    resume: bool = True           # resume from run_dir/checkpoints/last.pt if present
    best_metric: str = ""         # key of val_fn's dict to maximise; best.pt saved when it improves
    progress: bool = True         # show a tqdm progress bar
    deterministic: bool = False   # torch.use_deterministic_algorithms during fit: bitwise resume on multi-threaded CPU

    def check(self) -> TrainConfig:
        """``self``, or a ``ValueError`` naming the first setting out of range. ``fit`` calls it; pretraining and
        fine-tuning call it before any data is read."""
        whole = [("max_steps", 1), ("log_every", 1), ("warmup_steps", 0), ("checkpoint_every", 0), ("val_interval", 0)]
        for name, low in whole:
            if getattr(self, name) < low:
                raise ValueError(f"{name}={getattr(self, name)} must be >= {low}")
        for name, positive in (("lr", True), ("weight_decay", False), ("grad_clip", False)):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (positive and value == 0):
                raise ValueError(f"{name}={value} must be a finite number {'> 0' if positive else '>= 0'}")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"precision={self.precision!r}: expected one of auto, bf16, fp16, fp32")
        return self


# Settings a resumed run may change (applied from the new config, reported in one line): the schedule's length
# and shape, logging, validation and checkpoint cadence (a new best_metric starts best.pt over), and how the run
# executes, not what it computes. Every other TrainConfig field (seed, weight_decay, grad_clip, precision)
# defines the run: a change is refused.
RESUME_MAY_CHANGE = frozenset({"max_steps", "lr", "warmup_steps", "checkpoint_every", "val_interval", "log_every",
                               "progress", "best_metric", "resume", "grad_checkpoint", "compile", "deterministic"})
_SCHEDULE = ("lr", "warmup_steps", "max_steps")


class ResumeMismatchError(ValueError):
    """``last.pt`` was written with settings that define the run and now differ."""


@dataclass
class FitResult:
    step: int                                   # optimizer steps done
    metrics: dict[str, float]                   # last logged row
    history: list[dict[str, float]]             # every logged row (train and validation), across resumes
    last_checkpoint: Path | None
    best_checkpoint: Path | None = None
    best_value: float | None = None
    checkpoints: list[Path] = field(default_factory=list)


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradient became NaN/inf; the message names the step, the loss terms, the last good
    checkpoint and what to try."""


def _nonfinite_hint(dtype: torch.dtype, cfg: TrainConfig) -> str:
    """What to try after a non-finite loss or gradient, for this run's settings."""
    tips = []
    if dtype != torch.float32:
        tips.append(f"precision='fp32' (this run used {str(dtype).split('.')[-1]} autocast)")
    tips.append(f"a lower lr (this run: {cfg.lr:g})")
    if cfg.grad_clip <= 0:
        tips.append("grad_clip=1.0")
    tips.append("checking the data: python -m swinunetr_lib.data validate MANIFEST")
    return "try " + ", ".join(tips)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """Map ``auto|bf16|fp16|fp32`` to the autocast dtype (float32 = no autocast)."""
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision not in table:
        raise ValueError(f"precision={precision!r}: expected one of auto, bf16, fp16, fp32")
    return table[precision]


def make_adamw(params: Iterable[torch.Tensor], lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW, fused (one kernel for all parameters) on CUDA, the default foreach version elsewhere."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=device.type == "cuda" or None)


def warmup_cosine(warmup_steps: int, max_steps: int) -> Callable[[int], float]:
    """LR factor: linear warm-up over ``warmup_steps`` then half-cosine to 0 at ``max_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def seed_for(seed: int, *keys: int) -> int:
    """A well-mixed 63-bit seed from a base seed and integer keys (step, rank, ...)."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def _rng_state() -> dict[str, Any]:
    """Every global RNG state as tensors and plain values (loadable with ``weights_only=True``)."""
    legacy = np.random.get_state(legacy=False)  # {"bit_generator", "state": {"key": uint32 array, "pos"}, ...}
    numpy_state = {"bit_generator": str(legacy["bit_generator"]),
                   "key": torch.from_numpy(np.asarray(legacy["state"]["key"]).astype(np.int64)),
                   "pos": int(legacy["state"]["pos"]), "has_gauss": int(legacy["has_gauss"]),
                   "gauss": float(legacy["gauss"])}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    if isinstance(n, dict):
        np.random.set_state((n["bit_generator"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["gauss"]))
    else:  # checkpoints of earlier versions: np.random.get_state()'s tuple
        np.random.set_state(n)
    torch.set_rng_state(state["torch"].cpu())  # RNG states must be CPU byte tensors
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class _Batches:
    """Endless, resumable batch stream over ``data`` with per-epoch and per-step seeding (see module doc)."""

    def __init__(self, data: Iterable, seed: int, rank: int, epoch: int = 0, consumed: int = 0) -> None:
        self.data, self.seed, self.rank = data, seed, rank
        self.epoch, self.consumed = epoch, 0
        self._it = self._start_epoch()
        for _ in range(consumed):                # replay the batches already used in this epoch
            self.next(None)

    def _start_epoch(self) -> Iterator:
        seed_everything(seed_for(self.seed, 1, self.epoch, self.rank))
        for obj in (self.data, getattr(self.data, "sampler", None)):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(self.epoch)
        return iter(self.data)

    def next(self, step: int | None) -> Any:
        seed_everything(seed_for(self.seed, 2, self.epoch, self.consumed, self.rank))
        try:
            batch = next(self._it)
        except StopIteration:
            if self.consumed == 0:
                raise ValueError("train_data yielded no batch: is the dataset empty?") from None
            self.epoch, self.consumed = self.epoch + 1, 0
            self._it = self._start_epoch()
            return self.next(step)
        self.consumed += 1
        if step is not None:  # step_fn's randomness depends on the step index only
            seed_everything(seed_for(self.seed, 3, step, self.rank))
        return batch


class _Logger:
    """metrics.csv (one row per logged step) + TensorBoard.

    Every row reaches the CSV as it is logged: a run that stops (a non-finite loss, a crash, a kill) keeps
    every step it logged. Rows are appended; the file is rewritten (atomically) only at the first row of
    this process, so that a resumed run's file matches its checkpoint, and when a new column appears."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.path, self.enabled, self.rows = run_dir / "metrics.csv", enabled, []
        self.tb: Any = None
        self._tb_dir, self._tb_tried = run_dir / "tb", False
        self._keys: list[str] | None = None  # the header on disk; None: not written by this process yet

    def log(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        if not self.enabled:
            return
        if not self._tb_tried:  # opened at the first logged step, so a run that fails earlier leaves no tb/
            self._tb_tried = True
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(self._tb_dir))
            except ImportError:  # TensorBoard is optional; the CSV is the record
                self.tb = None
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(k, v, int(row["step"]))
            if len(self.rows) % 20 == 0:
                self.tb.flush()
        if self._keys is not None and set(row) <= set(self._keys):
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._keys).writerow(row)
        else:
            self.flush()

    def flush(self) -> None:
        """Rewrite metrics.csv from all rows (header = every key seen, in order of appearance)."""
        if not self.enabled:
            return
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(buf.getvalue(), self.path)
        self._keys = keys
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.enabled and self._keys is None and self.rows:
            self.flush()
        if self.tb is not None:
            self.tb.close()


def _guard_cpu_bf16(model: nn.Module, verbose: bool) -> None:
    """bf16 autocast on a CPU: the smallest 3D convolutions run in fp32 (see :mod:`swinunetr_lib.cpu_bf16`)."""
    n = keep_small_convs_fp32(model)
    if verbose and n and cpu_bf16_conv3d_grad_is_wrong():
        print(f"bf16 on this CPU: its oneDNN bf16 Conv3d weight gradient is wrong for inputs 2 voxels deep, so the "
              f"{n} 3D convolutions run in fp32 where an input axis is <= 2 voxels (precision='fp32' avoids bf16 entirely)")


def _enable_checkpointing(model: nn.Module) -> None:
    mods = [m for m in model.modules() if hasattr(m, "use_checkpoint")]
    if not mods:
        raise ValueError(f"grad_checkpoint=True but {type(model).__name__} has no submodule with a "
                         "'use_checkpoint' attribute (build it with MONAI's SwinTransformer/SwinUNETR)")
    for m in mods:
        m.use_checkpoint = True


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists (a setting compares equal whether it came from YAML, JSON or a checkpoint)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _resume_changes(state: Mapping[str, Any], cfg: TrainConfig, run_settings: Mapping[str, Any] | None,
                    last_path: Path) -> dict[str, tuple[Any, Any]]:
    """The TrainConfig settings that differ from ``last.pt``'s and may change (name -> (saved, new)).

    A changed setting that defines the run (a TrainConfig field outside :data:`RESUME_MAY_CHANGE`, or any of the
    caller's ``run_settings``: model size, ROI, task, data) raises :class:`ResumeMismatchError` naming them all.
    Checkpoints that did not record a setting are not compared on it."""
    saved_cfg = state.get("config") if isinstance(state.get("config"), Mapping) else {}
    new_cfg = cfg.to_dict()
    fixed, changes = [], {}
    for name, new in new_cfg.items():
        if name in saved_cfg and _plain(saved_cfg[name]) != _plain(new):
            if name in RESUME_MAY_CHANGE:
                changes[name] = (saved_cfg[name], new)
            else:
                fixed.append(f"{name} was {saved_cfg[name]!r}, now {new!r}")
    saved_run = state.get("run") if isinstance(state.get("run"), Mapping) else None
    if saved_run is not None and run_settings is not None:
        for name, new in run_settings.items():
            if name in saved_run and _plain(saved_run[name]) != _plain(new):
                fixed.append(f"{name} was {saved_run[name]!r}, now {new!r}")
    if fixed:
        raise ResumeMismatchError(f"{last_path}: cannot resume with other settings that define the run: "
                                  f"{'; '.join(fixed)}; restore them, choose another run folder, or start over "
                                  "with resume=false")
    return changes


def _follow_schedule(optimizer: torch.optim.Optimizer, scheduler: Any, cfg: TrainConfig) -> None:
    """After loading a checkpoint: the LR schedule of the new ``cfg`` (lr, warm-up, max_steps) from the current
    step on. The scheduler's lambda is already the new one; its base LR and the optimizer's LR are set here, as
    ``LambdaLR`` computes them, so the next step uses the new LR."""
    factor = warmup_cosine(cfg.warmup_steps, cfg.max_steps)
    scheduler.base_lrs = [cfg.lr for _ in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["initial_lr"] = cfg.lr
        group["lr"] = cfg.lr * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


class _StopRequest:
    """Set by SIGINT / SIGTERM during ``fit``: the run ends after the current step, with a checkpoint."""

    def __init__(self) -> None:
        self.signum: int | None = None


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[_StopRequest]:
    """SIGINT and SIGTERM only ask to stop (a second one stops at once); the previous handlers are restored on
    exit. Signal handlers can only be installed in the main thread: elsewhere nothing changes."""
    request = _StopRequest()
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


def _stop_signal(request: _StopRequest, device: torch.device) -> int | None:
    """The signal that asks this run to stop, agreed over all ranks (every rank stops at the same step)."""
    if not ddp.is_distributed():
        return request.signum
    go_on = ddp.all_reduce_min(torch.tensor(0 if request.signum else 1, dtype=torch.int32, device=device))
    return None if bool(go_on) else (request.signum or signal.SIGTERM)


def fit(model: nn.Module, step_fn: StepFn, train_data: Iterable, cfg: TrainConfig, run_dir: str | Path, *,
        device: str | torch.device = "auto", val_fn: ValFn | None = None,
        stop_after: int | None = None, run_settings: Mapping[str, Any] | None = None) -> FitResult:
    """Train ``model`` for ``cfg.max_steps`` optimizer steps; see the module docstring for the contracts.

    Safety: rank 0 holds ``run_dir``'s lock (:func:`~swinunetr_lib.utils.run_dir_lock`: a second live run in the
    folder is refused) and removes temporary files of interrupted checkpoint writes. A resume refuses a
    checkpoint that holds more than tensors and plain values, and one written with other settings that define
    the run; changed settings of :data:`RESUME_MAY_CHANGE` are applied and reported in one line (a new lr or
    max_steps takes effect at the next step). SIGINT / SIGTERM stop after the current step with a checkpoint
    and raise :class:`~swinunetr_lib.utils.RunInterrupted`; the same call resumes exactly.

    Args:
        model: the plain module (moved to ``device`` here; wrapped for DDP / compile internally).
        step_fn: ``(model, batch, device) -> {"loss": scalar tensor with grad, other scalar tensors}``.
        train_data: iterable of batches, re-iterated each epoch.
        cfg: :class:`TrainConfig`.
        run_dir: receives ``metrics.csv``, ``tb/``, ``checkpoints/last.pt`` and ``checkpoints/best.pt``.
        device: ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda"``; under torchrun ``cuda:$LOCAL_RANK``.
        val_fn: ``(plain model, step) -> {name: float}``, run on rank 0 every ``cfg.val_interval`` steps.
        stop_after: stop (with a checkpoint) after this many steps although the LR schedule spans
            ``max_steps`` — an interruption, e.g. a time-limited job that resumes later.
        run_settings: the caller's settings that define the run (model size, ROI, task, data; plain values),
            saved in the checkpoint; a resume with any of them changed is refused.
    """
    cfg.check()
    run_dir = Path(run_dir)
    device = ddp.init_distributed(device)
    torch.autograd.set_detect_anomaly(False)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_benchmark = torch.backends.cudnn.benchmark
    if cfg.deterministic:  # e.g. CPU index_put_ (relative position bias backward) uses atomic adds otherwise
        torch.use_deterministic_algorithms(True, warn_only=True)
    # Crops have one fixed size, so cuDNN may time its 3D convolution algorithms once and keep the fastest.
    torch.backends.cudnn.benchmark = device.type == "cuda" and not cfg.deterministic
    try:
        with run_dir_lock(run_dir), _stop_on_signals() as stop:
            if ddp.is_main_process():
                stale = remove_stale_temp_files(run_dir / "checkpoints", run_dir)
                if stale:
                    print(f"{run_dir}: removed {len(stale)} temporary file(s) of an interrupted write "
                          f"({', '.join(p.name for p in stale[:3])})")
            return _fit(model, step_fn, train_data, cfg, run_dir, device, val_fn, stop_after, run_settings, stop)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.backends.cudnn.benchmark = was_benchmark


def _fit(model: nn.Module, step_fn: StepFn, train_data: Iterable, cfg: TrainConfig, run_dir: Path,
         device: torch.device, val_fn: ValFn | None, stop_after: int | None,
         run_settings: Mapping[str, Any] | None, stop: _StopRequest) -> FitResult:
    rank, main = ddp.rank(), ddp.is_main_process()
    ckpt_dir = run_dir / "checkpoints"
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"

    model.to(device)
    if cfg.grad_checkpoint:
        _enable_checkpointing(model)
    dtype = resolve_precision(cfg.precision, device)
    if device.type == "cpu" and dtype == torch.bfloat16:
        _guard_cpu_bf16(model, main)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_adamw(params, cfg.lr, cfg.weight_decay, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg.warmup_steps, cfg.max_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    step, epoch, consumed, best = 0, 0, 0, None
    history: list[dict[str, float]] = []
    changes: dict[str, tuple[Any, Any]] = {}
    if cfg.resume and last_path.exists():
        try:  # tensors and plain values only (to CPU: load_state_dict moves them to the parameters' device)
            state = safe_torch_load(last_path, allow_numpy_rng=True)
        except CheckpointError as err:
            raise ValueError(f"{last_path}: cannot resume from this checkpoint ({err.problem}); "
                             "delete it or start with resume=false") from err
        if isinstance(state, dict):
            changes = _resume_changes(state, cfg, run_settings, last_path)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            step, epoch, consumed, best = state["step"], state["epoch"], state["consumed"], state["best_value"]
            history = state["history"]
            _set_rng_state(state["rng"])
        except Exception as err:  # noqa: BLE001 - a corrupt or foreign checkpoint: say which and what to do
            raise ValueError(f"{last_path}: cannot resume from this checkpoint ({error_message(err).splitlines()[0]}); "
                             "delete it or start with resume=false") from err
        if any(k in changes for k in _SCHEDULE):
            _follow_schedule(optimizer, scheduler, cfg)
        if "best_metric" in changes:
            best = None  # the saved best value measured another metric
        if changes and main:
            print(f"{last_path}: resuming at step {step} with changed settings: "
                  + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items()))

    net: nn.Module = model
    if ddp.is_distributed():
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)  # type: ignore[assignment]

    logger = _Logger(run_dir, enabled=main)
    logger.rows = list(history)
    checkpoints: list[Path] = []

    def save(path: Path, sync: bool = True) -> None:
        if main:
            atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                               "step": step, "epoch": batches.epoch, "consumed": batches.consumed,
                               "best_value": best, "history": logger.rows, "rng": _rng_state(),
                               "config": cfg.to_dict(), "run": _plain(dict(run_settings or {}))}, path)
            if path not in checkpoints:
                checkpoints.append(path)
        if sync:
            ddp.barrier()

    end = cfg.max_steps if stop_after is None else min(cfg.max_steps, stop_after)
    batches = _Batches(train_data, cfg.seed, rank, epoch, consumed)
    bar = None
    if cfg.progress and main and step < end:
        from tqdm.auto import tqdm
        bar = tqdm(total=end, initial=step, desc="fit", dynamic_ncols=True)
    model.train()
    tic = time.perf_counter()
    while step < end:
        batch = batches.next(step)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = step_fn(net, batch, device)
        if "loss" not in out:
            raise KeyError(f"step_fn must return a dict with a 'loss' entry; got keys {sorted(out)}")
        terms = {k: v.detach().float() for k, v in out.items()}
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(out["loss"]).backward()
        # the finite check waits for the device: do it once backward is queued, not between forward and backward
        values = torch.stack([terms[k] for k in terms])
        ok = ddp.all_reduce_min(torch.isfinite(values).all().to(torch.int32))
        if not bool(ok):
            shown = ", ".join(f"{k}={v:.4g}" for k, v in zip(terms, values.tolist()))
            kept = f"last good checkpoint: {last_path}" if last_path.exists() else "no checkpoint written yet"
            raise NonFiniteLossError(f"non-finite loss at step {step + 1} (rank {rank}): {shown}; "
                                     f"stopped before the optimizer step; {kept}; {_nonfinite_hint(dtype, cfg)}")
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            terms["grad_norm"] = grad_norm.detach().float()
            # under fp16 the GradScaler skips such a step by design; otherwise clipping an inf norm would write
            # NaN into the weights (inf * 0) and the loss would only turn NaN steps later
            if not scaler.is_enabled() and not bool(ddp.all_reduce_min(torch.isfinite(grad_norm).to(torch.int32))):
                kept = f"last good checkpoint: {last_path}" if last_path.exists() else "no checkpoint written yet"
                raise NonFiniteLossError(f"non-finite gradient at step {step + 1} (rank {rank}): grad_norm={float(grad_norm):.4g}, "
                                         f"loss={float(terms['loss']):.4g}; stopped before the optimizer step; {kept}; "
                                         f"{_nonfinite_hint(dtype, cfg)}")
        lr = optimizer.param_groups[0]["lr"]
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        if step % cfg.log_every == 0 or step == end:
            means = ddp.all_reduce_mean(torch.stack(list(terms.values())))
            row = {"step": step, **dict(zip(terms, means.tolist())), "lr": lr,
                   "sec_per_step": (time.perf_counter() - tic) / cfg.log_every}
            tic = time.perf_counter()
            logger.log(row)
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.4f}")
        if val_fn is not None and cfg.val_interval > 0 and (step % cfg.val_interval == 0 or step == end):
            if main:
                scores = val_fn(model, step)
                model.train()
                logger.log({"step": step, **{f"val_{k}": float(v) for k, v in scores.items()}})
                if cfg.best_metric:
                    if cfg.best_metric not in scores:
                        raise KeyError(f"best_metric={cfg.best_metric!r} not in val_fn's keys {sorted(scores)}")
                    value = float(scores[cfg.best_metric])
                    if best is None or value > best:
                        best = value
                        save(best_path, sync=False)
            ddp.barrier()
        if bar is not None:
            bar.update(1)
        saved = (cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0) or step == end
        if saved:
            save(last_path)
        if step < end and (signum := _stop_signal(stop, device)) is not None:  # SIGINT / SIGTERM: stop here
            if not saved:
                save(last_path)
            if bar is not None:
                bar.close()
            logger.close()
            raise RunInterrupted(f"stopped by {signal.Signals(signum).name} after step {step} of {end}; checkpoint "
                                 f"{last_path}; run the same command again to resume", signum)
    if bar is not None:
        bar.close()
    logger.close()
    if last_path.exists() and last_path not in checkpoints:
        checkpoints.append(last_path)
    train_rows = [r for r in logger.rows if "loss" in r]
    return FitResult(step=step, metrics=train_rows[-1] if train_rows else {}, history=logger.rows,
                     last_checkpoint=last_path if last_path.exists() else None,
                     best_checkpoint=best_path if best_path.exists() else None, best_value=best,
                     checkpoints=checkpoints)
