"""Any notebook or experiment module over a grid of parameters, in parallel or on a SLURM cluster, into one table.

Usage (from the repository root)::

    python -m swinunetr_lib.notebooks sweep notebooks/03_finetune_btcv.py --grid grid.yml --out runs/sweep --workers 2
    python -m swinunetr_lib.notebooks sweep swinunetr_lib.experiments.dense_probe --grid e1.yml --out runs/e1
    python -m swinunetr_lib.notebooks sweep notebooks/03_finetune_btcv.py --grid grid.yml --out runs/sweep \\
        --launcher slurm --partition gpu --time 60 --gpus 1 --mem-gb 32
    python -m swinunetr_lib.notebooks sweep summarize runs/sweep --by init labeled_fraction --metric mean_dice

The grid file (YAML)::

    base: {max_steps: 2, feature_size: 12}      # every run (optional; or base_file: a parameter file)
    grid: {seed: [0, 1], labeled_fraction: [0.5, 1.0]}   # the product of these values
    cases: [{init: ssl, seed: 5}]               # explicit extra points (optional)
    name: "{init}_frac{labeled_fraction:g}_seed{seed}"   # run folder name (optional; default key=value,...)

Every point is checked against the notebook's typed parameters (:func:`runner.check_params`), or an experiment
module's ``SWEEP_CONFIG`` fields (:mod:`.sweep_target`), before anything runs.
Each run gets ``<out>/runs/<name>/`` with its parameters (``params.yml``), its executed notebook (a module: the files
it writes), its ``results.json`` (what the notebook recorded with :func:`swinunetr_lib.utils.results.record`; what a
module's ``run_for_sweep`` returned) and ``run.json`` (status, seconds, the failing cell and error, and a
fingerprint: a hash of the parameters, the notebook's or module's source file and every input file a parameter
names). A run whose ``run.json`` says ok with the same fingerprint is skipped; one whose fingerprint changed is
rerun (and says why); a failed run is rerun. ``<out>/results.csv`` (one row per run: parameters, results, seconds,
status) is rewritten, atomically, as each run finishes.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..paths import DATA_ENV, resolve_path
from ..utils.cli import run_cli
from ..utils.files import atomic_write_text
from . import sweep_table
from .progress import ProgressWatcher
from .runner import NotebookError, _AliasRefused, _NoAliasLoader
from .sweep_point import read_status
from .sweep_target import Target, resolve_target

GRID_KEYS = {"base", "base_file", "grid", "cases", "name", "runner"}
MAX_NAME_CHARS = 100


@dataclass
class Point:
    """One run of a sweep: its folder name, the parameters injected into the notebook and their fingerprint."""

    name: str
    params: dict[str, Any]
    varied: dict[str, Any]       # the grid's or case's own values (what tells this run from the others)
    fingerprint: str = ""


@dataclass
class Sweep:
    grid_file: Path
    target: Target               # the notebook or experiment module run at each point
    points: list[Point]
    runner: str = ""             # "" = papermill; "module:function" = that function called with all parameters
    varied_keys: list[str] = field(default_factory=list)

    @property
    def notebook(self) -> Path:
        """The notebook's (or module's) source file."""
        return self.target.source


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(), Loader=_NoAliasLoader)
    except _AliasRefused as err:
        raise NotebookError(f"{path}: line {err.line}: YAML anchors and aliases are not allowed; write each "
                            "value out") from None
    except yaml.YAMLError as err:
        raise NotebookError(f"{path}: not valid YAML ({' '.join(str(err).split())[:200]})") from err
    except OSError as err:
        raise NotebookError(f"{path}: cannot read the grid ({err.strerror or err})") from err


def _value_text(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else json.dumps(value) if not isinstance(value, str) else value
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "_"


def point_name(varied: Mapping[str, Any], template: str = "") -> str:
    """The run folder's name: ``template.format(**params)`` or ``key=value,...`` of the varied parameters; made
    safe for a file name, and cut (with a hash) past :data:`MAX_NAME_CHARS` characters."""
    name = template.format(**varied) if template else ",".join(f"{k}={_value_text(v)}" for k, v in varied.items())
    name = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", name) or "run"
    if len(name) > MAX_NAME_CHARS:
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        name = f"{name[:MAX_NAME_CHARS - 11]}-{digest}"
    return name


def load_grid(grid_file: Path, target: Path | Target) -> Sweep:
    """Read and check ``grid_file`` for ``target`` (a notebook's source or a :class:`Target`): every point's
    parameters exist with the target's types. Errors are one line naming the grid file; nothing runs."""
    where = str(grid_file)
    target = target if isinstance(target, Target) else Target(Path(target))
    spec = _load_yaml(grid_file)
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise NotebookError(f"{where}: expected a mapping with grid: and/or cases:")
    unknown = sorted(set(map(str, spec)) - GRID_KEYS)
    if unknown:
        raise NotebookError(f"{where}: unknown key(s) {unknown}; a grid file has {sorted(GRID_KEYS)}")
    base = spec.get("base") or {}
    if spec.get("base_file"):
        base_path = grid_file.parent / spec["base_file"]
        base_path = base_path if base_path.is_file() else resolve_path(spec["base_file"])
        base = {**(_load_yaml(base_path) or {}), **base}
    grid, cases = spec.get("grid") or {}, spec.get("cases") or []
    if not isinstance(base, dict) or not isinstance(grid, dict) or not isinstance(cases, list):
        raise NotebookError(f"{where}: base and grid must be mappings, cases a list of mappings")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise NotebookError(f"{where}: the grid is empty: grid parameter {key!r} needs a non-empty list of "
                                f"values, got {values!r}")
    if not grid and not cases:
        raise NotebookError(f"{where}: the grid is empty: no grid: values and no cases:, nothing to run")
    if any(not isinstance(c, dict) or not c for c in cases):
        raise NotebookError(f"{where}: each case must be a non-empty mapping of parameters")
    target.check(base, where)  # one check per distinct value: the message names the key
    for key, values in grid.items():
        for value in values:
            target.check({key: value}, where)
    for case in cases:
        target.check(case, where)
    template = str(spec.get("name") or "")
    raw = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())] if grid else []
    points, seen = [], {}
    for varied in raw + [dict(c) for c in cases]:
        params = target.check({**base, **varied}, where)
        try:
            name = point_name({**params, **varied} if template else varied, template)
        except (KeyError, IndexError, ValueError) as err:
            raise NotebookError(f"{where}: name template {template!r} cannot be filled ({err})") from None
        if name in seen:
            if seen[name] != params:
                raise NotebookError(f"{where}: two different points get the run name {name!r}; change name:")
            continue
        seen[name] = params
        points.append(Point(name, params, varied))
    runner = str(spec.get("runner") or "")
    if runner and not re.fullmatch(r"[\w.]+:\w+", runner):
        raise NotebookError(f"{where}: runner {runner!r} must be 'package.module:function'")
    if runner and target.module:
        raise NotebookError(f"{where}: runner: is for notebooks; {target.module} runs its own run_for_sweep")
    for p in points:
        target.check_point(p.params, where, p.name)
    sweep = Sweep(grid_file, target, points, runner, list(dict.fromkeys([*grid, *(k for c in cases for k in c)])))
    for p in sweep.points:
        p.fingerprint = fingerprint(p.params, target.source, runner or target.module)
    return sweep


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _named_files(value: Any) -> list[Path]:
    """The existing files a parameter value names (strings, also inside lists and mappings)."""
    if isinstance(value, str) and value and len(value) < 4096:
        try:
            path = resolve_path(value)
            return [path] if path.is_file() else []
        except (OSError, ValueError):
            return []
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in _named_files(v)]
    if isinstance(value, dict):
        return [p for v in value.values() for p in _named_files(v)]
    return []


def fingerprint(params: Mapping[str, Any], notebook: Path, runner: str = "") -> str:
    """A hash of the parameters, the notebook's source (the reviewed ``.py``; a module's source file) and the
    content of every input file a parameter names (a folder is not read: name its manifest)."""
    inputs = {str(p): _file_digest(p) for v in params.values() for p in _named_files(v)}
    blob = json.dumps({"params": params, "notebook": _file_digest(notebook), "runner": runner, "inputs": inputs},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan(sweep: Sweep, out: Path, rerun: bool = False) -> tuple[list[Point], list[str]]:
    """The points still to run, and one line per point that is rerun because its fingerprint changed."""
    todo, changed = [], []
    for p in sweep.points:
        status = read_status(out / "runs" / p.name)
        if status.get("status") == "ok" and status.get("fingerprint") == p.fingerprint and not rerun:
            continue
        if status.get("fingerprint") and status["fingerprint"] != p.fingerprint:
            what = "module" if sweep.target.module else "notebook"
            changed.append(f"{p.name}: parameters, {what} or an input file changed since it ran: rerun")
        todo.append(p)
    return todo, changed


def prepare_point(sweep: Sweep, point: Point, out: Path, threads: int) -> Path:
    """Empty the run's folder and write what the run needs: ``params.yml`` and ``point.json``."""
    folder = out / "runs" / point.name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    atomic_write_text(yaml.safe_dump(point.params, sort_keys=False), folder / "params.yml")
    spec = {"name": point.name, "notebook": str(sweep.target.source), "module": sweep.target.module,
            "runner": sweep.runner, "params": point.params,
            "fingerprint": point.fingerprint, "threads": threads,
            "data_dir": os.environ.get(DATA_ENV) or str(out / "data")}
    atomic_write_text(json.dumps(spec, indent=2), folder / "point.json")
    return folder


def default_workers(threads: int, cores: int | None = None) -> int:
    """As many runs side by side as the cores allow at ``threads`` threads each (at least one)."""
    return max(1, (cores or os.cpu_count() or 1) // max(1, threads))


def run_local(folders: list[Path], workers: int, on_done: Callable[[Path, dict[str, Any]], None]) -> None:
    """Each run in its own process (``python -m swinunetr_lib.notebooks.sweep_point FOLDER``), ``workers`` at a time;
    ``on_done(folder, run.json)`` after each."""
    def one(folder: Path) -> dict[str, Any]:
        log = folder / "run.log"
        with log.open("w") as f:
            proc = subprocess.run([sys.executable, "-m", "swinunetr_lib.notebooks.sweep_point", str(folder)],
                                  stdout=f, stderr=subprocess.STDOUT)
        status = read_status(folder)
        if not status:  # the worker itself died: say so in the table
            tail = log.read_text()[-500:].strip().splitlines()
            status = {"name": folder.name, "status": "failed", "cell": None, "seconds": None,
                      "error": f"worker exited {proc.returncode}: {tail[-1] if tail else 'no output'}"}
            atomic_write_text(json.dumps(status, indent=2), folder / "run.json")
        return status

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(one, f): f for f in folders}
        for fut in as_completed(futures):
            on_done(futures[fut], fut.result())


def run_sweep(sweep: Sweep, out: Path, *, workers: int | None = None, threads: int | None = None,
              launcher: str = "local", slurm: Mapping[str, Any] | None = None, rerun: bool = False,
              say: Callable[[str], None] = print, progress: bool = True) -> pd.DataFrame:
    """Run the points not finished yet and return the results table (also ``out/results.csv``).

    ``progress``: while the runs go, a line (:class:`~swinunetr_lib.notebooks.progress.ProgressWatcher`) with the runs
    finished, the place of the run training now (``run k of n``) and its step, loss, seconds per step and time left:
    rewritten in place on a terminal, one line every ~30 s otherwise."""
    cores = os.cpu_count() or 1
    env_threads = os.environ.get("OMP_NUM_THREADS", "")  # a caller's limit (several sweeps side by side) is kept
    threads = threads or (int(env_threads) if env_threads.isdigit() and int(env_threads) > 0 else 0) or \
        (max(1, cores // workers) if workers else min(cores, 2))
    workers = workers or default_workers(threads, cores)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps({"notebook": sweep.target.label, "grid": str(sweep.grid_file),
                                  "varied": sweep.varied_keys, "runs": [p.name for p in sweep.points]}, indent=2),
                      out / "sweep.json")
    todo, changed = plan(sweep, out, rerun)
    for line in changed:
        say(line)
    say(f"{len(sweep.points)} runs: {len(sweep.points) - len(todo)} finished (skipped), {len(todo)} to run "
        f"({launcher}, {workers} at a time, {threads} thread(s) each)")
    folders = [prepare_point(sweep, p, out, threads) for p in todo]
    done = 0
    watcher = ProgressWatcher([out / "runs"], label=_progress_label(out, 0, len(folders))) \
        if progress and folders else None

    def show(text: str) -> None:  # a line of its own, never mixed into the in-place progress line
        if watcher is not None:
            watcher.say(text, emit=say)
        else:
            say(text)

    def on_done(folder: Path, status: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        extra = "" if status.get("status") == "ok" else f": {status.get('error', '')[:300]}"
        show(f"[{done}/{len(folders)}] {folder.name} {status.get('status')} in {status.get('seconds')} s{extra}")
        if watcher is not None:
            watcher.set_label(_progress_label(out, done, len(folders)), restart_clock=False)
        sweep_table.write_results_csv(sweep, out)

    with watcher if watcher is not None else contextlib.nullcontext():
        if launcher == "local":
            run_local(folders, workers, on_done)
        elif folders:
            from .sweep_slurm import submit  # noqa: PLC0415 — imports submitit, an optional dependency

            submit(folders, out, launcher, threads=threads, parallelism=workers, options=dict(slurm or {}),
                   on_done=on_done, say=show)
    return sweep_table.write_results_csv(sweep, out)


def _progress_label(out: Path, done: int, todo: int) -> str:
    return f"sweep {out.name}: {done} of {todo} runs done"


def main(argv: list[str] | None = None) -> int:
    """``python -m swinunetr_lib.notebooks sweep ...`` (see the module's docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["summarize"]:
        return sweep_table.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m swinunetr_lib.notebooks sweep", description=__doc__.split("\n")[0],
                                     epilog="python -m swinunetr_lib.notebooks sweep summarize --help: the grouped "
                                            "summary and figure of a sweep's folder")
    parser.add_argument("notebook", help="notebooks/NN_topic.py, or an experiment module that declares SWEEP_CONFIG "
                                         "and run_for_sweep (swinunetr_lib.experiments.dense_probe, .label_scarcity)")
    parser.add_argument("--grid", type=Path, required=True, help="grid YAML (grid:, cases:, base:, name:)")
    parser.add_argument("--out", type=Path, required=True, help="the sweep's folder (runs/, results.csv)")
    parser.add_argument("--workers", type=int, default=None,
                        help="runs side by side (default: cores // threads); slurm: the array's parallelism")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch/OpenMP threads per run (default: $OMP_NUM_THREADS if set, else cores // workers, "
                             "else min(cores, 2))")
    parser.add_argument("--launcher", choices=["local", "slurm", "submitit-local"], default="local",
                        help="local processes; slurm: one job array through submitit; submitit-local: the slurm "
                             "path run on this machine (submitit's local executor, for testing)")
    parser.add_argument("--partition", default=None, help="slurm partition")
    parser.add_argument("--time", type=int, default=60, help="slurm time limit per run, minutes")
    parser.add_argument("--gpus", type=int, default=0, help="slurm GPUs per run")
    parser.add_argument("--mem-gb", type=int, default=None, help="slurm memory per run, GB")
    parser.add_argument("--print-sbatch", action="store_true", help="print the sbatch script of the runs to do; "
                                                                     "submit nothing")
    parser.add_argument("--rerun", action="store_true", help="rerun finished runs too")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress line (run k of n, step, loss, time left) while the runs go")
    args = parser.parse_args(argv)

    def body() -> int:
        target = resolve_target(args.notebook)
        if not args.grid.is_file():
            raise NotebookError(f"{args.grid}: no such grid file")
        for flag in ("workers", "threads"):
            if getattr(args, flag) is not None and getattr(args, flag) < 1:
                raise NotebookError(f"--{flag} {getattr(args, flag)}: must be at least 1")
        sweep = load_grid(args.grid, target)
        slurm = {"partition": args.partition, "time": args.time, "gpus": args.gpus, "mem_gb": args.mem_gb}
        out = args.out.resolve()
        if args.print_sbatch:
            from .sweep_slurm import sbatch_script  # noqa: PLC0415 — imports submitit, an optional dependency

            todo, _ = plan(sweep, out, args.rerun)
            print(sbatch_script(len(todo), out, threads=args.threads or 1, parallelism=args.workers, options=slurm))
            return 0
        table = run_sweep(sweep, out, workers=args.workers, threads=args.threads, launcher=args.launcher,
                          slurm=slurm, rerun=args.rerun, progress=not args.no_progress)
        failed = int((table.get("status") == "failed").sum()) if len(table) else 0
        print(f"results: {out / 'results.csv'} ({len(table)} runs, {failed} failed)")
        return 1 if failed or len(table) < len(sweep.points) else 0

    return run_cli("python -m swinunetr_lib.notebooks sweep", body)


if __name__ == "__main__":
    sys.exit(main())
