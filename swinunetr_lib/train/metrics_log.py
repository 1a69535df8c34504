"""``metrics.csv`` (one row per logged step) and TensorBoard: what :func:`~swinunetr_lib.train.loop.fit` logs, and
reading the rows back on resume (checkpoints hold no history: the CSV is the record)."""
from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

from ..utils.files import atomic_write_text

PLAN_FILE = "fit_plan.json"  # beside metrics.csv: where this run of fit starts and ends (progress watchers read it)


def write_plan(run_dir: Path, start_step: int, end_step: int, max_steps: int, log_every: int) -> Path:
    """``<run_dir>/fit_plan.json``, written by rank 0 when :func:`~swinunetr_lib.train.loop.fit` starts (or resumes):
    the steps it will run (``start_step`` to ``end_step``; ``max_steps`` spans the LR schedule) and how often a row
    reaches ``metrics.csv``. A watcher (``python -m swinunetr_lib.notebooks run``) reads it to show "step k of n"
    and the time left without a second copy of the loop."""
    plan = {"start_step": start_step, "end_step": end_step, "max_steps": max_steps, "log_every": log_every,
            "started": time.time()}
    return atomic_write_text(json.dumps(plan) + "\n", run_dir / PLAN_FILE)


class MetricsLog:
    """metrics.csv (one row per logged step) + TensorBoard.

    Every row reaches the CSV as it is logged: a run that stops (a non-finite loss, a crash, a kill) keeps
    every step it logged. Rows are appended; the file is rewritten (atomically) only at the first row of
    this process, so that a resumed run's file matches its checkpoint, and when a new column appears."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.path, self.enabled, self.rows = run_dir / "metrics.csv", enabled, []
        self.tb: Any = None
        self._tb_dir, self._tb_tried = run_dir / "tb", False
        self._keys: list[str] | None = None  # the header on disk; None: not written by this process yet

    def log(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        if not self.enabled:
            return
        if not self._tb_tried:  # opened at the first logged step, so a run that fails earlier leaves no tb/
            self._tb_tried = True
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 — optional (see except)
                self.tb = SummaryWriter(str(self._tb_dir))
            except ImportError:  # TensorBoard is optional; the CSV is the record
                self.tb = None
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(k, v, int(row["step"]))
            if len(self.rows) % 20 == 0:
                self.tb.flush()
        if self._keys is not None and set(row) <= set(self._keys):
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._keys).writerow(row)
        else:
            self.flush()

    def flush(self) -> None:
        """Rewrite metrics.csv from all rows (header = every key seen, in order of appearance)."""
        if not self.enabled:
            return
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(buf.getvalue(), self.path)
        self._keys = keys
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.enabled and self._keys is None and self.rows:
            self.flush()
        if self.tb is not None:
            self.tb.close()


def read_metrics(path: Path, upto_step: int) -> list[dict[str, float]]:
    """The rows of ``metrics.csv`` logged at steps ``<= upto_step`` (a run that stopped after its last checkpoint
    logged rows that its resume redoes), as ``fit`` logged them: ``step`` an int, every other value a float,
    empty cells left out."""
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict[str, Any] = {k: float(v) for k, v in raw.items() if k and v not in ("", None)}
            if "step" not in row or row["step"] > upto_step:
                continue
            row["step"] = int(row["step"])
            rows.append(row)
    return rows
