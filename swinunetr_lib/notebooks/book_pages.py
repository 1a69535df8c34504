"""The pages of the book (:mod:`swinunetr_lib.notebooks.book`): an executed notebook made ready to be read without
running it, and the front page's tables of contents.

An executed notebook (papermill's output of ``python -m swinunetr_lib.notebooks run``) gets, after its title cell
(the goal and the expected runtimes, as every notebook starts), a box with the parameters this run used (papermill's
``metadata.papermill.parameters`` beside the defaults and the comments of the notebook's parameters cell), how long
it ran, links to its source, its student version and itself, and a "run it yourself" box with the two commands.
Widgets (progress bars, the slice scroller, NiiVue) need a kernel: each becomes one line saying what JupyterLab
shows there, and the widgets' saved state (16 MB in notebook 05) is dropped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import nbformat

from .runner import NotebookError, NotebookParameter, parse_parameter_cell

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
SHOWN_CHARS = 60  # a parameter value longer than this is cut in the table


@dataclass
class Lesson:
    """One executed notebook as the book shows it."""

    stem: str                              # NN_topic
    title: str                             # the first heading of its title cell
    seconds: float | None = None           # papermill's duration of this run
    ended: str = ""                        # papermill's end time, ISO date
    failed: bool = False                   # papermill recorded an exception: the run stopped in a cell
    parameters: dict[str, Any] = field(default_factory=dict)  # the values injected (papermill's metadata)
    widgets: int = 0                       # widget outputs replaced by a line of text
    has_exercises: bool = False            # a student version exists (notebooks/exercises/NN_topic_ex.ipynb)


def first_heading(nb: Any, fallback: str) -> str:
    """The text of the first ``# heading`` of the notebook's markdown cells."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, flags=re.M)
            if m:
                return m.group(1).strip()
    return fallback


def _widget_line(text: str) -> str:
    """What a widget output becomes in the book: one line saying what it is."""
    if "%|" in text or "it/s]" in text:
        what = "a progress bar"
    else:
        what = "an interactive view (menus, sliders or a 3D viewer)"
    return f"*Here JupyterLab shows {what}, a live widget that needs a running notebook.*"


def replace_widgets(nb: Any) -> int:
    """Drop the saved widget state and turn each widget output into one line of text; the number replaced."""
    nb.metadata.pop("widgets", None)
    n = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for i, out in enumerate(cell.get("outputs", [])):
            data = out.get("data") or {}
            if WIDGET_VIEW in data:
                text = str(data.get("text/plain", ""))
                cell.outputs[i] = nbformat.v4.new_output("display_data", data={"text/markdown": _widget_line(text)})
                n += 1
    return n


def _cell(nb: Any, tag: str) -> Any | None:
    return next((c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])), None)


def _shown(value: Any) -> str:
    """A value in a table cell: its repr, cut to :data:`SHOWN_CHARS`, inside a code span."""
    text = repr(value)
    if len(text) > SHOWN_CHARS:
        text = text[: SHOWN_CHARS - 1] + "…"
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`"


def parameters_table(specs: dict[str, NotebookParameter], ran: dict[str, Any]) -> str:
    """A Markdown table: each parameter, the value this run used (bold where it is not the default), the default
    and its comment."""
    rows = ["| parameter | this run | default | what it means |", "|---|---|---|---|"]
    for name, spec in specs.items():
        value = ran.get(name, spec.default)
        used = _shown(value)
        if name in ran and ran[name] != spec.default:
            used = f"**{used}**"
        rows.append(f"| `{name}` | {used} | {_shown(spec.default)} | {spec.help.replace('|', '/')} |")
    for name in sorted(set(ran) - set(specs)):  # injected but not in the parameters cell (papermill allows it)
        rows.append(f"| `{name}` | **{_shown(ran[name])}** | (none) | not a parameter of this notebook |")
    return "\n".join(rows)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "time not recorded"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def header_markdown(lesson: Lesson, table: str, runs_label: str) -> str:
    """The boxes under a lesson's title: this run (parameters, time, files) and "run it yourself"."""
    stem = lesson.stem
    when = f" on {lesson.ended}" if lesson.ended else ""
    status = ("**This run stopped with an error**: the page shows the cells up to the failing one. "
              if lesson.failed else "")
    files = [f"{{download}}`source ({stem}.py) <{stem}.py>`"]
    if lesson.has_exercises:
        files.append(f"{{download}}`student version ({stem}_ex.ipynb) <exercises/{stem}_ex.ipynb>`")
    files.append(f"{{download}}`this executed notebook <{stem}.ipynb>`")
    changed = "the values in bold differ from the notebook's defaults" if lesson.parameters else \
        "no parameter was injected: the notebook's defaults"
    return f"""::::{{admonition}} This run: `{runs_label}`, {_duration(lesson.seconds)}{when}
:class: note

{status}Executed by papermill (`python -m swinunetr_lib.notebooks run`) and shown here as it ran, without running
anything again; the runtimes above are what to expect on your machine. Parameters ({changed}):

{table}

Files: {" · ".join(files)}.
::::

::::{{admonition}} Run it yourself
:class: tip

```bash
make demo   # creates .venv, installs the project, runs every notebook on the demo data -> runs/demo/
make test   # same environment; ruff, pytest, every notebook with ci/params/smoke/, and a real-browser check
```

This notebook alone, with the demo's parameters:
`python -m swinunetr_lib.notebooks run notebooks/{stem}.py --params ci/params/demo`;
in JupyterLab: `make lab`, then open `notebooks/{stem}.ipynb`{" (or the student version in `notebooks/exercises/`)"
                                                             if lesson.has_exercises else ""}.
::::
"""


def prepare_lesson(nb: Any, stem: str, runs_label: str, *, has_exercises: bool, where: str) -> Lesson:
    """Make the executed notebook ``nb`` (changed in place) a page of the book and describe it."""
    meta = nb.metadata.get("papermill", {}) or {}
    lesson = Lesson(stem=stem, title=first_heading(nb, stem), seconds=meta.get("duration"),
                    ended=str(meta.get("end_time") or "")[:10], failed=bool(meta.get("exception")),
                    parameters=dict(meta.get("parameters") or {}), has_exercises=has_exercises)
    lesson.widgets = replace_widgets(nb)
    params_cell = _cell(nb, "parameters")
    if params_cell is None:
        raise NotebookError(f"{where}: no parameters cell (tags=['parameters']); is this one of notebooks/NN_*.ipynb?")
    specs = parse_parameter_cell(params_cell.source, where)
    header = nbformat.v4.new_markdown_cell(header_markdown(lesson, parameters_table(specs, lesson.parameters),
                                                           runs_label))
    title_at = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"), -1)
    nb.cells.insert(title_at + 1, header)
    return lesson


def toctree(caption: str, entries: list[str]) -> str:
    """A hidden MyST toctree (the sidebar's section ``caption``); empty when there is nothing to list."""
    if not entries:
        return ""
    lines = "\n".join(entries)
    return f"\n```{{toctree}}\n:hidden:\n:caption: {caption}\n\n{lines}\n```\n"
