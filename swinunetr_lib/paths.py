"""Where data and run outputs live. One environment variable each, with a documented default.

- ``$SWINUNETR_DATA_DIR`` (default ``<repo>/data``): datasets, the demo cohort, manifests' data roots.
- ``$SWINUNETR_RUNS_DIR`` (default ``<repo>/runs/notebooks``): checkpoints, logs, figures of runs.

The notebook runner points both into ``runs/<profile>/`` so smoke and demo runs never mix.
Relative paths given by users are resolved against the repository root, so a notebook behaves the same
whether JupyterLab runs it from ``notebooks/`` or papermill from the repository root.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ENV = "SWINUNETR_DATA_DIR"
RUNS_ENV = "SWINUNETR_RUNS_DIR"


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """Absolute path; a relative one is taken relative to the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def data_dir() -> Path:
    return resolve_path(os.environ.get(DATA_ENV) or "data")


def runs_dir() -> Path:
    return resolve_path(os.environ.get(RUNS_ENV) or "runs/notebooks")


def demo_cohort_dir() -> Path:
    """Folder of the bundled demo cohort (real examples + phantoms) built by notebook 01."""
    return data_dir() / "demo_cohort"
