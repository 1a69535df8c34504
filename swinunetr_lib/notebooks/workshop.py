"""A room of laptops: set up an attendee's machine and tell, in under a minute, whether it works.

    python -m swinunetr_lib.notebooks.workshop setup   # fetch and verify the example scans, build the demo cohort
    python -m swinunetr_lib.notebooks.workshop check   # one line per check: OK, or FAIL and its fix; exit 1 on any FAIL

``make lab`` runs ``setup`` and opens JupyterLab; ``make check`` runs ``check``. The example scans come from
``$SWINUNETR_EXAMPLES_MIRROR`` when set (a USB stick or a LAN folder holding the TotalSegmentator example
files), else the cache, else a download; every file is verified by SHA-256 (:mod:`swinunetr_lib.data.example_data`).
``check`` downloads nothing and writes nothing: it reads what ``setup`` left and runs one tiny forward and
backward pass of Swin UNETR (feature size 12, a 64×32×32 input).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..paths import REPO_ROOT, data_dir, demo_cohort_dir, runs_dir
from ..utils.cli import run_cli

PROG = "python -m swinunetr_lib.notebooks.workshop"
MIN_FREE_GB = 2.0  # the demo cohort, a few runs and the precomputed archive fit in this
PACKAGES = ("monai", "nibabel", "pydicom", "numpy", "pandas", "matplotlib", "yaml", "papermill", "jupytext",
            "ipykernel", "ipywidgets", "tensorboard")


@dataclass
class Check:
    """One line of ``make check``."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'OK  ' if self.ok else 'FAIL'}  {self.name:<14} {self.detail}"
        return text if self.ok or not self.fix else f"{text}\n      -> fix: {self.fix}"


# ----------------------------------------------------------------------------------------------- checks
def check_python() -> Check:
    ok = sys.version_info >= (3, 10)
    return Check("python", ok, f"{sys.version.split()[0]} at {sys.executable}",
                 "" if ok else "install Python >= 3.10, then: rm -rf .venv && make lab PYTHON=python3.11")


def check_packages() -> Check:
    versions, missing = [], []
    for name in PACKAGES + ("swinunetr_lib.finetune", "swinunetr_lib.notebooks"):
        try:
            mod = importlib.import_module(name)
            if name in ("monai", "jupytext", "papermill"):
                versions.append(f"{name} {getattr(mod, '__version__', '?')}")
        except Exception as err:  # a broken install can fail in many ways
            missing.append(f"{name} ({type(err).__name__}: {str(err).splitlines()[0][:80] if str(err) else ''})")
    if missing:
        return Check("packages", False, "cannot import " + ", ".join(missing),
                     "reinstall: rm .venv/.installed && make lab")
    return Check("packages", True, ", ".join(versions) + f", and {len(PACKAGES) - 3} more")


def _gpu_visible() -> bool:
    if not shutil.which("nvidia-smi"):
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def check_torch() -> Check:
    try:
        import torch  # noqa: PLC0415 — a broken torch is this check's FAIL, not a crash
    except Exception as err:
        return Check("torch", False, f"cannot import torch ({err})", "rm -rf .venv && make lab")
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # what device="auto" picks
    detail = f"{torch.__version__}, device {dev}"
    if dev.type == "cuda":
        detail += f" ({torch.cuda.get_device_name(dev)})"
    else:
        detail += f" ({torch.get_num_threads()} threads)"
        if _gpu_visible():
            detail += "; nvidia-smi sees a GPU this torch cannot use (CPU build): notebooks run on the CPU"
    return Check("torch", True, detail)


def check_examples() -> Check:
    """Every pinned example file present in the mirror or the cache with its SHA-256; downloads nothing."""
    from ..data.example_data import (  # noqa: PLC0415 — loads torch: a broken install fails this check alone
        MIRROR_ENV,
        cache_dir,
        example_checksums,
        resolve_mirror_dir,
        sha256_of,
    )

    sums = example_checksums()
    mirror = resolve_mirror_dir(None)
    bad, missing, places = [], [], set()
    for name, digest in sums.items():
        found = [d / name for d in (mirror, cache_dir()) if d is not None and (d / name).is_file()]
        if not found:
            missing.append(name)
        elif not any(sha256_of(p) == digest for p in found):
            bad.append(str(found[0]))
        else:
            places.add(str(found[0].parent if "/" not in name else found[0].parent.parent))
    fix = (f"copy the totalsegmentator_examples folder from the USB stick or LAN share and run "
           f"make lab {MIRROR_ENV}=/path/to/totalsegmentator_examples (or run make lab online)")
    if bad:
        return Check("example data", False, f"{len(bad)} file(s) with a wrong SHA-256, e.g. {bad[0]}",
                     "delete them and " + fix)
    if missing:
        return Check("example data", False, f"{len(missing)} of {len(sums)} files missing, e.g. {missing[0]}", fix)
    return Check("example data", True, f"{len(sums)} files, SHA-256 verified, in {', '.join(sorted(places))}")


def check_cohort() -> Check:
    root = demo_cohort_dir()
    fix = "make lab builds it (or: .venv/bin/python -m swinunetr_lib.data demo-cohort)"
    stamp = root / "cohort.json"
    if not stamp.is_file():
        return Check("demo cohort", False, f"not built in {root}", fix)
    try:
        saved = json.loads(stamp.read_text())
        files = [root / f for f in saved.get("files", [])]
    except (OSError, ValueError, TypeError) as err:
        return Check("demo cohort", False, f"{stamp}: unreadable ({err})", "delete it and " + fix)
    manifests = [root / n for n in ("pretrain.json", "finetune.json")]
    lost = [p for p in files + manifests if not p.is_file() or p.stat().st_size == 0]
    if lost:
        return Check("demo cohort", False, f"{len(lost)} file(s) missing in {root}, e.g. {lost[0].name}", fix)
    n_train = len(json.loads((root / "finetune.json").read_text()).get("training", []))
    return Check("demo cohort", True, f"{len(files)} files in {root}, {n_train} labeled training cases")


def check_model(roi_size: tuple[int, int, int] = (64, 32, 32), feature_size: int = 12) -> Check:
    """One forward and backward pass of Swin UNETR, input (1, 1, *roi_size) -> logits (1, 14, *roi_size).
    Each side divisible by 32; 32^3 would leave one voxel at the bottleneck, where instance norm fails."""
    import torch  # noqa: PLC0415 — a broken torch is this check's FAIL, not a crash

    from ..models.swin_unetr import build_swinunetr  # noqa: PLC0415 — torch, MONAI: this check's FAIL

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = build_swinunetr(1, 14, feature_size=feature_size).to(dev)
    x = torch.randn(1, 1, *roi_size, device=dev)
    t0 = time.perf_counter()
    out = model(x)
    out.float().mean().backward()
    seconds = time.perf_counter() - t0
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    finite = all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    ok = tuple(out.shape) == (1, 14, *roi_size) and finite
    return Check("model", ok, f"Swin UNETR feature {feature_size}, {'x'.join(map(str, roi_size))} "
                              f"forward+backward in {seconds:.1f} s on {dev}"
                              + ("" if ok else f"; output {tuple(out.shape)}, finite grads {finite}"),
                 "" if ok else "reinstall torch: rm -rf .venv && make lab")


def check_jupyter() -> Check:
    try:
        import jupyterlab  # noqa: PLC0415 — a missing JupyterLab is this check's FAIL
        from jupyter_client.kernelspec import KernelSpecManager  # noqa: PLC0415 — likewise
    except Exception as err:
        return Check("jupyterlab", False, f"not installed ({err})", "rm .venv/.installed && make lab")
    kernels = KernelSpecManager().find_kernel_specs()
    lab_bin = Path(sys.executable).with_name("jupyter-lab")
    if "python3" not in kernels or not lab_bin.exists():
        return Check("jupyterlab", False, f"jupyterlab {jupyterlab.__version__} without "
                     + ("a python3 kernel" if "python3" not in kernels else str(lab_bin)),
                     "rm .venv/.installed && make lab")
    return Check("jupyterlab", True, f"jupyterlab {jupyterlab.__version__}, python3 kernel, {lab_bin}")


def check_notebooks() -> Check:
    """Each ``notebooks/NN_topic.py`` has a readable ``.ipynb`` beside it (an attendee's edits are fine)."""
    import nbformat  # noqa: PLC0415 — a broken Jupyter install fails this check alone

    from .runner import list_notebooks  # noqa: PLC0415 — reads config (pyyaml): this check's FAIL

    books = list_notebooks()
    problems = []
    for py in books:
        try:
            nbformat.read(py.with_suffix(".ipynb"), as_version=4)
        except Exception as err:  # missing, truncated, not JSON...
            problems.append(f"{py.with_suffix('.ipynb')}: cannot be opened ({type(err).__name__})")
    if not books or problems:
        return Check("notebooks", False, problems[0] if problems else "no notebooks/NN_topic.py found",
                     "restore it: git checkout -- notebooks/ (keeps no local edits of the broken file), "
                     "or .venv/bin/jupytext --to ipynb notebooks/<name>.py")
    return Check("notebooks", True, f"{len(books)} notebooks with their .ipynb in {books[0].parent}")


def check_disk() -> Check:
    from ..utils.files import check_folder_creatable  # noqa: PLC0415 — loads torch: this check's FAIL

    folder = runs_dir()
    try:
        check_folder_creatable(folder, f"runs folder {folder}")
    except ValueError as err:
        return Check("disk", False, str(err), "set SWINUNETR_RUNS_DIR to a writable folder")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free / 1e9
    ok = free >= MIN_FREE_GB
    return Check("disk", ok, f"{free:.1f} GB free for {folder}",
                 "" if ok else f"free at least {MIN_FREE_GB:g} GB, or set SWINUNETR_RUNS_DIR to a roomier disk")


def check_precomputed() -> Check:
    from .precomputed import finished_runs, precomputed_dir  # noqa: PLC0415 — loads torch: this check's FAIL

    runs = finished_runs()
    if not runs:
        return Check("precomputed", True, "none unpacked (optional: make unpack ARCHIVE=<the instructor's archive>)")
    return Check("precomputed", True, f"{len(runs)} finished runs in {precomputed_dir()}")


CHECKS: tuple[Callable[[], Check], ...] = (check_python, check_packages, check_torch, check_examples, check_cohort,
                                           check_model, check_jupyter, check_notebooks, check_disk, check_precomputed)


def run_checks(checks: Sequence[Callable[[], Check]] = CHECKS, echo: bool = True) -> list[Check]:
    """Run every check (an exception is that check's FAIL); print each line as it is known."""
    results = []
    for fn in checks:
        name = fn.__name__.removeprefix("check_").replace("_", " ")
        try:
            result = fn()
        except Exception as err:  # one broken check must not hide the others
            result = Check(name, False, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                           "rm .venv/.installed && make lab; if it persists, show this line to the instructor")
        results.append(result)
        if echo:
            print(result.line(), flush=True)
    return results


# ------------------------------------------------------------------------------------------------ setup
def setup() -> None:
    """Fetch and verify every example file, build the demo cohort, report the precomputed runs."""
    from ..data.cohort import build_demo_cohort  # noqa: PLC0415 — torch: only setup loads it
    from ..data.example_data import example_checksums, fetch_example  # noqa: PLC0415 — torch: only setup loads it
    from .precomputed import finished_runs, precomputed_dir  # noqa: PLC0415 — torch: only setup loads it

    names = sorted({n.split("/")[0] for n in example_checksums()})
    t0 = time.perf_counter()
    places = {fetch_example(n).parent for n in names}  # a DICOM series name fetches the whole folder
    print(f"example data: {len(example_checksums())} files verified by SHA-256 "
          f"({', '.join(map(str, sorted(places)))}) in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    cohort = build_demo_cohort()
    print(f"demo cohort: {cohort.root} ({time.perf_counter() - t0:.1f} s)")
    runs = finished_runs()
    print(f"precomputed runs: {len(runs)} in {precomputed_dir()}" if runs else
          "precomputed runs: none (optional: make unpack ARCHIVE=<the instructor's archive>)")
    print(f"data in {data_dir()}, runs in {runs_dir()}; notebooks in {REPO_ROOT / 'notebooks'}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="fetch and verify the example scans, build the demo cohort")
    sub.add_parser("check", help="one line per check, OK or FAIL with its fix; exit 1 on any FAIL")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    if args.command == "setup":
        return run_cli(f"{PROG} setup", setup)
    t0 = time.perf_counter()
    results = run_checks()
    failed = [r.name for r in results if not r.ok]
    print(f"{len(results) - len(failed)} of {len(results)} checks OK in {time.perf_counter() - t0:.0f} s"
          + (f"; FAILED: {', '.join(failed)}" if failed else ": this machine is ready for the workshop"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
