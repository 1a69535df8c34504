"""Workshop exercise notebooks, generated from the tutorial notebooks' tagged solution cells.

Convention in a notebook source ``notebooks/NN_topic.py`` (jupytext percent format)::

    # %% [markdown] tags=["exercise"]
    # **Exercise 1.** Predict ..., then change ... and observe ...

    # %% tags=["solution"]
    # stub: chance = float("nan")  # your prediction
    chance = math.log(2 * n - 1)
    chance

    # %% [markdown] tags=["solution"]
    # The first logged value is ... because ...

- A cell tagged ``exercise`` (markdown) asks the question; it is kept as it is in both versions.
- The cells tagged ``solution`` right after it (code or markdown, one or more) answer it. In the
  exercise version each code solution becomes a stub: ``# Exercise N: your code here``, followed by the
  solution's ``# stub: <code>`` lines, uncommented; these define any name that later cells use, so the
  exercise notebook still runs top to bottom. A markdown solution becomes ``*Exercise N: your answer here.*``
  In the tutorial itself the ``# stub:`` lines are plain comments.
- A solution cell that follows no exercise, or an exercise without a solution, is an error.
- Predict first: the question's heading names its kind, ``**Exercise N (predict|change|observe, 5 min).**``, and
  its first solution is a code cell tagged ``solution`` and ``prediction`` that holds the worked prediction in the
  tutorial and, in the exercise version, ``prediction = None`` (its stub) under ``# Exercise N: your prediction``.
  A later solution compares it with the computed value (``swinunetr_lib.notebooks.prediction.check_prediction``).
  Where the answer appears on screen between the prediction and the check (a table the notebook shows anyway),
  the exercise goes on further down under a second ``exercise`` cell with the same number,
  ``**Exercise N, check.**``; it counts once.
- Relative links in markdown (``../docs/glossary.md#hu``) are rewritten for the exercise folder, one level down.

``python -m swinunetr_lib.notebooks.exercises generate [NOTEBOOK ...]`` writes ``notebooks/exercises/NN_topic_ex.py``
and its ``.ipynb`` (no outputs, deterministic cell ids) for every notebook with exercises (or the ones
named); ``check`` exits non-zero naming each generated file that is missing or differs from what
``generate`` would write (``tests/test_exercises.py`` runs it, so ``make test`` fails on stale files).
Both files start with a cell saying they are generated and from what. The answers, for instructors,
are in ``docs/workshop_answers.md``.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat
from nbformat.v4 import new_markdown_cell

from ..paths import REPO_ROOT
from ..utils.cli import run_cli
from ..utils.files import atomic_write_text

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
EXERCISE_DIR = NOTEBOOK_DIR / "exercises"
EXERCISE_TAG, SOLUTION_TAG, PREDICTION_TAG, STUB_PREFIX = "exercise", "solution", "prediction", "# stub:"
KINDS = ("predict", "change", "observe")
_HEADING = re.compile(r"^[#*\s]*Exercise\s+(\d+)(?:\s*\((predict|change|observe)\b)?", re.IGNORECASE)
_RELATIVE_LINK = re.compile(r"\]\((?![a-z][a-z0-9+.-]*:|#|/)([^)\s]+)\)", re.IGNORECASE)
COMMAND = "python -m swinunetr_lib.notebooks.exercises generate"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


class ExerciseError(ValueError):
    """A notebook's exercise and solution cells do not follow the convention."""


@dataclass
class Generated:
    """The two generated files of one source notebook: their paths and their full text."""

    source: Path
    py: Path
    py_text: str
    ipynb: Path
    ipynb_text: str
    exercises: int
    kinds: dict[str, int]


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def exercise_path(source: Path) -> Path:
    """``notebooks/NN_topic.py`` -> ``notebooks/exercises/NN_topic_ex.py``."""
    return source.parent / "exercises" / f"{source.stem}_ex.py"


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def stub_source(solution: str, number: int, prediction: bool = False) -> str:
    """The exercise version of a code solution: a prompt plus its ``# stub:`` lines, uncommented (the one space
    after ``# stub:`` is dropped, any further indentation kept, so a stub may hold a loop or a function)."""
    stubs = [line.split(STUB_PREFIX, 1)[1].removeprefix(" ").rstrip() for line in solution.splitlines()
             if line.lstrip().startswith(STUB_PREFIX)]
    prompt = (f"# Exercise {number}: your prediction, written before running anything below" if prediction
              else f"# Exercise {number}: your code here")
    return "\n".join([prompt, *stubs])


def _number(question: str, fallback: int) -> int:
    """The N of a question that starts ``**Exercise N.**`` or ``**Exercise N (kind, ...).**`` (else the count)."""
    m = _HEADING.match(question)
    return int(m.group(1)) if m else fallback


def exercise_kind(question: str) -> str | None:
    """``predict``, ``change`` or ``observe`` from a heading ``**Exercise N (kind, 5 min).**``, else None."""
    m = _HEADING.match(question)
    return m.group(2).lower() if m and m.group(2) else None


def relink(markdown: str) -> str:
    """Relative links of a tutorial's markdown, as seen from ``notebooks/exercises/`` (one folder down)."""
    return _RELATIVE_LINK.sub(lambda m: f"](../{m.group(1)})", markdown)


def has_exercises(source: Path) -> bool:
    """Whether a notebook source holds any cell tagged ``exercise`` (a cheap text test before parsing)."""
    return 'tags=["exercise"]' in source.read_text()


def exercise_notebook(source: Path):
    """Read ``source`` and return ``(exercise notebook, number of exercises)``; :class:`ExerciseError` names
    the source and the cell when the tags break the convention. An exercise continued under a second heading
    with the same number counts once."""
    out, numbers = _exercise_cells(source)
    return out, len(numbers)


def exercise_kinds(source: Path) -> dict[str, int]:
    """How many exercises of ``source`` are of each kind (``predict``, ``change``, ``observe``, ``unmarked``)."""
    _, numbers = _exercise_cells(source)
    counts = {k: 0 for k in (*KINDS, "unmarked")}
    for kind in numbers.values():
        counts[kind or "unmarked"] += 1
    return {k: v for k, v in counts.items() if v or k != "unmarked"}


def _exercise_cells(source: Path):
    try:
        nb = jupytext.read(source)
    except Exception as err:  # name the broken file
        raise ExerciseError(f"{source}: cannot be read as a notebook ({err})") from err
    out = copy.deepcopy(nb)
    cells, count, current, answered = [], 0, 0, True
    numbers: dict[int, str | None] = {}
    for i, cell in enumerate(nb.cells):
        tags = _tags(cell)
        if EXERCISE_TAG in tags:
            if SOLUTION_TAG in tags or cell.cell_type != "markdown":
                raise ExerciseError(f"{source}: cell {i}: an 'exercise' cell must be markdown and not also a solution")
            if not answered:
                raise ExerciseError(f"{source}: cell {i}: the exercise before it has no 'solution' cell")
            count += 1
            current, answered = _number(cell.source, count), False
            numbers.setdefault(current, exercise_kind(cell.source))
            cells.append(_relinked(cell))
        elif SOLUTION_TAG in tags:
            prev = _tags(nb.cells[i - 1]) if i else []
            if not (EXERCISE_TAG in prev or SOLUTION_TAG in prev):
                raise ExerciseError(f"{source}: cell {i}: a 'solution' cell must follow an 'exercise' cell "
                                    "or another solution")
            answered = True
            stub = copy.deepcopy(cell)
            stub.metadata["tags"] = [t for t in tags if t != SOLUTION_TAG] + ["stub"]
            stub.source = (stub_source(cell.source, current, PREDICTION_TAG in tags) if cell.cell_type == "code"
                           else f"*Exercise {current}: your answer here.*")
            cells.append(stub)
        else:
            cells.append(_relinked(cell))
    if not answered:
        raise ExerciseError(f"{source}: the last exercise has no 'solution' cell")
    out.cells = [_notice(source)] + _retitle(cells)
    return out, numbers


def _relinked(cell):
    new = copy.deepcopy(cell)
    if new.cell_type == "markdown":
        new.source = relink(new.source)
    return new


def _notice(source: Path):
    rel = _rel(source)
    return new_markdown_cell(
        f"**Generated file, do not edit:** the exercise version of `{rel}`, written by `{COMMAND}`.\n"
        f"Edit `{rel}` (cells tagged `exercise` / `solution`) and regenerate. The worked solutions are in\n"
        f"`{rel.removesuffix('.py')}.ipynb`, the answers for instructors in `docs/workshop_answers.md`.")


def _retitle(cells: list) -> list:
    """Mark the title (first markdown heading) as the exercise version."""
    if cells and cells[0].cell_type == "markdown" and cells[0].source.startswith("# "):
        first, _, rest = cells[0].source.partition("\n")
        cells[0].source = f"{first} (exercises)\n" + rest
    return cells


def _cell_id(index: int, cell) -> str:
    """A stable id (nbformat >= 4.5 wants one per cell), so regenerating gives the same bytes."""
    return hashlib.sha1(f"{index}\0{cell.cell_type}\0{cell.source}".encode()).hexdigest()[:8]


def render(source: Path) -> Generated:
    """Both generated files of ``source`` as text (nothing is written)."""
    nb, count = exercise_notebook(source)
    if not count:
        raise ExerciseError(f"{source}: no cell tagged 'exercise'")
    py = exercise_path(source)
    py_text = jupytext.writes(nb, fmt="py:percent")
    ipynb_nb = copy.deepcopy(nb)
    ipynb_nb.metadata = {"jupytext": {"cell_metadata_filter": "tags,-all"}, "kernelspec": dict(KERNELSPEC)}
    paired = source.with_suffix(".ipynb")
    if paired.is_file():  # the tutorial's own kernelspec, when it has one
        paired_meta = json.loads(paired.read_text()).get("metadata", {})
        ipynb_nb.metadata["kernelspec"] = paired_meta.get("kernelspec", KERNELSPEC)
    ipynb_nb.nbformat, ipynb_nb.nbformat_minor = 4, 5
    for i, cell in enumerate(ipynb_nb.cells):
        cell["id"] = _cell_id(i, cell)
        cell.metadata = {"tags": cell.metadata["tags"]} if cell.metadata.get("tags") else {}
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.validate(ipynb_nb)
    ipynb_text = nbformat.writes(ipynb_nb) + "\n"
    return Generated(source, py, py_text, py.with_suffix(".ipynb"), ipynb_text, count, exercise_kinds(source))


def sources(names: list[Path] | None = None, folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The notebook sources to generate from: those named, else every ``NN_topic.py`` with an exercise."""
    if names:
        for p in names:
            if not p.is_file() or p.suffix != ".py":
                raise ExerciseError(f"{p}: no such notebook source (expected notebooks/NN_topic.py)")
        return [p.resolve() for p in names]
    return [p for p in sorted(folder.glob("[0-9][0-9]_*.py")) if has_exercises(p)]


def generate(names: list[Path] | None = None, folder: Path = NOTEBOOK_DIR) -> list[Generated]:
    """Write the exercise notebooks (atomically); returns what was written."""
    done = [render(src) for src in sources(names, folder)]
    for g in done:
        atomic_write_text(g.py_text, g.py)
        atomic_write_text(g.ipynb_text, g.ipynb)
    return done


def stale(names: list[Path] | None = None, folder: Path = NOTEBOOK_DIR) -> list[str]:
    """One line per generated file that is missing or differs from what :func:`generate` would write, and per
    ``*_ex.py`` / ``*_ex.ipynb`` in the exercises folder whose source no longer has exercises."""
    problems: list[str] = []
    rendered = [render(src) for src in sources(names, folder)]
    for g in rendered:
        for path, text in ((g.py, g.py_text), (g.ipynb, g.ipynb_text)):
            if not path.is_file():
                problems.append(f"{_rel(path)}: missing; run `{COMMAND}`")
            elif path.read_text() != text:
                problems.append(f"{_rel(path)}: stale (differs from {_rel(g.source)}); run `{COMMAND}`")
    if not names:
        expected = {p for g in rendered for p in (g.py, g.ipynb)}
        exdir, known = folder / "exercises", {e.resolve() for e in expected}
        for path in sorted(exdir.glob("*_ex.py")) + sorted(exdir.glob("*_ex.ipynb")):
            if path.resolve() not in known:
                problems.append(f"{_rel(path)}: generated from no notebook with exercises; delete it or tag its source")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swinunetr_lib.notebooks.exercises",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["generate", "check"],
                        help="write the exercise notebooks, or check they are current")
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="NN_topic.py sources (default: every one with exercises)")
    args = parser.parse_args(argv)

    def body() -> int:
        if args.command == "generate":
            for g in generate(args.notebooks or None):
                kinds = ", ".join(f"{k} {n}" for k, n in g.kinds.items())
                print(f"{_rel(g.source)}: {g.exercises} exercises ({kinds}) -> {_rel(g.py)}, {_rel(g.ipynb)}")
            return 0
        problems = stale(args.notebooks or None)
        for line in problems:
            print(line, file=sys.stderr)
        if not problems:
            print("exercise notebooks are up to date")
        return 1 if problems else 0

    return run_cli("python -m swinunetr_lib.notebooks.exercises", body)


if __name__ == "__main__":
    sys.exit(main())
