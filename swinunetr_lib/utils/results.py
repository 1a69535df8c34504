"""What a notebook (or any run) reports: named scalar results, written to one ``results.json``.

A notebook declares its headline numbers with :func:`record`::

    from swinunetr_lib.utils.results import record
    record("mean_dice", float(table.loc["mean", "dice"]))

Each call adds (or replaces) one entry of the JSON object in the file named by ``$SWINUNETR_RESULTS_JSON`` and
rewrites the file atomically (temp name, then rename), so a run killed at any moment leaves the previous complete
file or the new one, never half of one. The sweep (``python -m swinunetr_lib.notebooks sweep``) sets that variable
for each run to ``<run folder>/results.json`` and gathers the files into one table. Outside a sweep the variable is
unset: ``record`` only keeps the value in :func:`recorded` and returns it, so a notebook runs the same by hand.

Why a file and not scrapbook (``sb.glue``): scrapbook stores values inside the executed notebook's outputs, so they
can only be read back through nbformat from a notebook that was saved after the cell ran; a run executed without
Jupyter (the library engine on a GPU machine, a SLURM job) has no notebook to read; scrapbook has had no release
since 2021 and would be one more dependency. A JSON file per run is read by anything (pandas, jq, a shell), survives
a killed kernel with everything recorded so far, and the sweep's table is built from files it can check.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from numbers import Real
from pathlib import Path
from typing import Any

RESULTS_ENV = "SWINUNETR_RESULTS_JSON"  # the file record() writes; set by the sweep for each run

_recorded: dict[str, Any] = {}


def _scalar(name: str, value: Any) -> Any:
    """``value`` as a JSON scalar: a number (NumPy and torch scalars included), a string, a bool or None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, Real):
        value = float(value)
        return value if math.isfinite(value) else None  # JSON has no NaN; a missing number is null
    raise TypeError(f"record({name!r}, ...): a result is one number, string or bool, not a {type(value).__name__}")


def _write_atomically(text: str, path: Path) -> None:
    """``path`` gets ``text`` whole or not at all (temp file beside it, fsync, rename). Not
    :func:`swinunetr_lib.utils.files.atomic_write_text`: that module imports torch, and recording a number should
    not (a toy notebook, a script without torch)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def record(name: str, value: Any) -> Any:
    """Report one scalar result ``name`` = ``value`` of this run; returns ``value`` (so it can wrap an expression).

    Written at once to ``$SWINUNETR_RESULTS_JSON`` when set (atomically, every result recorded so far); NaN and
    infinity are written as null."""
    if not isinstance(name, str) or not name.strip() or any(c in name for c in ',"\n'):
        raise ValueError(f"record: result name {name!r} must be a non-empty string without commas, quotes or "
                         "newlines (it becomes a column of the sweep's results.csv)")
    _recorded[name] = _scalar(name, value)
    target = os.environ.get(RESULTS_ENV)
    if target:
        path = Path(target)
        try:
            current = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, json.JSONDecodeError):
            current = {}
        current[name] = _recorded[name]
        _write_atomically(json.dumps(current, indent=2), path)
    return value


def recorded() -> dict[str, Any]:
    """The results recorded in this process so far (a copy)."""
    return dict(_recorded)
