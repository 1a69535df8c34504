"""The one rule for a manifest's ``image`` / ``label`` paths, shared by ``python -m swinunetr_lib.data validate``
(:mod:`swinunetr_lib.data.validate`) and by training's readers (:func:`swinunetr_lib.data.manifest.resolve_entries`,
:func:`swinunetr_lib.data.loading.refuse_paths_outside_root`), so that what ``validate`` flags is never trained on.

A path must be a non-empty string, relative (no ``/etc/passwd``, no ``~/...``), and stay below the data root, also
through links. Whether the file exists is checked later by each reader (its own message and advice).
"""
from __future__ import annotations

import os
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
