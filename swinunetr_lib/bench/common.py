"""What the benchmarks share: options and variants, model preparation (SDPA attention, gradient checkpointing,
channels-last, regional torch.compile), in-step phase timing, peak memory, the summary and the printed table.
The benchmarks themselves: :mod:`swinunetr_lib.bench` (CLI, ``ssl``), :mod:`swinunetr_lib.bench.finetune`,
:mod:`swinunetr_lib.bench.infer`.
"""
from __future__ import annotations

import contextlib
import gc
import platform
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import monai
import torch
from monai.networks.nets.swin_unetr import BasicLayer, SwinTransformerBlock
from torch import nn

from ..config import Config
from ..models.swin_unetr import swinunetr_roi_problem
from ..models.window_attention import use_sdpa_window_attention
from ..train.loop import enable_checkpointing, make_adamw
from ..utils.device import resolve_device

# Options in the order --ablation adds them; "compile" always comes last (it is only in "ours").
OPTION_ORDER = ("precision", "sw_batch_size", "sdpa_attention", "channels_last", "grad_checkpoint", "compile")
# (throughput key, comparison, goal) on one H200 at the paper's size (issue #16)
GOALS = {"ssl": ("subvolumes_per_s", ">=", 45.0), "finetune": ("volumes_per_s", ">=", 50.0),
         "infer": ("seconds_per_volume", "<=", 0.5)}


@dataclass
class BenchBase(Config):
    feature_size: int = 48        # Swin UNETR embedding size (paper: 48)
    precision: str = "auto"       # ours: auto | bf16 | fp16 | fp32
    device: str = "auto"          # auto | cpu | cuda
    sdpa_attention: bool = False  # ours: window attention through scaled_dot_product_attention
                                  # (models/window_attention.py)
    channels_last: bool = False   # ours: model and inputs in channels_last_3d memory format
    compile: bool = False         # ours: torch.compile (see compile_scope); compiles in the first warmup step
    compile_scope: str = "layers"  # layers (each Swin stage) | blocks (each Swin block) | model
    compile_backend: str = "inductor"  # torch.compile backend ("eager": tracing only, a quick CPU check)
    baseline: bool = True         # also time MONAI's plain eager model ("monai_eager") for the ratio
    ablation: bool = False        # also time our eager options added one at a time
    steps: int = 10               # timed steps (volumes for infer)
    warmup: int = 3               # untimed steps first (compilation, cuDNN autotuning)
    seed: int = 0                 # random seed (initialisation, synthetic data)
    json: str = ""                # also write the results to this JSON file


def check_common(cfg: BenchBase) -> None:
    """Raise ValueError for options every benchmark refuses."""
    if cfg.roi_size <= 0 or cfg.roi_size % 32:  # type: ignore[attr-defined]
        raise ValueError(f"roi_size={cfg.roi_size} must be a positive multiple of 32")  # type: ignore[attr-defined]
    for name in ("batch_size", "sw_batch_size", "steps"):
        if getattr(cfg, name, 1) < 1:
            raise ValueError(f"{name}={getattr(cfg, name)} must be >= 1")
    if cfg.warmup < 0:
        raise ValueError(f"warmup={cfg.warmup} must be >= 0 (with compile >= 1, else compilation is timed)")
    if cfg.compile_scope not in ("layers", "blocks", "model"):
        raise ValueError(f"compile_scope={cfg.compile_scope!r}: expected layers, blocks or model")
    if cfg.json and (Path(cfg.json).is_dir() or Path(cfg.json).suffix != ".json"):
        raise ValueError(f"--json {cfg.json}: expected a .json file path")

def check_swinunetr_roi(cfg: BenchBase) -> None:
    """The cubic ROI of a SwinUNETR benchmark (fine-tuning, inference), after :func:`check_common`: see
    :func:`swinunetr_lib.models.swin_unetr.swinunetr_roi_problem`."""
    problem = swinunetr_roi_problem((cfg.roi_size,) * 3)  # type: ignore[attr-defined]
    if problem:
        raise ValueError(f"roi_size={cfg.roi_size}: {problem}")  # type: ignore[attr-defined]


def bench_device(cfg: BenchBase) -> torch.device:
    """The benchmark's device, with cuDNN autotuning on CUDA as ``fit`` does (the crop size is fixed)."""
    device = resolve_device(cfg.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    return device



def variants(ours: dict[str, Any], base: dict[str, Any], cfg: BenchBase) -> list[tuple[str, dict[str, Any]]]:
    """[(name, options)]: monai_eager, (ablation) each eager option of ours added in turn, ours last (its
    compilation is what may run out of time; the JSON then still holds the eager variants)."""
    out = [("monai_eager", base)] if cfg.baseline else []
    if cfg.ablation:
        cur = dict(base)
        for key in OPTION_ORDER[:-1]:
            if key in ours and cur[key] != ours[key]:
                cur = {**cur, key: ours[key]}
                if cur != ours and cur != base:
                    label = {"precision": str(ours[key]).split(".")[-1], "sw_batch_size": f"sw_batch_{ours[key]}",
                             "sdpa_attention": "sdpa"}.get(key, key)
                    out.append((f"+{label}", dict(cur)))
    return out + [("ours", ours)]


def plain_options(ours: dict[str, Any]) -> dict[str, Any]:
    """Options of MONAI's plain eager model: every bool option off, other values as given."""
    return {k: (False if isinstance(v, bool) else v) for k, v in ours.items()}


def _raise_recompile_limit(n: int = 64) -> None:
    """Every Swin stage (and, for inference, a smaller last window batch) is one compiled entry of the same code."""
    import torch._dynamo.config as dc  # noqa: PLC0415 — loads torch._dynamo (seconds); only when compiling
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dc, name):
            setattr(dc, name, max(n, getattr(dc, name)))


def compile_regions(model: nn.Module, scope: str, backend: str = "inductor") -> nn.Module:
    """torch.compile ``model`` (scope "model") or, in place, each MONAI ``BasicLayer`` ("layers") or
    ``SwinTransformerBlock`` ("blocks") inside it; returns what to call. Static shapes."""
    _raise_recompile_limit()
    if scope == "model":
        return torch.compile(model, backend=backend, dynamic=False)  # type: ignore[return-value]
    kind = {"layers": BasicLayer, "blocks": SwinTransformerBlock}[scope]
    regions = [m for m in model.modules() if isinstance(m, kind)]
    if not regions:
        raise ValueError(f"{type(model).__name__} has no MONAI {kind.__name__} to compile")
    for m in regions:
        m.compile(backend=backend, dynamic=False)
    return model


def prepare(model: nn.Module, opts: dict[str, Any], cfg: BenchBase, device: torch.device) -> nn.Module:
    """Apply a variant's options to a freshly built model; returns the callable (maybe compiled) network."""
    if opts.get("sdpa_attention"):
        use_sdpa_window_attention(model)
    if opts.get("grad_checkpoint"):
        enable_checkpointing(model)
    model.to(device)
    if opts.get("channels_last"):
        model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    return compile_regions(model, cfg.compile_scope, cfg.compile_backend) if opts.get("compile") else model


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x


def host_tensor(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` in pinned memory when copies go to a GPU (as a DataLoader with pin_memory gives them)."""
    return x.pin_memory() if device.type == "cuda" else x


class Phases:
    """Time spent in named phases of a step; CUDA events on a GPU (no synchronisation inside a step),
    ``perf_counter`` elsewhere. ``with phases("data"): ...``; ``totals()`` -> {name: seconds}."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.spans: dict[str, list[tuple[Any, Any]]] = {}

    def _now(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = self._now()
        try:
            yield
        finally:
            self.spans.setdefault(name, []).append((start, self._now()))

    def totals(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
            return {k: sum(a.elapsed_time(b) for a, b in v) / 1e3 for k, v in self.spans.items()}
        return {k: sum(b - a for a, b in v) for k, v in self.spans.items()}

    def reset(self) -> None:
        self.spans = {}


class TimedModule(nn.Module):
    """Calls ``net`` inside ``phases(name)`` (``net`` may be a compiled module or any callable) and counts
    the samples (first dimension of the first argument) it was given."""

    def __init__(self, net: Callable[..., Any], phases: Phases, name: str = "model") -> None:
        super().__init__()
        self.net, self.phases, self.name, self.samples = net, phases, name, 0

    def forward(self, *args: Any) -> Any:
        self.samples += int(args[0].shape[0])
        with self.phases(self.name):
            return self.net(*args)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    fn()
    sync(device)
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - t) / repeats


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB -> GiB (process RSS, monotonic)


def header(benchmark: str, cfg: Config, device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        name = f"{device} ({torch.cuda.get_device_name(device)})"
    else:
        name = f"cpu ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads"
    return {"benchmark": benchmark, "complete": False, "device": name, "torch": torch.__version__,
            "monai": monai.__version__, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "config": cfg.to_dict(), "peak_memory_kind": "max_memory_allocated" if device.type == "cuda"
            else "process max RSS (cumulative)", "runs": {}}


def run_variants(result: dict[str, Any], plan: list[tuple[str, dict[str, Any]]], device: torch.device,
                 measure: Callable[[dict[str, Any]], dict[str, Any]], emit: Callable[[dict[str, Any]], None],
                 time_key: str) -> None:
    """Measure each variant (fresh model each), record its peak memory, rewrite the JSON after each."""
    for name, opts in plan:
        reset_peak(device)
        run = {"options": {k: (str(v).split(".")[-1] if isinstance(v, torch.dtype) else v) for k, v in opts.items()}}
        run.update(measure(opts))
        run["peak_memory_gib"] = peak_memory_gib(device)
        result["runs"][name] = run
        base = result["runs"].get("monai_eager")
        if base is not None:
            run["speedup_vs_monai_eager"] = base[time_key] / run[time_key]
        emit(result)
    reset_peak(device)


def finish(result: dict[str, Any], time_key: str, throughput_key: str, per_step: int, at_paper_size: bool) -> None:
    """Top-level summary of ``ours``: time, throughput, ratio, split and the issue's goal."""
    ours = result["runs"]["ours"]
    result[time_key] = ours[time_key]
    if throughput_key != time_key:
        result[throughput_key] = per_step / ours[time_key]
    result["peak_memory_gib"] = ours["peak_memory_gib"]
    result["speedup_vs_monai_eager"] = ours.get("speedup_vs_monai_eager")
    result["split_s"] = ours["split_s"]
    result["split_share"] = {k: v / ours[time_key] for k, v in ours["split_s"].items()}
    key, op, target = GOALS[result["benchmark"]]
    met = result[key] >= target if op == ">=" else result[key] <= target
    result["goal"] = {"metric": key, "target": f"{op} {target}", "at_paper_size": at_paper_size,
                      "met": bool(met) if at_paper_size else None}


def train_timing(model: nn.Module, opts: dict[str, Any], device: torch.device, phases: Phases,
                 step_fn: Callable[[], torch.Tensor], steps: int, warmup: int) -> dict[str, Any]:
    """Time ``steps`` optimizer steps of ``model`` (after ``warmup``): ``step_fn()`` returns the loss (run
    under autocast; it records its own data / augmentation ``phases``); backward, clipping and AdamW follow.
    The rest of the step is "model". Returns step_s, warmup_s (compilation included), split_s, final_loss."""
    dtype = opts["precision"]
    opt = make_adamw(model.parameters(), 4e-4, 1e-5, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def one() -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = step_fn()
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        return loss.detach()

    t = time.perf_counter()
    for _ in range(warmup):
        one()
    sync(device)
    warmup_s = time.perf_counter() - t
    phases.reset()
    t = time.perf_counter()
    losses = [one() for _ in range(steps)]
    sync(device)
    step_s = (time.perf_counter() - t) / steps
    split = {k: v / steps for k, v in phases.totals().items()}
    split["model"] = max(0.0, step_s - sum(split.values()))
    return {"step_s": step_s, "warmup_s": warmup_s, "split_s": split, "final_loss": float(losses[-1])}


def format_table(r: dict[str, Any]) -> str:
    """The result of any benchmark as aligned text: setup, one row per variant, the split, the goal."""
    c = r["config"]
    size = {"ssl": f"{c['roi_size']}^3 / {c['feature_size']} / {c.get('batch_size')} sub-volumes (x 2 views)",
            "finetune": f"{c['roi_size']}^3 / {c['feature_size']} / {c.get('batch_size')} crops, "
                        f"{c.get('out_channels')} classes",
            "infer": f"volume {c.get('volume_size')} / ROI {c['roi_size']}^3 / {c['feature_size']} / "
                     f"overlap {c.get('overlap')}, {r.get('windows')} windows"}[r["benchmark"]]
    unit = "s/volume" if r["benchmark"] == "infer" else "ms/step"
    rows = [("benchmark", r["benchmark"]), ("device", r["device"]), ("torch / monai", f"{r['torch']} / {r['monai']}"),
            ("size (ROI / feature / batch)", size)]
    for name, run in r["runs"].items():
        o = run["options"]
        opts = " ".join([str(o["precision"])] + [k for k in OPTION_ORDER[2:] if o.get(k)]
                        + ([f"sw_batch {o['sw_batch_size']}"] if "sw_batch_size" in o else []))
        t = run.get("seconds_per_volume", run.get("step_s", 0.0))
        shown = f"{t:.3f} s/volume" if unit == "s/volume" else f"{t * 1e3:.1f} ms/step"
        extra = (f"Dice vs fp32 {run['dice_vs_fp32']:.4f}" if "dice_vs_fp32" in run
                 else f"loss {run.get('final_loss', float('nan')):.4f}")
        ratio = f" = {run['speedup_vs_monai_eager']:.2f}x" if "speedup_vs_monai_eager" in run else ""
        rows.append((f"{name} [{opts}]", f"{shown}{ratio}, peak {run['peak_memory_gib']:.2f} GiB, {extra}"))
    if r.get("complete"):
        key = r["goal"]["metric"]
        rows.append(("ours: split", ", ".join(f"{k} {v * 1e3:.1f} ms ({100 * r['split_share'][k]:.1f} %)"
                                              for k, v in r["split_s"].items())))
        for k, label in (("reference_over_ours", "augmentation: reference loop / batched"),
                         ("loader_augment_s", "loader augmentation (CPU, 1 process, per batch)"),
                         ("dice_vs_fp32", "ours: Dice vs fp32 (mean / min class / voxels)")):
            if k in r and k == "reference_over_ours":
                rows.append((label, f"{r['reference_augment_s'] * 1e3:.2f} / {r['augment_alone_s'] * 1e3:.2f} ms"
                                    f" = {r[k]:.2f}x"))
            elif k in r and k == "loader_augment_s":
                rows.append((label, f"{r[k] * 1e3:.1f} ms: {r['loader_workers_needed']} worker(s) keep up"))
            elif r.get(k) is not None:
                rows.append((label, f"{r[k]:.4f} / {r['dice_min_class']:.4f} / {r['voxel_agreement']:.4f}"))
        if "fit_s" in r:
            fit = (f"{c['fit_steps']} steps in {r['fit_s']:.1f} s, last loss {r['fit_loss']:.3f}"
                   if r.get("fit_loss") is not None else c.get("checkpoint") or "none (random weights)")
            rows.append(("weights fitted to the volume", f"{fit}; ours' Dice vs its bands {r['dice_vs_truth']:.3f}"))
        goal = r["goal"]
        dice = f", dice_vs_fp32 {goal['dice_target']}" if "dice_target" in goal else ""
        rows.append((f"goal: {key} {goal['target']}{dice}", f"{r[key]:.3f} -> " + (
            {True: "met", False: "NOT met"}[goal["met"]] if goal["at_paper_size"] else "not at the paper's size")))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
