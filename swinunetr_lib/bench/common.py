"""What the benchmarks share: options and variants, model preparation (SDPA attention, gradient checkpointing,
channels-last, regional torch.compile), in-step phase timing, per-step times, peak memory, the run of the variants
(one line as each starts and ends, an error recorded and the next variant run, ablation rows skipped when the time
budget would not hold them) and the summary. The benchmarks themselves: :mod:`swinunetr_lib.bench` (CLI, ``ssl``),
:mod:`swinunetr_lib.bench.finetune`, :mod:`swinunetr_lib.bench.infer`; the printed table: :mod:`.table`.
"""
from __future__ import annotations

import contextlib
import gc
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import monai
import torch
from monai.networks.nets.swin_unetr import BasicLayer, SwinTransformerBlock
from torch import nn
from torch.nn.attention import SDPBackend

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
    budget_s: float = 0.0         # seconds for the whole benchmark: an ablation row that would not fit is skipped
                                  # (its estimate: monai_eager's seconds); 0 = no limit
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



def variants(ours: dict[str, Any], base: dict[str, Any], cfg: BenchBase,
             baselines: tuple[tuple[str, dict[str, Any]], ...] = ()) -> list[tuple[str, dict[str, Any]]]:
    """[(name, options)]: monai_eager (and further ``baselines``), ours (the headline) and then, with ablation, each
    eager option of ours added in turn ("+name" rows): the headline comes before the rows a time limit may cut."""
    out = [("monai_eager", base), *baselines] if cfg.baseline else []
    out.append(("ours", ours))
    if cfg.ablation:
        cur = dict(base)
        for key in OPTION_ORDER[:-1]:
            if key in ours and cur[key] != ours[key]:
                cur = {**cur, key: ours[key]}
                if cur != ours and cur != base:
                    label = {"precision": str(ours[key]).split(".")[-1], "sw_batch_size": f"sw_batch_{ours[key]}",
                             "sdpa_attention": "sdpa"}.get(key, key)
                    out.append((f"+{label}", dict(cur)))
    return out


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
    if opts.get("monai_flash_attention"):  # MONAI's own inference path: SDPA when gradients are off
        for m in model.modules():
            if hasattr(m, "use_flash_attention"):
                m.use_flash_attention = True
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


def sdpa_kernel(device: torch.device, dtype: torch.dtype, feature_size: int, training: bool) -> str:
    """The kernel ``scaled_dot_product_attention`` picks for the first Swin stage's shifted windows (3 heads of
    feature_size / 3 channels, 7^3 tokens, an additive mask as :mod:`~swinunetr_lib.models.window_attention` passes
    it) on ``device`` in ``dtype``, with or without gradients; "unknown" where PyTorch does not say."""
    try:
        n, heads = 343, 3
        q = torch.zeros(2, heads, n, max(1, feature_size // heads), device=device, dtype=dtype,
                        requires_grad=training)
        mask = torch.zeros(2, heads, n, n + (-n) % 16, device=device, dtype=dtype)[..., :n]
        return SDPBackend(torch._fused_sdp_choice(q, q, q, attn_mask=mask)).name
    except Exception as e:  # a private function: any change of it must not cost the benchmark
        return f"unknown ({type(e).__name__})"


def header(benchmark: str, cfg: Config, device: torch.device, dtype: torch.dtype | None = None,
           training: bool = True) -> dict[str, Any]:
    if device.type == "cuda":
        name = f"{device} ({torch.cuda.get_device_name(device)})"
    else:
        name = f"cpu ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads"
    dtype = dtype or torch.float32
    return {"benchmark": benchmark, "complete": False, "headline": False, "device": name, "torch": torch.__version__,
            "monai": monai.__version__, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "sdpa_kernel": sdpa_kernel(device, dtype, getattr(cfg, "feature_size", 48), training),
            "config": cfg.to_dict(), "peak_memory_kind": "max_memory_allocated" if device.type == "cuda"
            else "process max RSS (cumulative)", "runs": {}}


def say(line: str) -> None:
    """One progress line, at once (the GPU scripts log what a killed benchmark had reached)."""
    print(line, flush=True)


def _ended(name: str, run: dict[str, Any], time_key: str) -> str:
    t = run[time_key]
    shown = f"{t:.3f} s/volume" if time_key == "seconds_per_volume" else f"{t * 1e3:.1f} ms/step"
    first = run.get("first_step_s")
    compile_s = f", first step {first:.1f} s (compilation ~{max(0.0, first - t):.1f} s)" if first is not None else ""
    return f"variant {name}: done in {run['wall_s']:.1f} s: {shown}{compile_s}"


def run_variants(result: dict[str, Any], plan: list[tuple[str, dict[str, Any]]], device: torch.device,
                 measure: Callable[[dict[str, Any]], dict[str, Any]], emit: Callable[[dict[str, Any]], None],
                 time_key: str, summarize: Callable[[dict[str, Any]], None] = lambda r: None,
                 budget_s: float = 0.0) -> None:
    """Measure each variant (fresh model each): one line as it starts and as it ends (its time and compilation),
    its peak memory; an exception is recorded as the variant's ``error`` and the next variant runs; an ablation row
    ("+name") that would not fit in ``budget_s`` (0: no limit) is recorded as ``skipped``. After each variant
    ``summarize(result)`` (once ``ours`` has a time) and ``emit(result)`` (the CLI rewrites the JSON)."""
    start = time.perf_counter()
    for name, opts in plan:
        run: dict[str, Any] = {"options": {k: (str(v).split(".")[-1] if isinstance(v, torch.dtype) else v)
                                           for k, v in opts.items()}}
        base = result["runs"].get("monai_eager", {})
        left = budget_s - (time.perf_counter() - start)
        if budget_s and name.startswith("+") and left < base.get("wall_s", 0.0):
            run["skipped"] = f"time budget: {left:.0f} s left, monai_eager took {base.get('wall_s', 0):.0f} s"
            say(f"variant {name}: skipped ({run['skipped']})")
        else:
            say(f"variant {name}: start")
            reset_peak(device)
            t = time.perf_counter()
            try:
                run.update(measure(opts))
                run["peak_memory_gib"] = peak_memory_gib(device)
            except Exception as e:  # one variant's failure (out of memory, a compiler error) costs that row only
                run["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            run["wall_s"] = time.perf_counter() - t
            if name == "monai_eager" and time_key in run:
                run["speedup_vs_monai_eager"] = 1.0  # the baseline of every ratio
            elif time_key in base and time_key in run:
                run["speedup_vs_monai_eager"] = base[time_key] / run[time_key]
            say(_ended(name, run, time_key) if "error" not in run else
                f"variant {name}: FAILED after {run['wall_s']:.1f} s: {run['error']}")
        result["runs"][name] = run
        if time_key in result["runs"].get("ours", {}):
            summarize(result)
        emit(result)
    reset_peak(device)


def finish(result: dict[str, Any], time_key: str, throughput_key: str, per_step: int, at_paper_size: bool) -> None:
    """Top-level summary of ``ours`` (the headline, set as soon as ``ours`` has a time): time, throughput, ratio,
    split, its final loss against monai_eager's and the issue's goal."""
    ours = result["runs"]["ours"]
    result["headline"] = True
    result[time_key] = ours[time_key]
    if throughput_key != time_key:
        result[throughput_key] = per_step / ours[time_key]
    result["peak_memory_gib"] = ours["peak_memory_gib"]
    result["speedup_vs_monai_eager"] = ours.get("speedup_vs_monai_eager")
    result["split_s"] = ours["split_s"]
    result["split_share"] = {k: v / ours[time_key] for k, v in ours["split_s"].items()}
    base_loss = result["runs"].get("monai_eager", {}).get("final_loss")
    if base_loss is not None and "final_loss" in ours:
        result["ours_vs_monai_eager_loss"] = (ours["final_loss"] - base_loss) / abs(base_loss) if base_loss else 0.0
    key, op, target = GOALS[result["benchmark"]]
    met = result[key] >= target if op == ">=" else result[key] <= target
    result["goal"] = {"metric": key, "target": f"{op} {target}", "at_paper_size": at_paper_size,
                      "met": bool(met) if at_paper_size else None}


class StepClock:
    """Marks between steps without synchronising: CUDA events on a GPU, ``perf_counter`` elsewhere;
    ``seconds()`` -> the time of each step between consecutive marks."""

    def __init__(self, device: torch.device) -> None:
        self.phases = Phases(device)
        self.marks = [self.phases._now()]

    def mark(self) -> None:
        self.marks.append(self.phases._now())

    def seconds(self) -> list[float]:
        if self.phases.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:], strict=False)]
        return [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]


def step_stats(times: list[float]) -> dict[str, Any]:
    """``step_times_s`` (each timed step, rounded) and ``median_s``."""
    return {"step_times_s": [round(t, 5) for t in times], "median_s": statistics.median(times)}


def train_timing(model: nn.Module, opts: dict[str, Any], device: torch.device, phases: Phases,
                 step_fn: Callable[[], torch.Tensor], steps: int, warmup: int) -> dict[str, Any]:
    """Time ``steps`` optimizer steps of ``model`` (after ``warmup``): ``step_fn()`` returns the loss (run
    under autocast; it records its own data / augmentation ``phases``); backward, clipping and AdamW follow.
    The rest of the step is "model". Returns step_s (mean), the per-step times and their median, warmup_s
    (compilation included), first_step_s (the first step: compilation and one step), split_s, final_loss."""
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
    first_step_s = None
    for i in range(warmup):
        one()
        if i == 0:  # the compilation happens here: its time, with one sync (warm-up is not timed)
            sync(device)
            first_step_s = time.perf_counter() - t
    sync(device)
    warmup_s = time.perf_counter() - t
    phases.reset()
    clock = StepClock(device)
    t = time.perf_counter()
    losses = []
    for _ in range(steps):
        losses.append(one())
        clock.mark()
    sync(device)
    step_s = (time.perf_counter() - t) / steps
    times = clock.seconds()
    split = {k: v / steps for k, v in phases.totals().items()}
    split["model"] = max(0.0, step_s - sum(split.values()))
    loss = float(losses[-1])
    return {"step_s": step_s, "warmup_s": warmup_s, "split_s": split, "final_loss": loss,
            "first_step_s": times[0] if first_step_s is None else first_step_s, **step_stats(times)}
