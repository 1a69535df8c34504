"""A sweep's runs as one SLURM job array, through submitit (an optional dependency: ``pip install submitit``).

Each array task calls :func:`swinunetr_lib.notebooks.sweep.run_point` on one prepared run folder, so the folders,
``run.json`` and resume are those of a local sweep; submitit's own files (the sbatch script, pickles, each task's
stdout/stderr) go to ``<out>/submitit/``. ``--launcher submitit-local`` runs the same path through submitit's local
executor (no cluster: for testing). :func:`sbatch_script` gives the script submitit would submit, without a cluster.
"""
from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import submitit
from submitit.slurm.slurm import _make_sbatch_string  # the text SlurmExecutor writes; its own needs `srun`

from ..utils.files import atomic_write_text
from .sweep_point import read_status, run_point

POLL_SECONDS = 5.0


def _slurm_parameters(options: Mapping[str, Any]) -> dict[str, Any]:
    """``--partition``, ``--gpus``, ``--mem-gb`` as sbatch parameters (unset ones left out)."""
    params: dict[str, Any] = {}
    if options.get("partition"):
        params["partition"] = options["partition"]
    if options.get("gpus"):
        params["gpus_per_node"] = int(options["gpus"])
    if options.get("mem_gb"):
        params["mem"] = f"{int(options['mem_gb'])}GB"
    return params


def sbatch_script(n_runs: int, out: Path, *, threads: int, parallelism: int | None,
                  options: Mapping[str, Any]) -> str:
    """The sbatch script of a job array of ``n_runs`` tasks, as submitit's SlurmExecutor writes it."""
    folder = out / "submitit" / "%j"
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, job_name=f"sweep-{out.name}",
                               time=int(options.get("time") or 60), cpus_per_task=threads,
                               map_count=max(1, n_runs), array_parallelism=parallelism or max(1, n_runs),
                               **_slurm_parameters(options))


def submit(folders: list[Path], out: Path, launcher: str, *, threads: int, parallelism: int,
           options: Mapping[str, Any], on_done: Callable[[Path, dict[str, Any]], None],
           say: Callable[[str], None] = print) -> None:
    """Submit one task per prepared run folder (``launcher``: ``slurm`` or ``submitit-local``) and wait for them,
    calling ``on_done`` as each finishes. A task that dies without writing ``run.json`` is recorded as failed."""
    executor = submitit.AutoExecutor(folder=out / "submitit" / "%j",
                                     cluster="slurm" if launcher == "slurm" else "local")
    params: dict[str, Any] = {"name": f"sweep-{out.name}", "timeout_min": int(options.get("time") or 60),
                              "cpus_per_task": threads, "slurm_array_parallelism": parallelism}
    if launcher == "slurm":
        params.update({f"slurm_{k}": v for k, v in _slurm_parameters(options).items()})
    executor.update_parameters(**params)
    jobs = executor.map_array(run_point, [str(f) for f in folders])
    folder_of = {job.job_id: f for job, f in zip(jobs, folders, strict=True)}
    atomic_write_text(json.dumps({j.job_id: str(f) for j, f in zip(jobs, folders, strict=True)}, indent=2),
                      out / "submitit" / "jobs.json")
    say(f"submitted {len(jobs)} runs ({launcher}): job ids {jobs[0].job_id} .. {jobs[-1].job_id}; "
        f"logs in {out / 'submitit'}")
    for job in submitit.helpers.as_completed(jobs, poll_frequency=POLL_SECONDS):
        folder = folder_of[job.job_id]
        try:
            status = job.result()
        except Exception as err:  # the task died (timeout, node failure): say so in the table
            status = read_status(folder) or {"name": folder.name, "status": "failed", "cell": None, "seconds": None,
                                             "error": f"job {job.job_id}: {type(err).__name__}: "
                                                      f"{str(err).strip().splitlines()[-1][:500] if str(err) else ''}"}
            if not (folder / "run.json").is_file():
                atomic_write_text(json.dumps(status, indent=2), folder / "run.json")
        on_done(folder, status)
