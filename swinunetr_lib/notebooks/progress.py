"""One line of progress while notebooks (or a sweep of runs) execute: which cell, and for a cell that trains the step
out of the total, the last loss, seconds per step and the time left.

Nothing here runs a second copy of the training loop: :class:`ProgressWatcher`, a thread, polls the runs folder
every ~2 s for the newest ``metrics.csv`` modified since it started (what :func:`~swinunetr_lib.train.loop.fit`
appends every ``log_every`` steps) and reads the total from ``fit_plan.json`` beside it (written by ``fit`` when it
starts). The running cell comes from the executed notebook papermill saves as each cell starts.

A run of a sweep (:mod:`swinunetr_lib.notebooks.sweep`: ``<out>/runs/<name>/``, its run list in ``<out>/sweep.json``,
``run.json`` in each finished run) is named by its place in the sweep, ``label_efficiency run 2 of 4
(ssl_frac1_seed0)``, read from those files: the same line for the sweep verb, label efficiency and a notebook that runs
a sweep.

On a terminal the line is rewritten in place (``\\r``); when the output is not a terminal or ``$CI`` is set, one line
is printed every ~30 s instead, so CI logs get no flood of lines.
"""
from __future__ import annotations

import csv
import datetime
import io
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .estimates import format_duration

METRICS_FILE = "metrics.csv"
PLAN_FILE = "fit_plan.json"  # swinunetr_lib.train.metrics_log.PLAN_FILE (not imported: that module imports torch)
SWEEP_FILE = "sweep.json"  # what swinunetr_lib.notebooks.sweep.run_sweep writes into the sweep's folder
SKIP_DIRS = {"tb", "checkpoints", "eval", "predictions", "figures", "precomputed", ".git", "__pycache__"}
POLL_S = 2.0
CI_INTERVAL_S = 30.0


def newest_metrics(roots: Iterable[Path], since: float) -> Path | None:
    """The most recently modified ``metrics.csv`` under ``roots`` modified at or after ``since`` (a
    ``time.time()``), or None. Folders of logs, checkpoints, evaluations and precomputed runs are not searched."""
    best, best_mtime = None, since
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
            if METRICS_FILE in files:
                path = Path(folder) / METRICS_FILE
                try:
                    mtime = path.stat().st_mtime
                except OSError:
                    continue
                if mtime >= best_mtime:
                    best, best_mtime = path, mtime
    return best


@dataclass
class TrainingProgress:
    run: str                      # the run folder, relative to the watched root
    step: int                     # the last logged step
    total: int | None             # the step fit stops at (fit_plan.json), None if unknown
    loss: float | None            # the last logged training loss
    sec_per_step: float | None    # mean over the last logged rows
    modified: float               # metrics.csv's modification time

    def seconds_left(self, now: float | None = None) -> float | None:
        """Steps left times seconds per step, less the time since the last row (at ``now``; never below 0)."""
        if self.total is None or self.sec_per_step is None:
            return None
        since = max(0.0, now - self.modified) if now is not None else 0.0
        return max(0.0, max(0, self.total - self.step) * self.sec_per_step - since)

    @property
    def done(self) -> bool:
        return self.total is not None and self.step >= self.total

    def describe(self, now: float | None = None, compact: bool = False, name: str = "") -> str:
        """``ssl_pretraining: step 120/450, loss 0.8123, 2.31 s/step, ~12 min 43 s left`` (counting down from the
        last row at ``now``), the run called ``name`` when given; ``compact``: the run's last folder, the step and
        the time left only (a narrow terminal)."""
        run = name or (self.run.rsplit("/", 1)[-1] if compact else self.run)
        parts = [f"step {self.step}/{self.total}" if self.total else f"step {self.step}"]
        if self.done:
            return f"{run}: {parts[0]}, training done"
        if self.loss is not None and not compact:
            parts.append(f"loss {self.loss:.4g}")
        if self.sec_per_step is not None and not compact:
            parts.append(f"{self.sec_per_step:.2f} s/step")
        left = self.seconds_left(now)
        if left is not None:
            parts.append(f"~{format_duration(left)} left")
        return f"{run}: " + ", ".join(parts)


def _tail_rows(path: Path, max_bytes: int = 32768) -> list[dict[str, str]]:
    """The last rows of a CSV file (its header and up to ``max_bytes`` of its end)."""
    with open(path, "rb") as f:
        header = f.readline().decode("utf-8", "replace")
        start = f.tell()
        size = f.seek(0, io.SEEK_END)
        f.seek(max(start, size - max_bytes))
        tail = f.read().decode("utf-8", "replace")
    lines = tail.splitlines()
    if size - max_bytes > start and lines:
        lines = lines[1:]  # a partial first line
    return list(csv.DictReader(io.StringIO(header + "\n".join(lines) + "\n")))


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def read_training(path: Path, root: Path | None = None, recent: int = 10) -> TrainingProgress | None:
    """What ``metrics.csv`` at ``path`` and ``fit_plan.json`` beside it say about the run, or None when there is no
    training row yet (or the file cannot be read: it is rewritten atomically, so a poll may miss it)."""
    try:
        modified = path.stat().st_mtime
        rows = [r for r in _tail_rows(path)
                if _number(r.get("loss")) is not None and _number(r.get("step")) is not None]
    except (OSError, csv.Error):
        return None
    if not rows:
        return None
    total = None
    try:
        plan = json.loads((path.parent / PLAN_FILE).read_text())
        total = int(plan["end_step"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    speeds = [v for r in rows[-recent:] if (v := _number(r.get("sec_per_step"))) is not None]
    try:
        run = path.parent.relative_to(root).as_posix() if root is not None else path.parent.name
    except ValueError:
        run = path.parent.name
    return TrainingProgress(run=run or path.parent.name, step=int(float(rows[-1]["step"])), total=total,
                            loss=_number(rows[-1].get("loss")),
                            sec_per_step=sum(speeds) / len(speeds) if speeds else None, modified=modified)


@dataclass
class SweepPosition:
    folder: Path          # the sweep's folder (sweep.json, runs/)
    run: str              # the run the metrics belong to (runs/<run>/)
    total: int            # runs in the sweep
    finished: int         # runs with a run.json (this sweep's or an earlier one's, ok or failed)
    running: list[str]    # runs started (a run.log or artifacts/) and not finished, in the sweep's order
    run_finished: bool = False  # the run has its run.json: its metrics are the last run's, not the one going now

    @property
    def number(self) -> int:
        """The run's place, counting the finished runs first: ``k`` of ``run k of n``."""
        later = self.running.index(self.run) if self.run in self.running else 0
        return min(self.total, self.finished + later + 1)

    def describe(self, compact: bool = False) -> str:
        """``label_efficiency run 2 of 4 (ssl_frac1_seed0)``; compact: ``run 2/4 ssl_frac1_seed0``."""
        if compact:
            return f"run {self.number}/{self.total} {self.run}"
        return f"{self.folder.name} run {self.number} of {self.total} ({self.run})"


def sweep_position(path: Path, root: Path | None = None) -> SweepPosition | None:
    """Where the run that wrote ``path`` (a file under ``<sweep>/runs/<run>/``) stands in its sweep, or None when
    ``path`` is not in a sweep's run. Only folders below ``root`` (when given) are looked at."""
    for run_dir in path.parents:
        if root is not None and not run_dir.is_relative_to(root):
            return None
        sweep_dir = run_dir.parent.parent
        if run_dir.parent.name != "runs" or not (sweep_dir / SWEEP_FILE).is_file():
            continue
        try:
            names = [str(n) for n in json.loads((sweep_dir / SWEEP_FILE).read_text())["runs"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        runs = sweep_dir / "runs"
        finished = [n for n in names if (runs / n / "run.json").is_file()]
        running = [n for n in names if n not in finished
                   and ((runs / n / "run.log").is_file() or (runs / n / "artifacts").is_dir())]
        return SweepPosition(sweep_dir, run_dir.name, len(names), len(finished), running,
                             run_finished=run_dir.name in finished)
    return None


@dataclass
class CellProgress:
    index: int        # 1-based
    total: int
    started: float    # time.time() when it started


def running_cell(executed: Path) -> CellProgress | None:
    """The cell papermill marks as running in the executed notebook it saves as each cell starts, or None."""
    try:
        nb = json.loads(executed.read_text())
    except (OSError, ValueError):
        return None
    cells = nb.get("cells", [])
    for i, cell in enumerate(cells):
        meta = cell.get("metadata", {}).get("papermill", {})
        if meta.get("status") == "running":
            try:
                started = datetime.datetime.fromisoformat(meta["start_time"]).timestamp()
            except (KeyError, TypeError, ValueError):
                started = time.time()
            return CellProgress(i + 1, len(cells), started)
    return None


def ci_mode(stream: TextIO) -> bool:
    """One line per interval instead of a line rewritten in place: not a terminal, or ``$CI`` set."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return True
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):
        return True


class ProgressWatcher:
    """A thread that shows, every ``poll_s``, a line: ``label``, the running cell of ``notebook`` (an executed
    notebook papermill saves) and the newest training run under ``roots``.

    Use as a context manager around the work. On a terminal the line is rewritten in place and cleared at the end;
    otherwise (or with ``$CI`` set) one line is printed every ``interval_s`` (default 30 s; the first after one
    interval), never more often.
    """

    def __init__(self, roots: Iterable[Path], *, label: str = "", notebook: Path | None = None,
                 stream: TextIO | None = None, poll_s: float = POLL_S, interval_s: float = CI_INTERVAL_S,
                 in_place: bool | None = None, clock: Callable[[], float] = time.time) -> None:
        self.roots = [Path(r) for r in roots]
        self.label, self.notebook = label, notebook
        self.stream = stream if stream is not None else sys.stderr
        self.poll_s, self.interval_s = poll_s, interval_s
        self.in_place = not ci_mode(self.stream) if in_place is None else in_place
        self.clock = clock
        self.since = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._shown = 0             # characters of the line on screen (in place)
        self._last_print = self.since
        self._nb_mtime: float | None = None
        self._cell: CellProgress | None = None

    def set_label(self, label: str, notebook: Path | None = None, restart_clock: bool = True) -> None:
        """A new task (the next run of a sweep): its label and executed notebook; runs older than now are ignored."""
        with self._lock:
            self.label, self.notebook = label, notebook
            self._nb_mtime, self._cell = None, None
            if restart_clock:
                self.since = self.clock()

    def status(self, compact: bool = False) -> str:
        """The line as it would be shown now; ``compact``: for a narrow terminal, the cell's part left out while a
        run trains, and the run's step and time left only (no loss, no seconds per step)."""
        return self._lines()[1 if compact else 0]

    def _lines(self) -> tuple[str, str]:
        """The line and its compact form, from one look at the runs folder and the notebook."""
        now = self.clock()
        cell = self._poll_cell()
        path = newest_metrics(self.roots, self.since)
        training = read_training(path, self._root_of(path)) if path is not None else None
        position = sweep_position(path, self._root_of(path)) if training is not None else None
        shown = training is not None and (cell is None or training.modified >= cell.started or not training.done) \
            and not (position is not None and position.run_finished)  # a sweep's next run has not logged yet
        lines = []
        for compact in (False, True):
            parts = [self.label] if self.label else []
            if cell is not None and not (compact and shown):
                parts.append(f"cell {cell.index}/{cell.total} running {format_duration(now - cell.started)}")
            if shown:
                name = position.describe(compact) if position is not None else ""
                parts.append(training.describe(now, compact, name))
            elif not parts or cell is None:
                parts.append(f"running {format_duration(now - self.since)}")
            lines.append(" | ".join(parts))
        return lines[0], lines[1]

    def _root_of(self, path: Path) -> Path | None:
        for root in self.roots:
            if path.is_relative_to(root):
                return root
        return None

    def _poll_cell(self) -> CellProgress | None:
        if self.notebook is None:
            return None
        try:
            mtime = self.notebook.stat().st_mtime
        except OSError:
            return None
        if mtime != self._nb_mtime:
            self._nb_mtime, self._cell = mtime, running_cell(self.notebook)
        return self._cell

    def tick(self) -> None:
        """Show the line once (in place), or print it if an interval has passed (CI)."""
        with self._lock:
            try:
                line, short = self._lines()
            except Exception as err:  # noqa: BLE001 - a progress line must never stop the run it watches
                line = short = f"{self.label} (progress unavailable: {type(err).__name__})"
            if self.in_place:
                width = shutil.get_terminal_size((100, 20)).columns - 1
                line = line if len(line) <= width else short
                line = line if len(line) <= width else line[: max(0, width - 1)] + "…"
                self._write("\r" + line + " " * max(0, self._shown - len(line)) + "\r" + line)
                self._shown = len(line)
            elif self.clock() - self._last_print >= self.interval_s:
                self._write(line + "\n")
                self._last_print = self.clock()

    def clear(self) -> None:
        """Remove the in-place line (before other output, and at the end)."""
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        if self.in_place and self._shown:
            self._write("\r" + " " * self._shown + "\r")
            self._shown = 0

    def say(self, text: str, out: TextIO | None = None, emit: Callable[[str], None] | None = None) -> None:
        """Print ``text`` (a line, to ``out``, default stdout; or hand it to ``emit``) without mixing it into the
        in-place line."""
        with self._lock:
            self._clear()
            if emit is not None:
                emit(text)
                return
            out = out if out is not None else sys.stdout
            out.write(text + "\n")
            out.flush()

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.tick()

    def start(self) -> ProgressWatcher:
        self._thread = threading.Thread(target=self._run, name="progress-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.clear()

    def __enter__(self) -> ProgressWatcher:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
