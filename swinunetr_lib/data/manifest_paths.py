"""The one rule for a manifest's ``image`` / ``label`` paths, shared by ``python -m swinunetr_lib.data validate``
(:mod:`swinunetr_lib.data.validate`) and by training's readers (:func:`swinunetr_lib.data.manifest.resolve_entries`,
:func:`swinunetr_lib.data.loading.refuse_paths_outside_root`), so that what ``validate`` flags is never trained on.

A path must be a non-empty string, relative (no ``/etc/passwd``, no ``~/...``), and stay below the data root, also
through links. Whether the file exists is checked later by each reader (its own message and advice).
:func:`listed_but_missing`: the images a dataset's own list names that are not on disk (``build-manifest``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple


class PathProblem(NamedTuple):
    """Why a manifest path is refused: ``code`` as ``validate`` reports it, ``problem`` a phrase that follows
    the path (``"'/etc/passwd' is absolute; ..."``)."""

    code: str
    problem: str


def manifest_path_problem(value: Any, root: str | os.PathLike[str]) -> PathProblem | None:
    """``None`` when ``value`` is an acceptable manifest path below ``root``, else why not.

    Codes: ``bad_path`` (not a non-empty string), ``absolute_path`` (absolute or ``~``), ``outside_root``
    (``..`` leaves ``root``, or a link resolves outside it), ``unreadable`` (the path cannot be resolved).
    """
    if not isinstance(value, str) or not value.strip():
        return PathProblem("bad_path", f"must be a non-empty path string, got {value!r}")
    if Path(value).is_absolute() or value.startswith("~"):
        return PathProblem("absolute_path", f"is absolute; manifest paths must be relative to the data root {root}")
    if os.path.normpath(value).split(os.sep)[0] == "..":
        return PathProblem("outside_root", f"leaves the data root {root}; manifest paths must lie below it")
    try:
        if not (Path(root) / value).resolve().is_relative_to(Path(root).resolve()):
            return PathProblem("outside_root", f"resolves (through a link) outside the data root {root}; "
                                               "manifest paths must lie below it")
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop on Python < 3.13
        return PathProblem("unreadable", f"cannot be resolved ({err})")
    return None


def listed_but_missing(root: Path, meta: Mapping[str, Any]) -> tuple[list[str], int]:
    """``(missing, n_listed)``: the images a dataset's own list (``meta``: MSD ``dataset.json``, BTCV
    ``dataset_0.json``) names that are not files under ``root``, and how many it names; no missing ones when none
    of them is there (the list then describes another layout, and is only a source of names and labels)."""
    listed = [e if isinstance(e, str) else e.get("image") for key in ("training", "validation", "test")
              for e in meta.get(key) or [] if isinstance(e, (str, Mapping))]
    listed = [os.path.normpath(p) for p in listed if isinstance(p, str) and p.strip() and not Path(p).is_absolute()]
    missing = [p for p in listed if not (root / p).is_file()]
    return (missing if len(missing) < len(listed) else []), len(listed)


def missing_files_problem(missing: list[str], n_listed: int, root: str | os.PathLike[str], root_given: bool) -> str:
    """The problem phrase (after ``"<manifest>: "``) for ``missing`` of the ``n_listed`` files of a manifest whose
    paths are relative to ``root`` (given as ``--data-root`` when ``root_given``, else the manifest's folder), with
    advice that fits: some files there (cases missing), none there with or without ``--data-root``."""
    shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
    head = f"{len(missing)} of the {n_listed} files it lists are not found ({shown})"
    if len(missing) < n_listed:
        advice = (f"the others are there, under {root}: copy the missing cases, or leave them out of the list "
                  "(`python -m swinunetr_lib.data build-manifest DATA_FOLDER --allow-missing --out LIST`)")
    elif root_given:
        advice = f"none is under the data root {root}: check --data-root"
    else:
        advice = f"its paths are taken relative to the manifest's folder {root}: give the data folder as --data-root"
    return f"{head}; {advice}"
