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
  are seeded from ``(seed, epoch, rank)`` and ``set_epoch(epoch)`` of the data, its sampler and its dataset
  is called where present. An epoch must therefore yield the same batches given the same epoch index and
  RNG state (a list, a DataLoader with ``shuffle=True`` and no persistent workers, or a loader with
  ``set_epoch`` such as ``ssl_data.EpochDataLoader``). On resume, ``fit`` skips the batches already used in
  the current epoch at the sampler, without loading them, where that keeps the batches exact, and loads and
  drops them otherwise (:mod:`swinunetr_lib.train.batch_stream`).
- One optimizer step (autocast, backward, the finite checks, clipping, AdamW): :mod:`swinunetr_lib.train.step`.
- Checkpoints, resume at another world size (what stays exact), RNG states, rank agreement on the resume
  step and signals: :mod:`swinunetr_lib.train.checkpointing`.
- Gradient checkpointing sets ``use_checkpoint = True`` on every submodule that has that attribute
  (MONAI's ``SwinTransformerBlock`` / ``BasicLayer`` read it at run time); a model without one raises.
"""
from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import Config
from ..utils import distributed as ddp
from ..utils.cli import RunInterrupted
from ..utils.distributed import unwrap
from ..utils.files import atomic_torch_save, remove_stale_temp_files
from ..utils.run_lock import run_dir_lock
from . import checkpointing as ckpt
from .batch_stream import BatchStream, seed_for
from .checkpointing import RESUME_MAY_CHANGE, ResumeMismatchError
from .cpu_bf16 import cpu_bf16_conv3d_grad_is_wrong, keep_small_convs_fp32
from .metrics_log import MetricsLog, write_plan
from .step import NonFiniteLossError, Optimization, StepFn, optimizer_step

# what this module offers, with what fit raises and what a step function may use (importable from here)
__all__ = ["RESUME_MAY_CHANGE", "FitResult", "NonFiniteLossError", "ResumeMismatchError", "StepFn", "TrainConfig",
           "ValFn", "fit", "make_adamw", "resolve_precision", "seed_for", "unwrap", "warmup_cosine"]

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
    dist_timeout_min: float = 30.0  # minutes a rank waits for the others in a collective (NCCL/gloo process-group
                                    # timeout) before the job fails instead of hanging; fixed when the group starts

    def check(self) -> TrainConfig:
        """``self``, or a ``ValueError`` naming the first setting out of range. ``fit`` calls it; pretraining and
        fine-tuning call it before any data is read."""
        whole = [("max_steps", 1), ("log_every", 1), ("warmup_steps", 0), ("checkpoint_every", 0), ("val_interval", 0)]
        for name, low in whole:
            if getattr(self, name) < low:
                raise ValueError(f"{name}={getattr(self, name)} must be >= {low}")
        for name, positive in (("lr", True), ("weight_decay", False), ("grad_clip", False), ("dist_timeout_min", True)):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (positive and value == 0):
                raise ValueError(f"{name}={value} must be a finite number {'> 0' if positive else '>= 0'}")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"precision={self.precision!r}: expected one of auto, bf16, fp16, fp32")
        return self

    def train_config(self) -> TrainConfig:
        """The loop's own settings out of a stage config derived from this class (:class:`PretrainConfig`,
        :class:`FinetuneConfig`): what :func:`fit` receives."""
        names = {f.name for f in fields(TrainConfig)}
        return TrainConfig.from_dict({k: v for k, v in self.to_dict().items() if k in names})


@dataclass
class FitResult:
    step: int                                   # optimizer steps done
    metrics: dict[str, float]                   # last logged row
    history: list[dict[str, float]]             # every logged row (train and validation), across resumes
                                                # (rank 0; read back from metrics.csv on resume)
    last_checkpoint: Path | None
    best_checkpoint: Path | None = None
    best_value: float | None = None
    checkpoints: list[Path] = field(default_factory=list)


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


def make_adamw(params: Iterable[torch.Tensor], lr: float, weight_decay: float,
               device: torch.device) -> torch.optim.AdamW:
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



def _guard_cpu_bf16(model: nn.Module, verbose: bool) -> None:
    """bf16 autocast on a CPU: the smallest 3D convolutions run in fp32 (see :mod:`swinunetr_lib.train.cpu_bf16`)."""
    n = keep_small_convs_fp32(model)
    if verbose and n and cpu_bf16_conv3d_grad_is_wrong():
        print(f"bf16 on this CPU: its oneDNN bf16 Conv3d weight gradient is wrong for inputs 2 voxels deep, so the "
              f"{n} 3D convolutions run in fp32 where an input axis is <= 2 voxels "
              "(precision='fp32' avoids bf16 entirely)")


def enable_checkpointing(model: nn.Module) -> None:
    mods = [m for m in model.modules() if hasattr(m, "use_checkpoint")]
    if not mods:
        raise ValueError(f"grad_checkpoint=True but {type(model).__name__} has no submodule with a "
                         "'use_checkpoint' attribute (build it with MONAI's SwinTransformer/SwinUNETR)")
    for m in mods:
        m.use_checkpoint = True


def fit(model: nn.Module, step_fn: StepFn, train_data: Iterable, cfg: TrainConfig, run_dir: str | Path, *,
        device: str | torch.device = "auto", val_fn: ValFn | None = None,
        stop_after: int | None = None, run_settings: Mapping[str, Any] | None = None) -> FitResult:
    """Train ``model`` for ``cfg.max_steps`` optimizer steps; see the module docstring for the contracts.

    Safety: rank 0 holds ``run_dir``'s lock (:func:`~swinunetr_lib.utils.run_lock.run_dir_lock`: a second live run in
    the folder is refused) and removes temporary files of interrupted checkpoint writes. A resume refuses a
    checkpoint that holds more than tensors and plain values, and one written with other settings that define
    the run; changed settings of :data:`RESUME_MAY_CHANGE` are applied and reported in one line (a new lr or
    max_steps takes effect at the next step). SIGINT / SIGTERM stop after the current step with a checkpoint
    and raise :class:`~swinunetr_lib.utils.cli.RunInterrupted`; the same call resumes exactly.

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
    device = ddp.init_distributed(device, timeout_s=60.0 * cfg.dist_timeout_min)
    torch.autograd.set_detect_anomaly(False)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_benchmark = torch.backends.cudnn.benchmark
    if cfg.deterministic:  # e.g. CPU index_put_ (relative position bias backward) uses atomic adds otherwise
        torch.use_deterministic_algorithms(True, warn_only=True)
    # Crops have one fixed size, so cuDNN may time its 3D convolution algorithms once and keep the fastest.
    torch.backends.cudnn.benchmark = device.type == "cuda" and not cfg.deterministic
    try:
        with run_dir_lock(run_dir), ckpt.stop_on_signals() as stop:
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
         run_settings: Mapping[str, Any] | None, stop: ckpt.StopRequest) -> FitResult:
    """The loop of :func:`fit`, inside the run folder's lock and the signal handlers: set up (or resume), then per
    step a batch, an optimizer step, a log row, validation, a checkpoint and a look at the signals."""
    main = ddp.is_main_process()
    last_path, best_path = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"

    opt = _prepare_training(model, cfg, device, verbose=main)
    resumed = _resume(last_path, model, opt, cfg, run_settings, device, train_data, run_dir / "metrics.csv")
    step, best = resumed.step, resumed.best
    net = _wrap(model, cfg, device)  # DDP and/or torch.compile; step_fn gets it, val_fn and checkpoints the plain model
    logger = MetricsLog(run_dir, enabled=main)
    logger.rows = list(resumed.history)
    end = cfg.max_steps if stop_after is None else min(cfg.max_steps, stop_after)
    if main:  # for progress watchers: the steps this call runs (metrics.csv then says how far it got)
        write_plan(run_dir, step, end, cfg.max_steps, cfg.log_every)
    batches = BatchStream(train_data, cfg.seed, ddp.rank(), resumed.epoch, resumed.consumed)
    saver = _CheckpointWriter(model, opt, batches, cfg, run_settings, device)
    bar = _progress_bar(cfg.progress and main, step, end)
    model.train()
    tic = time.perf_counter()
    while step < end:
        batch = batches.next(step)  # then seeds the global RNGs from (seed, step, rank) for step_fn
        terms, lr = optimizer_step(net, step_fn, batch, device, opt, cfg, step + 1, last_path)
        step += 1
        if step % cfg.log_every == 0 or step == end:
            row = {"step": step, **_reduce_for_log(terms), "lr": lr,
                   "sec_per_step": (time.perf_counter() - tic) / cfg.log_every}
            tic = time.perf_counter()
            _log_row(row, logger, bar)
        if val_fn is not None and cfg.val_interval > 0 and (step % cfg.val_interval == 0 or step == end):
            best = _validate_and_keep_best(val_fn, model, step, best, cfg.best_metric, logger, saver, best_path)
        if bar is not None:
            bar.update(1)
        saved = (cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0) or step == end
        if saved:
            saver.save(last_path, step, best)
        if step < end and (signum := ckpt.stop_signal(stop, device)) is not None:  # SIGINT / SIGTERM: stop here
            if not saved:
                saver.save(last_path, step, best)
            _close(bar, logger)
            raise RunInterrupted(f"stopped by {signal.Signals(signum).name} after step {step} of {end}; checkpoint "
                                 f"{last_path}; run the same command again to resume", signum)
    _close(bar, logger)
    return _result(step, logger.rows, best, saver.written, last_path, best_path)


# --- the pieces of _fit, in the order it uses them ---------------------------------------------------------------

def _prepare_training(model: nn.Module, cfg: TrainConfig, device: torch.device, verbose: bool) -> Optimization:
    """Move ``model`` to ``device`` (gradient checkpointing on if asked; bf16 on a CPU keeps its smallest 3D
    convolutions in fp32) and build what its optimizer steps update: AdamW over the trainable parameters, warm-up
    then cosine LR, and a GradScaler enabled under fp16 only."""
    model.to(device)
    if cfg.grad_checkpoint:
        enable_checkpointing(model)
    dtype = resolve_precision(cfg.precision, device)
    if device.type == "cpu" and dtype == torch.bfloat16:
        _guard_cpu_bf16(model, verbose)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_adamw(params, cfg.lr, cfg.weight_decay, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg.warmup_steps, cfg.max_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    return Optimization(params, optimizer, scheduler, scaler, dtype)


def _resume(last_path: Path, model: nn.Module, opt: Optimization, cfg: TrainConfig,
            run_settings: Mapping[str, Any] | None, device: torch.device, train_data: Iterable,
            metrics_csv: Path) -> ckpt.Resumed:
    """Where this run starts: step 0, or ``last_path`` (every rank at the same step, or all stop) loaded into the
    model, optimizer, scheduler, scaler and RNGs (:func:`~swinunetr_lib.train.checkpointing.restore`)."""
    state = ckpt.load_agreed(last_path, cfg.resume, device)
    if state is None:
        return ckpt.Resumed()
    return ckpt.restore(state, last_path, model, opt.optimizer, opt.scheduler, opt.scaler, cfg, run_settings, device,
                        train_data, metrics_csv)


def _wrap(model: nn.Module, cfg: TrainConfig, device: torch.device) -> nn.Module:
    """``model`` as the steps call it: in ``DistributedDataParallel`` under torchrun, then ``torch.compile``-d if
    ``cfg.compile``; the plain ``model`` itself otherwise."""
    net: nn.Module = model
    if ddp.is_distributed():
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)  # type: ignore[assignment]
    return net


class _CheckpointWriter:
    """Writes ``last.pt`` / ``best.pt`` (rank 0, atomically): model, optimizer, scheduler and scaler states, the
    data position of ``batches``, RNG states and settings (:func:`~swinunetr_lib.train.checkpointing.checkpoint_state`).
    ``written`` lists the paths written, in order."""

    def __init__(self, model: nn.Module, opt: Optimization, batches: BatchStream, cfg: TrainConfig,
                 run_settings: Mapping[str, Any] | None, device: torch.device) -> None:
        self.model, self.opt, self.batches = model, opt, batches
        self.cfg, self.run_settings, self.device = cfg, run_settings, device
        self.written: list[Path] = []

    def save(self, path: Path, step: int, best: float | None, sync: bool = True) -> None:
        """Write the checkpoint after ``step`` steps to ``path``; with ``sync`` every rank waits until it is there."""
        if ddp.is_main_process():
            opt, batches = self.opt, self.batches
            atomic_torch_save(ckpt.checkpoint_state(self.model, opt.optimizer, opt.scheduler, opt.scaler, step=step,
                                                    epoch=batches.epoch, consumed=batches.consumed,
                                                    epoch_batches=batches.length, best=best, cfg=self.cfg,
                                                    run_settings=self.run_settings, device=self.device), path)
            if path not in self.written:
                self.written.append(path)
        if sync:
            ddp.barrier()


def _progress_bar(show: bool, step: int, end: int) -> Any:
    """A tqdm bar from ``step`` to ``end``, or None when not ``show`` or nothing is left to do."""
    if not show or step >= end:
        return None
    return tqdm(total=end, initial=step, desc="fit", dynamic_ncols=True)


def _reduce_for_log(terms: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """``terms`` (0-d tensors) as floats, each the mean over the ranks (one all-reduce; waits for the device)."""
    means = ddp.all_reduce_mean(torch.stack(list(terms.values())))  # (len(terms),)
    return dict(zip(terms, means.tolist(), strict=True))


def _log_row(row: dict[str, float], logger: MetricsLog, bar: Any) -> None:
    """Append ``row`` to ``metrics.csv`` / TensorBoard (rank 0) and show its loss on the progress bar."""
    logger.log(row)
    if bar is not None:
        bar.set_postfix(loss=f"{row['loss']:.4f}")


def _validate_and_keep_best(val_fn: ValFn, model: nn.Module, step: int, best: float | None, best_metric: str,
                            logger: MetricsLog, saver: _CheckpointWriter, best_path: Path) -> float | None:
    """On rank 0: ``val_fn`` on the plain ``model`` (back in train mode after), its scores logged as ``val_*``, and
    ``best_path`` written when ``best_metric`` (if set) beats ``best``; every rank then waits. Returns the best
    value."""
    if ddp.is_main_process():
        scores = val_fn(model, step)
        model.train()
        logger.log({"step": step, **{f"val_{k}": float(v) for k, v in scores.items()}})
        if best_metric:
            if best_metric not in scores:
                raise KeyError(f"best_metric={best_metric!r} not in val_fn's keys {sorted(scores)}")
            value = float(scores[best_metric])
            if best is None or value > best:
                best = value
                saver.save(best_path, step, best, sync=False)
    ddp.barrier()
    return best


def _close(bar: Any, logger: MetricsLog) -> None:
    """Close the progress bar (if any) and the metrics log (TensorBoard; the CSV if not written yet)."""
    if bar is not None:
        bar.close()
    logger.close()


def _result(step: int, rows: list[dict[str, float]], best: float | None, written: list[Path], last_path: Path,
            best_path: Path) -> FitResult:
    """The :class:`FitResult` after ``step`` steps: the last training row, every row, and the checkpoints on disk."""
    checkpoints = list(written)
    if last_path.exists() and last_path not in checkpoints:
        checkpoints.append(last_path)
    train_rows = [r for r in rows if "loss" in r]
    return FitResult(step=step, metrics=train_rows[-1] if train_rows else {}, history=rows,
                     last_checkpoint=last_path if last_path.exists() else None,
                     best_checkpoint=best_path if best_path.exists() else None, best_value=best,
                     checkpoints=checkpoints)
