"""Where data and run outputs live. One environment variable each, with a documented default.

- ``$SWINUNETR_DATA_DIR`` (default ``<repo>/data``): datasets, the demo cohort, manifests' data roots.
- ``$SWINUNETR_RUNS_DIR`` (default ``<repo>/runs/notebooks``): checkpoints, logs, figures of runs.

The notebook runner points both into ``runs/<profile>/`` so smoke and demo runs never mix.
Relative paths given to library calls (notebook parameters) are resolved against the repository root, so a
notebook behaves the same whether JupyterLab runs it from ``notebooks/`` or papermill from the repository
root. Command lines resolve the relative paths their user types against the current directory, as Unix tools
do (:func:`absolute_from_cwd`), before they reach the library.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ENV = "SWINUNETR_DATA_DIR"
RUNS_ENV = "SWINUNETR_RUNS_DIR"
# the example scans' mirror beside a development checkout (the workplace's shared/ folder); used when it exists
EXAMPLES_MIRROR_IN_CHECKOUT = REPO_ROOT.parent / "shared" / "data" / "totalsegmentator_examples"


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """Absolute path; a relative one is taken relative to the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def absolute_from_cwd(args: Any, *names: str) -> Any:
    """Command lines: the options ``names`` of ``args`` (an ``argparse.Namespace``) that hold a relative path
    made absolute against the current directory; options not given and empty values are left alone."""
    for name in names:
        value = getattr(args, name, None)
        if isinstance(value, str) and value.strip() and not Path(value).expanduser().is_absolute():
            setattr(args, name, os.path.abspath(os.path.expanduser(value)))
    return args


def data_dir() -> Path:
    return resolve_path(os.environ.get(DATA_ENV) or "data")


def runs_dir() -> Path:
    return resolve_path(os.environ.get(RUNS_ENV) or "runs/notebooks")


def demo_cohort_dir() -> Path:
    """Folder of the bundled demo cohort (real examples + phantoms) built by notebook 01."""
    return data_dir() / "demo_cohort"
