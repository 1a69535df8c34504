"""The sweep verb (issue #28): a notebook over a grid, checked before anything runs, run side by side, resumed, rerun
where its parameters changed, gathered into one table and summarized; the SLURM path through submitit's local
executor, and the sbatch script submitit would submit."""
from __future__ import annotations

import functools
import io
import json
import math
import os
import re
import time
from pathlib import Path

import jupytext
import pandas as pd
import pytest

from swinunetr_lib.notebooks import sweep as sw
from swinunetr_lib.notebooks import sweep_table
from swinunetr_lib.notebooks.progress import ProgressWatcher
from swinunetr_lib.utils import results as res

TOY = '''# %% [markdown]
# # Toy

# %%
import os

from swinunetr_lib.utils.results import record

# %% tags=["parameters"]
steps: int = 2  # how many
scale: float = 1.0  # multiplies
fail_at: int = -1  # the step that raises, -1 never
inputs: str = ""  # a file it reads

# %%
for i in range(steps):
    if i == fail_at:
        raise RuntimeError(f"boom at {i}")
record("value", steps * scale)
record("threads", int(os.environ.get("OMP_NUM_THREADS", "0")))
'''


def make_toy(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    py = folder / "00_toy.py"
    py.write_text(TOY)
    nb = jupytext.read(py)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    jupytext.write(nb, py.with_suffix(".ipynb"))
    return py


@pytest.mark.parametrize("grid, problem", [
    ("grid:\n  stepz: [1, 2]\n", "unknown parameter 'stepz' (did you mean 'steps'?)"),
    ("grid:\n  steps: [1, two]\n", "parameter 'steps' = 'two' is a str, the notebook declares steps: int = 2"),
    ("grid: {}\n", "the grid is empty: no grid: values and no cases:, nothing to run"),
    ("grid:\n  steps: []\n", "the grid is empty: grid parameter 'steps' needs a non-empty list"),
    ("cases:\n  - {scale: fast}\n", "parameter 'scale' = 'fast' is a str"),
    ("grid: {steps: [1]}\nseeds: [0]\n", "unknown key(s) ['seeds']"),
])
def test_a_bad_grid_is_one_line_naming_the_file_and_nothing_runs(tmp_path, capsys, grid, problem):
    py = make_toy(tmp_path / "nb")
    (tmp_path / "grid.yml").write_text(grid)
    code = sw.main([str(py), "--grid", str(tmp_path / "grid.yml"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"python -m swinunetr_lib.notebooks sweep: error: {tmp_path / 'grid.yml'}: ")
    assert problem in err
    assert not (tmp_path / "out").exists()


def test_points_are_the_product_plus_cases_named_by_what_varies(tmp_path):
    py = make_toy(tmp_path / "nb")
    (tmp_path / "grid.yml").write_text("base: {fail_at: -1}\ngrid:\n  steps: [1, 2]\n  scale: [0.5, 2]\n"
                                       "cases:\n  - {steps: 7}\n")
    sweep = sw.load_grid(tmp_path / "grid.yml", py)
    assert [p.name for p in sweep.points] == ["steps=1,scale=0.5", "steps=1,scale=2", "steps=2,scale=0.5",
                                              "steps=2,scale=2", "steps=7"]
    assert sweep.points[1].params == {"fail_at": -1, "steps": 1, "scale": 2.0}  # the int widened to the float declared
    assert isinstance(sweep.points[1].params["scale"], float)
    assert len({p.fingerprint for p in sweep.points}) == 5


def test_fingerprint_covers_parameters_notebook_source_and_named_input_files(tmp_path):
    py = make_toy(tmp_path / "nb")
    data = tmp_path / "input.txt"
    data.write_text("a")
    first = sw.fingerprint({"inputs": str(data), "steps": 1}, py)
    assert sw.fingerprint({"inputs": str(data), "steps": 1}, py) == first
    assert sw.fingerprint({"inputs": str(data), "steps": 2}, py) != first
    data.write_text("b")  # the same parameters naming a changed file
    changed_input = sw.fingerprint({"inputs": str(data), "steps": 1}, py)
    assert changed_input != first
    py.write_text(TOY + "\nprint('edited')\n")
    assert sw.fingerprint({"inputs": str(data), "steps": 1}, py) != changed_input


def test_record_writes_results_json_atomically_and_refuses_non_scalars(tmp_path, monkeypatch):
    target = tmp_path / "run" / "results.json"
    monkeypatch.setenv(res.RESULTS_ENV, str(target))
    assert res.record("dice", 0.5) == 0.5
    res.record("missed", math.nan)
    res.record("n", __import__("numpy").int64(3))
    assert json.loads(target.read_text()) == {"dice": 0.5, "missed": None, "n": 3}
    assert [p.name for p in target.parent.iterdir()] == ["results.json"]  # no temp file left
    with pytest.raises(TypeError, match="a result is one number, string or bool, not a list"):
        res.record("curve", [1, 2])
    with pytest.raises(ValueError, match="without commas"):
        res.record("a,b", 1)
    monkeypatch.delenv(res.RESULTS_ENV)
    res.record("alone", 1.0)  # outside a sweep: kept in memory, no file
    assert res.recorded()["alone"] == 1.0 and json.loads(target.read_text())["dice"] == 0.5


def test_sweep_runs_in_parallel_records_failures_resumes_and_reruns_what_changed(tmp_path):
    """Two workers, one thread each; a failing point is recorded with its cell and the others finish; a rerun skips
    finished runs; a changed value reruns exactly the runs it touches."""
    py = make_toy(tmp_path / "nb")
    grid = tmp_path / "grid.yml"
    grid.write_text("grid:\n  steps: [2]\n  scale: [1.0, 3.0]\ncases:\n  - {steps: 3, fail_at: 1}\n")
    out = tmp_path / "out"
    lines: list[str] = []
    table = sw.run_sweep(sw.load_grid(grid, py), out, workers=2, threads=1, say=lines.append)
    assert "3 runs: 0 finished (skipped), 3 to run (local, 2 at a time, 1 thread(s) each)" in lines
    assert table["status"].tolist() == ["ok", "ok", "failed"]
    assert table["value"].tolist()[:2] == [2.0, 6.0] and (table["threads"].iloc[:2] == 1).all()
    failed = table.iloc[2]
    assert failed["cell"] > 0 and "boom at 1" in failed["error"] and "00_toy.py failed in cell" in failed["error"]
    assert pd.read_csv(out / "results.csv")["run"].tolist() == table["run"].tolist()
    run = out / "runs" / "steps=2,scale=3"
    assert {"00_toy.ipynb", "params.yml", "results.json", "run.json"} <= {p.name for p in run.iterdir()}
    assert json.loads((run / "results.json").read_text()) == {"value": 6.0, "threads": 1}
    stamp = (run / "run.json").stat().st_mtime_ns

    grid.write_text("grid:\n  steps: [2]\n  scale: [1.0, 4.0]\ncases:\n  - {steps: 3, fail_at: 1}\n")
    lines.clear()
    table = sw.run_sweep(sw.load_grid(grid, py), out, workers=2, threads=1, say=lines.append)
    assert "3 runs: 1 finished (skipped), 2 to run (local, 2 at a time, 1 thread(s) each)" in lines
    assert sorted(line.split()[1] for line in lines if line.startswith("[")) == \
        ["steps=2,scale=4", "steps=3,fail_at=1"]  # the new value and the failed run
    assert table["value"].tolist()[:2] == [2.0, 8.0]

    grid.write_text("base: {fail_at: 5}\ngrid:\n  steps: [2]\n  scale: [1.0]\n")  # same name, another parameter
    lines.clear()
    sw.run_sweep(sw.load_grid(grid, py), out, workers=1, threads=1, say=lines.append)
    assert lines[0] == "steps=2,scale=1: parameters, notebook or an input file changed since it ran: rerun"
    assert (run / "run.json").stat().st_mtime_ns == stamp  # a run outside this grid is left alone


def test_summarize_groups_with_t_intervals_and_says_n1_has_none(tmp_path, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    pd.DataFrame({"run": list("abcde"), "init": ["ssl", "ssl", "ssl", "scratch", "ssl"], "seed": [0, 1, 2, 0, 3],
                  "dice": [0.5, 0.7, 0.6, 0.4, 0.9], "seconds": 1.0,
                  "status": ["ok", "ok", "ok", "ok", "failed"]}).to_csv(out / "results.csv", index=False)
    (out / "sweep.json").write_text(json.dumps({"varied": ["init", "seed"], "parameters": ["init", "seed"]}))
    summary, figure = sweep_table.summarize(out)
    rows = summary.set_index("init")
    assert rows.loc["ssl", "n"] == 3 and rows.loc["ssl", "mean"] == pytest.approx(0.6)  # the failed run left out
    assert rows.loc["ssl", "ci_low"] == pytest.approx(0.6 - 4.303 * 0.1 / 3 ** 0.5, abs=1e-3)
    assert rows.loc["scratch", "n"] == 1 and math.isnan(rows.loc["scratch", "ci_low"])
    assert "n = 1: no interval" in rows.loc["scratch", "text"]
    assert figure.name == "summary_dice.png" and figure.stat().st_size > 5_000
    assert pd.read_csv(out / "summary.csv")["n"].tolist() == [1, 3]
    assert sweep_table.main([str(out), "--by", "nope"]) == 2
    assert "no column(s) ['nope'] to group by" in capsys.readouterr().err


def test_submitit_local_executor_runs_the_same_folders_and_resumes(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from swinunetr_lib.notebooks import sweep_slurm

    monkeypatch.setattr(sweep_slurm, "POLL_SECONDS", 0.5)
    py = make_toy(tmp_path / "nb")
    grid = tmp_path / "grid.yml"
    grid.write_text("grid:\n  steps: [1, 3]\n")
    out = tmp_path / "out"
    lines: list[str] = []
    table = sw.run_sweep(sw.load_grid(grid, py), out, workers=2, threads=1, launcher="submitit-local",
                         say=lines.append)
    assert table["status"].tolist() == ["ok", "ok"] and table["value"].tolist() == [1.0, 3.0]
    assert any(line.startswith("submitted 2 runs (submitit-local)") for line in lines)
    assert json.loads((out / "submitit" / "jobs.json").read_text())  # job id -> run folder
    lines.clear()
    sw.run_sweep(sw.load_grid(grid, py), out, launcher="submitit-local", say=lines.append)
    assert lines[0].startswith("2 runs: 2 finished (skipped), 0 to run")


def test_the_sbatch_script_is_one_job_array_with_the_requested_resources(tmp_path, capsys):
    pytest.importorskip("submitit")
    py = make_toy(tmp_path / "nb")
    (tmp_path / "grid.yml").write_text("grid:\n  steps: [1, 2, 3]\n  scale: [1.0, 2.0]\n")
    assert sw.main([str(py), "--grid", str(tmp_path / "grid.yml"), "--out", str(tmp_path / "out"), "--launcher",
                    "slurm", "--partition", "gpu", "--time", "90", "--gpus", "1", "--mem-gb", "32", "--threads", "8",
                    "--workers", "4", "--print-sbatch"]) == 0
    script = capsys.readouterr().out
    for line in ("#SBATCH --array=0-5%4", "#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --mem=32GB", "#SBATCH --cpus-per-task=8", "#SBATCH --job-name=sweep-out"):
        assert line in script, script
    assert "-m submitit.core._submit" in script and str(tmp_path / "out" / "submitit") in script
    assert not (tmp_path / "out").exists()  # printing submits nothing and writes nothing


TRAINING_TOY = '''"""What a training notebook does, for the sweep\'s runner: engine, no kernel): fit, slowed down."""
import time

import torch

from swinunetr_lib.paths import runs_dir
from swinunetr_lib.train.loop import TrainConfig, fit


class Slow:
    def __iter__(self):
        while True:
            time.sleep(0.1)
            yield torch.ones(1, 2)


def train(params):
    torch.manual_seed(int(params["scale"]))
    fit(torch.nn.Linear(2, 1), lambda m, b, d: {"loss": m(b.to(d)).square().mean()}, Slow(),
        TrainConfig(max_steps=params["steps"], warmup_steps=0, checkpoint_every=0, log_every=1, progress=False),
        runs_dir() / "toy_fit", device="cpu")
'''


def test_a_sweep_shows_run_k_of_n_and_the_step_of_the_run_training_at_most_a_line_per_interval(tmp_path, monkeypatch):
    """#32: the sweep's own progress line, read from what fit writes in each run's folder: which run of how many,
    its step out of the total, loss, seconds per step, time left; in CI mode at most one line per interval."""
    monkeypatch.setenv("CI", "true")
    (tmp_path / "toy_training.py").write_text(TRAINING_TOY)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    py = make_toy(tmp_path / "nb")  # its parameters; the runner trains instead of the kernel
    (tmp_path / "grid.yml").write_text("base: {steps: 30}\ngrid:\n  scale: [0, 1]\nname: 'run{scale:g}'\n"
                                       "runner: toy_training:train\n")
    stream, interval = io.StringIO(), 0.5
    monkeypatch.setattr(sw, "ProgressWatcher",
                        functools.partial(ProgressWatcher, stream=stream, poll_s=0.1, interval_s=interval))
    said: list[str] = []
    tic = time.monotonic()
    table = sw.run_sweep(sw.load_grid(tmp_path / "grid.yml", py), tmp_path / "le", workers=1, threads=1,
                         say=said.append)
    elapsed = time.monotonic() - tic
    assert table["status"].tolist() == ["ok", "ok"]
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) <= elapsed / interval + 1, lines
    pattern = r"sweep le: (\d) of 2 runs done \| le run (\d) of 2 \((run\d)\): step (\d+)/30, loss [\d.e-]+, " \
              r"0\.\d+ s/step, ~\d+ s left"
    seen = {(m[1], m[2], m[3]) for line in lines if (m := re.fullmatch(pattern, line))}
    assert ("0", "1", "run0") in seen and ("1", "2", "run1") in seen, lines
    assert [s.split()[0] for s in said if s.startswith("[")] == ["[1/2]", "[2/2]"]
