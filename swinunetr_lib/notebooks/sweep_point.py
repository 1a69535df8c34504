"""One run of a sweep, in the process that executes it: a local worker (``python -m
swinunetr_lib.notebooks.sweep_point FOLDER``) or a SLURM array task (submitit calls :func:`run_point`).

The target is a notebook (papermill, or a ``runner:`` engine) or an experiment module (its ``run_for_sweep``,
:mod:`.sweep_target`). The folder was prepared by :func:`swinunetr_lib.notebooks.sweep.prepare_point`
(``point.json``, ``params.yml``).
The run's environment: ``$OMP_NUM_THREADS`` (and MKL's, OpenBLAS's) = the sweep's threads per run, so N runs side by
side do not oversubscribe the cores (the kernel inherits them, and torch reads them when it starts);
``$SWINUNETR_RESULTS_JSON`` = ``FOLDER/results.json`` (:func:`swinunetr_lib.utils.results.record`);
``$SWINUNETR_RUNS_DIR`` = ``FOLDER/artifacts`` (runs never write into each other); ``$SWINUNETR_DATA_DIR`` shared.
``run.json`` is written last, atomically: a run without it did not finish.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..paths import DATA_ENV, RUNS_ENV
from ..utils.files import atomic_write_text
from ..utils.results import RESULTS_ENV, record
from .runner import notebook_parameters, run_notebook
from .sweep_target import Target

THREAD_ENVS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def read_status(folder: Path) -> dict[str, Any]:
    """A run folder's ``run.json`` ({} when it has none or it cannot be read)."""
    try:
        return json.loads((folder / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _call_runner(runner: str, params: dict[str, Any]) -> None:
    """The library engine: ``module:function`` called with all the notebook's parameters; a mapping it returns is
    recorded entry by entry (the notebook's :func:`record` calls, without the notebook)."""
    module, func = runner.split(":")
    returned = getattr(importlib.import_module(module), func)(params)
    for name, value in (returned or {}).items():
        record(name, value)


def run_point(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Execute the run prepared in ``folder`` (see :func:`prepare_point`), in this process; writes ``run.json``
    last (atomically) and returns it. What a local worker process and a SLURM array task both call."""
    folder = Path(folder)
    spec = json.loads((folder / "point.json").read_text())
    for env in THREAD_ENVS:
        os.environ[env] = str(spec["threads"])
    os.environ[RESULTS_ENV] = str(folder / "results.json")
    os.environ[RUNS_ENV] = str(folder / "artifacts")  # each run's own artifacts: runs never write into each other
    os.environ[DATA_ENV] = spec["data_dir"]
    status: dict[str, Any] = {"name": spec["name"], "fingerprint": spec["fingerprint"], "host": os.uname().nodename,
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    tic = time.perf_counter()
    if spec.get("module"):  # an experiment module: its run_for_sweep, its scalars recorded
        try:
            for name, value in Target(Path(spec["notebook"]), spec["module"]).run(spec["params"], folder).items():
                record(name, value)
            ok, error, cell = True, "", None
        except Exception as err:  # a failed run is recorded; the sweep goes on
            ok, error, cell = False, f"{type(err).__name__}: {err}", None
    elif spec["runner"]:
        try:
            _call_runner(spec["runner"], {**notebook_parameters(Path(spec["notebook"])), **spec["params"]})
            ok, error, cell = True, "", None
        except Exception as err:  # a failed run is recorded; the sweep goes on
            ok, error, cell = False, f"{type(err).__name__}: {err}", None
    else:
        run = run_notebook(Path(spec["notebook"]), spec["params"], folder, progress=False)
        ok, error, cell = run.ok, run.error, run.cell
    status.update(status="ok" if ok else "failed", seconds=round(time.perf_counter() - tic, 2), cell=cell,
                  error=error.splitlines()[0][:2000] if error else "")
    atomic_write_text(json.dumps(status, indent=2), folder / "run.json")
    return status



if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1], "point.json").is_file():
        sys.exit("usage: python -m swinunetr_lib.notebooks.sweep_point RUN_FOLDER (a folder the sweep prepared)")
    sys.exit(0 if run_point(sys.argv[1]).get("status") == "ok" else 1)
