"""The runner's progress line (read from the metrics.csv fit appends and the fit_plan.json it writes), the time
estimates, and the kernel's TCP warning left out of stderr."""
from __future__ import annotations

import io
import json
import os
import re
import threading
import time
from pathlib import Path

import jupytext
import pytest
import torch

from swinunetr_lib.notebooks.estimates import (
    CALIBRATIONS,
    REFERENCE,
    compare_line,
    cpu_capability,
    estimate,
    format_duration,
    plan_lines,
)
from swinunetr_lib.notebooks.kernel import TCP_WARNING, forward_filtered
from swinunetr_lib.notebooks.progress import ProgressWatcher, newest_metrics, read_training
from swinunetr_lib.notebooks.runner import REPO_ROOT, NotebookRun, list_notebooks, main, run_all, summary
from swinunetr_lib.train.loop import TrainConfig, fit

TOTAL = 40


def fake_run(run_dir: Path, steps: int = TOTAL, seconds: float = 2.0, sec_per_step: float = 0.05) -> threading.Thread:
    """A thread writing what fit writes: fit_plan.json, then a metrics.csv row per step over ``seconds``."""
    def write():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "fit_plan.json").write_text(json.dumps({"start_step": 0, "end_step": steps, "max_steps": steps,
                                                           "log_every": 1}))
        with open(run_dir / "metrics.csv", "w") as f:
            f.write("step,loss,lr,sec_per_step\n")
        for step in range(1, steps + 1):
            with open(run_dir / "metrics.csv", "a") as f:
                f.write(f"{step},{2.0 - step / steps:.4f},0.001,{sec_per_step}\n")
            time.sleep(seconds / steps)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_fit_writes_its_plan(tmp_path):
    model = torch.nn.Linear(2, 1)
    data = [torch.ones(1, 2)]
    cfg = TrainConfig(max_steps=3, warmup_steps=0, checkpoint_every=0, progress=False)
    fit(model, lambda m, b, d: {"loss": m(b.to(d)).square().mean()}, data, cfg, tmp_path / "run", device="cpu",
        stop_after=2)
    plan = json.loads((tmp_path / "run" / "fit_plan.json").read_text())
    assert (plan["start_step"], plan["end_step"], plan["max_steps"]) == (0, 2, 3)
    progress = read_training(tmp_path / "run" / "metrics.csv", tmp_path)
    assert (progress.run, progress.step, progress.total, progress.done) == ("run", 2, 2, True)


def test_watcher_shows_step_total_and_time_left_in_place(tmp_path):
    runs = tmp_path / "artifacts"
    (runs / "old").mkdir(parents=True)
    (runs / "old" / "metrics.csv").write_text("step,loss,sec_per_step\n5,1.0,1.0\n")
    os.utime(runs / "old" / "metrics.csv", (time.time() - 3600, time.time() - 3600))  # before the notebook: ignored
    out = io.StringIO()
    watcher = ProgressWatcher([runs], label="[3/7] 02_toy", stream=out, poll_s=0.1, in_place=True)
    with watcher:
        fake_run(runs / "ssl_pretraining").join()
        time.sleep(0.3)
        last = watcher.status()
    text = out.getvalue()
    shown = [s for s in text.split("\r") if "step" in s]
    assert shown, text
    assert "\n" not in text  # one line, rewritten in place
    assert re.search(r"\[3/7\] 02_toy \| ssl_pretraining: step \d+/40, loss [\d.]+, 0\.05 s/step, ~\d+ s left", text)
    assert "old" not in text
    assert last == "[3/7] 02_toy | ssl_pretraining: step 40/40, training done"
    assert text.endswith("\r")  # cleared at the end


def test_ci_mode_prints_at_most_one_line_per_interval(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    out = io.StringIO()  # not a terminal either
    interval = 0.5
    tic = time.monotonic()
    with ProgressWatcher([tmp_path], label="toy", stream=out, poll_s=0.05, interval_s=interval) as watcher:
        assert not watcher.in_place
        fake_run(tmp_path / "run", seconds=2.0).join()
    elapsed = time.monotonic() - tic
    lines = out.getvalue().splitlines()
    assert len(lines) <= elapsed / interval + 1, lines  # polled every 0.05 s, printed at most every 0.5 s
    assert "\r" not in out.getvalue()
    assert all(line.startswith("toy | ") for line in lines)
    if lines:  # a very slow machine may print none; an upper bound only
        assert re.search(r"run: step \d+/40", lines[-1]) or "running" in lines[-1]


def test_newest_metrics_skips_logs_and_old_runs(tmp_path):
    since = time.time() - 10
    for name in ("a", "b/checkpoints", "precomputed/c"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "metrics.csv").write_text("step,loss\n1,1\n")
    os.utime(tmp_path / "a" / "metrics.csv", (since - 100, since - 100))
    assert newest_metrics([tmp_path], since) is None
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "metrics.csv").write_text("step,loss,sec_per_step,val_dice\n1,2.0,0.5,\n2,,,0.3\n")
    assert newest_metrics([tmp_path], since) == tmp_path / "d" / "metrics.csv"
    p = read_training(tmp_path / "d" / "metrics.csv", tmp_path)  # validation rows (no loss) are skipped
    assert p.describe() == "d: step 1, loss 2, 0.50 s/step"
    assert (p.step, p.total, p.loss, p.sec_per_step, p.seconds_left()) == (1, None, 2.0, 0.5, None)
    p.total = 11  # 10 steps left at 0.5 s, counting down from the last row
    assert (p.seconds_left(), p.seconds_left(p.modified + 3), p.seconds_left(p.modified + 60)) == (5.0, 2.0, 0.0)


def test_estimate_formatting():
    assert [format_duration(s) for s in (4.4, 59.6, 162, 599, 1967, 5191)] == \
        ["4 s", "1 min 00 s", "2 min 42 s", "9 min 59 s", "33 min", "1 h 27 min"]
    assert compare_line("02_ssl_pretraining", 162.4, 150) == "02_ssl_pretraining: 2 min 42 s (estimated 2 min 30 s)"
    assert compare_line("00_quickstart", 4, None) == "00_quickstart: 4 s"
    stems = ["00_quickstart", "02_ssl_pretraining", "99_new"]
    ref_s = CALIBRATIONS[REFERENCE["demo"]["calibration"]]["seconds"]
    est = estimate("demo", stems, here_s=2 * ref_s)  # a machine twice as slow
    assert est.scale == pytest.approx(2.0) and est.get("02_ssl_pretraining") == pytest.approx(2 * 1967)
    lines = plan_lines(est, stems)
    assert "an estimate" in lines[0] and "issue #32" in lines[1] and "(x2.00" in lines[1]
    here = cpu_capability()  # the vector units here beside the reference machine's: AVX2 and AVX512 differ ~2x
    assert not here or f"vector units: {here} here, AVX2 there)" in lines[1]
    assert any(re.fullmatch(r"\s+02_ssl_pretraining\s+~1 h 06 min", line) for line in lines)
    assert any(re.fullmatch(r"\s+99_new\s+no estimate", line) for line in lines)
    assert re.fullmatch(r"\s+total\s+~1 h 06 min \(1 notebook\(s\) without an estimate\)", lines[-1])
    assert estimate("no_such_profile", stems, here_s=1.0) is None
    assert "not the demo's results" in REFERENCE["quick"]["notice"]
    runs = [NotebookRun("00_quickstart.py", True, 5.0, Path("x"), estimated=8.0),
            NotebookRun("02_ssl_pretraining.py", True, 100.0, Path("y"), estimated=None)]
    table = summary(runs, Path("out"))
    assert "estimated" in table.splitlines()[0] and re.search(r"total\s+105\.0\s+8 ", table)


def test_quick_profile_runs_the_defaults():
    folder = REPO_ROOT / "ci" / "params" / "quick"
    assert folder.is_dir() and not list(folder.glob("*.yml"))  # every notebook with its own defaults
    assert set(REFERENCE["quick"]["seconds"]) == {p.stem for p in list_notebooks()}
    assert set(REFERENCE["demo"]["seconds"]) == {p.stem for p in list_notebooks()}


def test_tcp_warning_is_left_out_and_other_lines_pass():
    read_fd, write_fd = os.pipe()
    out = io.StringIO()
    thread = threading.Thread(target=forward_filtered, args=(os.fdopen(read_fd, "rb"), out))
    thread.start()
    with os.fdopen(write_fd, "wb") as w:
        w.write(f"[IPKernelApp] WARNING | {TCP_WARNING}. All communication (including code and outputs) is sent "
                "in plain text.\n".encode())
        w.write(b"/x/y.py:3: UserWarning: something else\n  warnings.warn(\n")
    thread.join(timeout=10)
    assert out.getvalue() == "/x/y.py:3: UserWarning: something else\n  warnings.warn(\n"


def test_runner_kernel_warning_filtered_and_stderr_kept(tmp_path, capfd):
    """A real kernel through the runner: its TCP warning is gone, a warning the notebook writes to fd 2 is kept."""
    folder = tmp_path / "nb"
    folder.mkdir()
    py = folder / "00_toy.py"
    py.write_text('# %% tags=["parameters"]\nsteps = 1\n\n# %%\nimport os\n'
                  'os.write(2, b"toy warning on the kernel stderr\\n")\nprint("done", steps)\n')
    nb = jupytext.read(py)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    jupytext.write(nb, py.with_suffix(".ipynb"))
    runs = run_all([py], None, tmp_path / "out", progress=True, estimates=False)
    assert runs[0].ok, runs[0].error
    err = capfd.readouterr().err
    assert TCP_WARNING not in err
    assert "toy warning on the kernel stderr\n" in err  # the kernel's other stderr lines pass through
    assert "done 1" in (tmp_path / "out" / "00_toy.ipynb").read_text()


def test_quick_tier_says_so_at_start_and_end(tmp_path, capsys):
    folder = tmp_path / "nb"
    folder.mkdir()
    py = folder / "00_toy.py"
    py.write_text('# %% tags=["parameters"]\nsteps = 1\n\n# %%\nprint("done", steps)\n')
    nb = jupytext.read(py)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    jupytext.write(nb, py.with_suffix(".ipynb"))
    (tmp_path / "quick").mkdir()
    assert main(["run", str(py), "--params", str(tmp_path / "quick"), "--output", str(tmp_path / "out"),
                 "--no-progress", "--no-estimate"]) == 0
    lines = capsys.readouterr().out.splitlines()
    notes = [i for i, line in enumerate(lines) if line.startswith("NOTE: quick tier") and "not the demo's" in line]
    assert notes == [0, len(lines) - 1], lines


def test_a_run_of_a_sweep_is_named_by_its_place_in_it(tmp_path):
    """sweep_position reads sweep.json's run list and each run's run.json (finished) and run.log (started): a run
    of a sweep is "run k of n", counting finished runs first; two side by side are k and k + 1; a training run
    outside a sweep has no position."""
    from swinunetr_lib.notebooks.progress import sweep_position

    out = tmp_path / "le"
    names = ["a", "b", "c", "d"]
    (out / "runs").mkdir(parents=True)
    (out / "sweep.json").write_text(json.dumps({"runs": names}))
    for name in names:
        (out / "runs" / name).mkdir()
    (out / "runs" / "a" / "run.json").write_text("{}")
    for name in ("b", "c"):
        (out / "runs" / name / "run.log").write_text("")
    metrics = out / "runs" / "c" / "artifacts" / "finetune_btcv" / "c" / "metrics.csv"
    metrics.parent.mkdir(parents=True)
    metrics.write_text("step,loss,sec_per_step\n3,1.5,0.5\n")
    pos = sweep_position(metrics, tmp_path)
    assert (pos.total, pos.finished, pos.running, pos.number) == (4, 1, ["b", "c"], 3)
    assert pos.describe() == "le run 3 of 4 (c)"
    assert sweep_position(metrics, out / "runs" / "c" / "artifacts") is None  # the run's folder is above the root
    assert sweep_position(tmp_path / "elsewhere" / "metrics.csv", tmp_path) is None

    watcher = ProgressWatcher([tmp_path], stream=io.StringIO(), in_place=False, clock=lambda: metrics.stat().st_mtime)
    watcher.since = 0.0
    assert watcher.status() == "le run 3 of 4 (c): step 3, loss 1.5, 0.50 s/step"
    (out / "runs" / "c" / "run.json").write_text("{}")  # c finished; d has not logged a step yet
    assert sweep_position(metrics, tmp_path).run_finished
    assert watcher.status().startswith("running ")  # not c's last step under d's number


def test_a_narrow_terminal_keeps_the_step_and_the_time_left(tmp_path, monkeypatch):
    """On an 80-column terminal the line drops the cell, loss and seconds per step before it would cut the step
    and the time left off its end."""
    import shutil

    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=None: os.terminal_size((80, 24)))
    run = tmp_path / "artifacts" / "finetune_btcv" / "scratch_frac1_seed0"
    run.mkdir(parents=True)
    (run / "fit_plan.json").write_text(json.dumps({"end_step": 30}))
    (run / "metrics.csv").write_text("step,loss,sec_per_step\n5,1.2345,7.5\n10,1.1,7.5\n")
    out = io.StringIO()
    watcher = ProgressWatcher([tmp_path / "artifacts"], label="[4/7] 03_finetune_btcv", stream=out, in_place=True,
                              clock=lambda: (run / "metrics.csv").stat().st_mtime)
    watcher.since = 0.0
    wide = watcher.status()
    assert wide == ("[4/7] 03_finetune_btcv | finetune_btcv/scratch_frac1_seed0: step 10/30, loss 1.1, 7.50 s/step, "
                    "~2 min 30 s left")
    watcher.tick()
    shown = out.getvalue().split("\r")[-1]
    assert shown == "[4/7] 03_finetune_btcv | scratch_frac1_seed0: step 10/30, ~2 min 30 s left"
