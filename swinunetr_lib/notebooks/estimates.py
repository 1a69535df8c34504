"""How long a profile's notebooks take: measured seconds per notebook on a reference machine, scaled to this machine
by a short calibration (forward/backward passes of a tiny 3D conv net on one CPU thread, about 1 s).

``python -m swinunetr_lib.notebooks run --params ci/params/demo`` prints the estimate per notebook and in total
before it starts, then each notebook's time beside its estimate. ``python -m swinunetr_lib.notebooks calibrate``
prints this machine's calibration time: run it on a reference machine to store that machine's value below.
An estimate, not a promise: the notebooks' time depends on the load of the machine while they run, on the data
cache (notebook 01 builds the cohort once), and on a GPU (the calibration runs on the CPU).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

# The reference machines' calibration times (seconds of calibration_workload(), median of its repeats).
CALIBRATIONS: dict[str, dict[str, Any]] = {
    "epyc-2core": {
        "machine": "this project's 2-core CPU machine: AMD EPYC with AVX2 only (no AVX512 in /proc/cpuinfo; torch's "
                   "CPU capability AVX2), torch 2.13, fp32",
        "cpu_capability": "AVX2",
        "seconds": 0.031,
        "date": "2026-12-07",
        "commit": "21ba2f8",
        "note": "measured idle (nothing else running) by the estimate of `make demo DEMO=quick` on a clean clone; "
                "the earlier 0.071 s was measured with the 2 cores shared (load 8-9) and scaled every estimate "
                "down by x0.44",
    },
}

# Measured seconds per notebook, per profile, with the machine they came from (docs/measured.md).
# "calibration": the key of CALIBRATIONS for that machine, or the closest measured one where the machine's own
# calibration was not measured (then said in "note").
REFERENCE: dict[str, dict[str, Any]] = {
    "demo": {
        "seconds": {"00_quickstart": 4, "01_data_curation": 15, "02_ssl_pretraining": 1967,
                    "03_finetune_btcv": 1157, "04_finetune_msd": 905, "05_visualize_3d": 20,
                    "06_label_efficiency": 1123},  # 5,191 s = 86.5 min
        "machine": "a 2-core Intel machine, clean clone, `make demo` (issue #32)",
        "date": "2026-12 (issue #32)",
        "commit": "the tree of issue #32 (at or before 1f606cc)",
        "calibration": "epyc-2core",
        "note": "the Intel machine's own calibration was not measured: scaled by the EPYC's, which ran the same "
                "demo in 8,959 s with its cores shared (load 3-8; docs/measured.md, at 8b560fb)",
    },
    "quick": {
        "seconds": {"00_quickstart": 15, "01_data_curation": 32, "02_ssl_pretraining": 205,
                    "03_finetune_btcv": 271, "04_finetune_msd": 176, "05_visualize_3d": 44,
                    "06_label_efficiency": 246},  # 990 s = 16.5 min (1,189 s with creating .venv and the book)
        "machine": "this project's 2-core AMD EPYC (AVX2), idle, `make demo DEMO=quick` on a clean clone",
        "date": "2026-12-08",
        "commit": "b19831b",
        "calibration": "epyc-2core",
        "notice": "quick tier: every notebook with its own defaults (short runs of 10-20 steps). Its numbers and "
                  "figures show that everything runs; they are not the demo's results (`make demo` for those).",
        "note": "after the defaults were cut for this machine (02 10 steps, 03 and 04 20, 06's runs 12; they were "
                "20 / 50 / 40 / 40). At the old defaults the tier took 1,521 s here (21ba2f8) and 797 s on "
                "2026-12-01 (ebc67ae) on an EPYC with AVX512-BF16: the machine, not the code (one SSL step of "
                "notebook 02's model, 4 x 64^3, feature 12, fp32, idle on this machine: 14.9-16.2 s at ebc67ae, "
                "13.4-15.5 s at 2c9fd91)",
    },
    "smoke": {
        "seconds": {"00_quickstart": 3, "01_data_curation": 13, "02_ssl_pretraining": 31,
                    "03_finetune_btcv": 15, "04_finetune_msd": 18, "05_visualize_3d": 12,
                    "06_label_efficiency": 38},
        "machine": "this project's 2-core AMD EPYC, uncontended",
        "date": "2026-12",
        "commit": "ea60d79",
        "calibration": "epyc-2core",
    },
}


def calibration_workload(repeats: int = 7, seed: int = 0) -> float:
    """Seconds of one pass of a fixed small torch job on the CPU (forward, backward and an SGD step of a tiny 3D
    conv net on a 2 x 1 x 24^3 batch), the median of ``repeats`` after one warm-up, on one thread: ~0.1 s a pass,
    about 1 s in all. One thread, because two threads on two busy cores time OpenMP waiting for each other far more
    than the notebooks' larger operations feel it (measured here: 0.07 s on one thread and 0.22-3.7 s on two, with
    the cores shared). The median follows the load of the machine now, as the notebooks will feel it."""
    import torch  # noqa: PLC0415 - torch only when an estimate is asked for (the runner itself needs none)
    from torch import nn  # noqa: PLC0415

    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv3d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv3d(8, 1, 3, padding=1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    x = torch.randn(2, 1, 24, 24, 24, generator=gen)

    def one() -> float:
        tic = time.perf_counter()
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
        return time.perf_counter() - tic

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one()
        return statistics.median(one() for _ in range(repeats))
    finally:
        torch.set_num_threads(threads)


@dataclass
class Estimate:
    profile: str
    seconds: dict[str, float]    # notebook stem -> estimated seconds on this machine
    scale: float                 # this machine's calibration / the reference machine's
    here_s: float                # this machine's calibration time
    reference: dict[str, Any]    # the REFERENCE entry
    gpu: bool = False            # a CUDA GPU is present (the notebooks train there; the calibration ran on the CPU)

    def get(self, stem: str) -> float | None:
        return self.seconds.get(stem)


def estimate(profile: str, stems: list[str], here_s: float | None = None) -> Estimate | None:
    """The estimate for ``stems`` (notebook names) of ``profile`` on this machine, or None without a reference
    table for the profile. ``here_s``: this machine's calibration time (measured now when not given)."""
    ref = REFERENCE.get(profile)
    if ref is None:
        return None
    if here_s is None:
        here_s = calibration_workload()
    ref_s = CALIBRATIONS[ref["calibration"]]["seconds"]
    scale = min(10.0, max(0.1, here_s / ref_s))
    seconds = {s: ref["seconds"][s] * scale for s in stems if s in ref["seconds"]}
    return Estimate(profile, seconds, scale, here_s, ref, gpu=_has_gpu())


def cpu_capability() -> str:
    """torch's name for this CPU's vector units (``AVX2``, ``AVX512``, ...; "" when unknown): machines that look
    alike ("AMD EPYC", 2 cores) differ ~2x in the notebooks' time between AVX2 and AVX512-BF16."""
    try:
        import torch  # noqa: PLC0415 - see calibration_workload

        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - an older torch or none: say nothing
        return ""


def _has_gpu() -> bool:
    try:
        import torch  # noqa: PLC0415 - see calibration_workload

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - no torch, no CUDA: a CPU estimate
        return False


def format_duration(seconds: float) -> str:
    """``42 s``, ``12 min 05 s`` below 10 min, ``27 min``, ``1 h 05 min``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 600:
        return f"{s // 60} min {s % 60:02d} s"
    m = int(round(s / 60))
    return f"{m} min" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def plan_lines(est: Estimate, stems: list[str]) -> list[str]:
    """What the runner prints before it starts: the estimate per notebook and in total, and where it comes from."""
    ref, cal = est.reference, CALIBRATIONS[est.reference["calibration"]]
    here_isa = cpu_capability()
    isa = (f"; vector units: {here_isa} here, {cal['cpu_capability']} there" if here_isa and cal.get("cpu_capability")
           else "")
    lines = [f"Estimated time on this machine (an estimate, not a measurement) for the {est.profile} profile:",
             f"  measured on {ref['machine']}, {ref['date']}, {ref['commit']}; scaled by a CPU calibration of "
             f"{est.here_s:.3f} s here vs {cal['seconds']:.3f} s there (x{est.scale:.2f}{isa})"]
    if ref.get("note"):
        lines.append(f"  ({ref['note']})")
    if est.gpu:
        lines.append("  (a GPU is present: the notebooks train there, so expect less than this CPU-based estimate)")
    width = max([len(s) for s in stems] + [5])
    for stem in stems:
        sec = est.get(stem)
        lines.append(f"  {stem:<{width}}  {'~' + format_duration(sec) if sec is not None else 'no estimate'}")
    known = [est.get(s) for s in stems if est.get(s) is not None]
    total = sum(known)  # type: ignore[arg-type]
    lines.append(f"  {'total':<{width}}  ~{format_duration(total)}"
                 + (f" ({len(stems) - len(known)} notebook(s) without an estimate)" if len(known) < len(stems) else ""))
    return lines


def compare_line(stem: str, seconds: float, estimated: float | None) -> str:
    """``02_ssl_pretraining: 162 s (estimated 150 s)``."""
    est = f" (estimated {format_duration(estimated)})" if estimated is not None else ""
    return f"{stem}: {format_duration(seconds)}{est}"
