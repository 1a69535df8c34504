"""Helpers for the book's tests (tests/test_book.py, tests/test_browser.py): a runs folder of "executed" notebooks made
from the real notebooks/NN_topic.ipynb with outputs written into them as papermill would leave them (a figure, a
printed line, a progress-bar widget with its saved state, papermill's metadata and injected parameters), and a copy
of the repository's pages (README.md, docs/, the notebooks' sources and student versions) to build a book from.
"""
from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
STEMS = ("00_quickstart", "02_ssl_pretraining")
INJECTED = {"02_ssl_pretraining": {"max_steps": 3}}  # 00 runs with its defaults
PRINTED_WORD = "zygomaticus"  # a word only the printed output of notebook 02 holds
WIDGET_STATE_BYTES = 200_000


def figure_png() -> bytes:
    """A small real figure (matplotlib, Agg), as a notebook's ``image/png`` output holds it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2), dpi=60)
    fig.add_subplot().plot([0, 1, 2], [2, 0, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def executed_runs(folder: Path, stems: tuple[str, ...] = STEMS) -> Path:
    """``folder/NN_topic.ipynb`` for ``stems``: the committed notebooks with outputs as papermill leaves them."""
    folder.mkdir(parents=True, exist_ok=True)
    png = base64.b64encode(figure_png()).decode()
    for stem in stems:
        nb = nbformat.read(REPO / "notebooks" / f"{stem}.ipynb", as_version=4)
        params = INJECTED.get(stem, {})
        at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        if params:
            source = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items())
            nb.cells.insert(at + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
        code = next(c for c in nb.cells[at + 1:] if c.cell_type == "code" and "injected-parameters"
                    not in c.metadata.get("tags", []))
        code.outputs = [
            nbformat.v4.new_output("stream", name="stdout", text=f"{stem}: the {PRINTED_WORD} line\n"),
            nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"}),
            nbformat.v4.new_output("display_data", data={
                "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2,
                                                             "version_minor": 0},
                "text/plain": "fit:   0%|          | 0/2 [00:00<?, ?it/s]"}),
        ]
        code.execution_count = 1
        nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
            "state": {"abc": {"model_name": "FloatProgressModel", "state": {"blob": "x" * WIDGET_STATE_BYTES}}},
            "version_major": 2, "version_minor": 0}}
        nb.metadata["papermill"] = {"parameters": params, "duration": 12.5, "exception": None,
                                    "end_time": "2026-12-07T16:36:30.609179+00:00"}
        nbformat.write(nb, folder / f"{stem}.ipynb")
    return folder


def book_repo(folder: Path, *, glossary: bool) -> Path:
    """A copy of the repository's pages: README.md, docs/ (with or without docs/glossary.md), the notebooks' sources
    and their student versions."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "README.md", folder / "README.md")
    shutil.copytree(REPO / "docs", folder / "docs")
    (folder / "notebooks" / "exercises").mkdir(parents=True)
    for p in (REPO / "notebooks").glob("[0-9][0-9]_*.py"):
        shutil.copy2(p, folder / "notebooks" / p.name)
    for p in (REPO / "notebooks" / "exercises").glob("*_ex.ipynb"):
        shutil.copy2(p, folder / "notebooks" / "exercises" / p.name)
    gloss = folder / "docs" / "glossary.md"
    if glossary:  # the real one: the notebooks link its anchors (docs/glossary.md#hu)
        assert gloss.is_file(), "docs/glossary.md is missing from the repository"
    else:
        gloss.unlink(missing_ok=True)
    return folder
