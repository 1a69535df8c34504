"""The book (swinunetr_lib.notebooks.book, issue #30): executed notebooks and docs/ as a static site, built offline
from stored outputs. One build of a runs folder made from the real notebooks with outputs written into them
(tests/book_runs.py) serves the checks on the built pages; staging and bad input are checked without Sphinx.
The same site in a real browser: tests/test_browser.py::test_book_reads_in_the_browser."""
from __future__ import annotations

import json
import re

import pytest
from book_runs import INJECTED, PRINTED_WORD, WIDGET_STATE_BYTES, book_repo, executed_runs, figure_png

from swinunetr_lib.notebooks.book import build, doc_pages, find_notebooks, main, stage
from swinunetr_lib.notebooks.runner import NotebookError

# a resource the browser would load from elsewhere: <script src>, <link href>, <img src>, CSS url() / @import
OUTSIDE = re.compile(r"<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)=\"(?:https?:)?//"
                     r"|url\(\s*['\"]?(?:https?:)?//|@import\s+['\"]?(?:url\()?['\"]?(?:https?:)?//", re.I)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("book")
    pytest.importorskip("myst_nb")
    runs = executed_runs(tmp / "runs" / "demo")
    repo = book_repo(tmp / "repo", glossary=True)
    report = build(runs, tmp / "site", repo)
    return tmp / "site", report


def test_book_pages_show_outputs_parameters_and_links(book):
    site, report = book
    assert report["warnings"] == [], report["warnings"]
    lessons = {le["stem"]: le for le in report["lessons"]}
    assert list(lessons) == ["00_quickstart", "02_ssl_pretraining"]
    assert lessons["02_ssl_pretraining"]["parameters"] == INJECTED["02_ssl_pretraining"]
    assert json.loads((site / "build_report.json").read_text())["pages"] == report["pages"]
    page = (site / "notebooks" / "02_ssl_pretraining.html").read_text()
    text = _text(page)
    # the box under the title: this run's parameters beside the defaults (changed values in bold), time, files
    assert re.search(r"This run: demo\s*, 12 s on 2026-12-07", text), text[:2000]
    assert re.search(r"<strong><code[^>]*><span class=\"pre\">3</span></code></strong>", page)
    assert re.search(r"max_steps\s*</span></code></p>\s*</td>\s*<td><p><strong>", page)
    assert "Run it yourself" in text and "make demo" in text and "make test" in text
    downloads = {p.name for p in (site / "_downloads").rglob("*") if p.is_file()}
    assert {"02_ssl_pretraining.py", "02_ssl_pretraining_ex.ipynb", "02_ssl_pretraining.ipynb"} <= downloads
    # 00 holds an exercise too (#26): its student version is linked beside it
    assert "00_quickstart_ex.ipynb" in downloads and "student version" in _text(
        (site / "notebooks" / "00_quickstart.html").read_text())
    # the stored figure is on the page, byte for byte; the printed line too
    png = figure_png()
    shown = [p for p in (site / "_images").glob("*.png") if p.read_bytes() == png]
    assert shown and f"_images/{shown[0].name}" in page
    assert PRINTED_WORD in page
    # the widget became a line of text and its saved state is gone
    assert "JupyterLab shows a progress bar" in text
    assert "x" * 1000 not in page and len(page) < WIDGET_STATE_BYTES
    # the instructors' page, the glossary, the recorded results; the sidebar in the lessons' order
    assert "For instructors" in (site / "docs" / "workshop_answers.html").read_text()
    assert (site / "docs" / "glossary.html").is_file() and (site / "docs" / "results").is_dir()
    index = (site / "index.html").read_text()
    order = [index.find(f'href="{p}"') for p in ("notebooks/00_quickstart.html", "notebooks/02_ssl_pretraining.html",
                                                  "docs/running.html", "docs/measured.html",
                                                  "docs/workshop_answers.html")]
    assert -1 not in order and order == sorted(order), order


def test_book_loads_nothing_from_elsewhere_and_indexes_the_notebooks(book):
    site, _ = book
    files = [p for p in site.rglob("*") if p.suffix in {".html", ".css", ".js"}]
    assert len(files) > 20
    outside = {p.relative_to(site).as_posix(): OUTSIDE.search(p.read_text(errors="replace")).group(0)
               for p in files if OUTSIDE.search(p.read_text(errors="replace"))}
    assert outside == {}
    assert not list(site.rglob("*mathjax*")) and "require.js" not in (site / "index.html").read_text()
    index = (site / "searchindex.js").read_text()
    assert "zygomaticu" in index  # the printed output is searchable (stemmed), as the notebooks' prose is
    assert "02_ssl_pretraining" in index


def test_outside_pattern_finds_cdn_resources():
    """The pattern above finds what the book must not load (so its empty result means something)."""
    for bad in ('<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js">',
                '<link rel="stylesheet" href="//fonts.googleapis.com/css">', "@import url(https://x.org/a.css);",
                "src: url('https://fonts.gstatic.com/x.woff2')"):
        assert OUTSIDE.search(bad), bad
    assert not OUTSIDE.search('<a href="https://github.com/Project-MONAI/MONAI">MONAI</a>')  # a link, not a load


def test_glossary_is_included_when_present_and_not_missed_when_absent(tmp_path):
    runs = executed_runs(tmp_path / "runs", ("00_quickstart",))
    for glossary in (True, False):
        repo = book_repo(tmp_path / f"repo{glossary}", glossary=glossary)
        src = tmp_path / f"src{glossary}"
        _, sections = stage(runs, src, repo)
        workshop = dict(sections)["Workshop"]
        index = (src / "index.md").read_text()
        if glossary:
            assert workshop == ["docs/workshop.md", "docs/glossary.md", "docs/workshop_answers.md"]
            assert "docs/glossary\n" in index
        else:
            assert workshop == ["docs/workshop.md", "docs/workshop_answers.md"] and "glossary" not in index
        listed = [p for _, pages in doc_pages(repo) for p in pages]
        assert sorted(listed) == sorted(p.relative_to(repo).as_posix() for p in (repo / "docs").rglob("*.md"))


def test_an_unpacked_archive_keeps_its_notebooks_in_executed(tmp_path):
    executed_runs(tmp_path / "precomputed" / "executed", ("00_quickstart",))
    (tmp_path / "precomputed" / "executed" / "figures").mkdir()
    assert [p.name for p in find_notebooks(tmp_path / "precomputed")] == ["00_quickstart.ipynb"]


def test_bad_runs_folders_are_named_in_one_line(tmp_path, capsys):
    assert main(["--runs", str(tmp_path / "nowhere"), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nowhere: no such runs folder" in err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.ipynb").write_text("{}")
    assert main(["--runs", str(tmp_path / "empty"), "--out", str(tmp_path / "site")]) == 2
    assert "empty: no executed notebooks (NN_topic.ipynb)" in capsys.readouterr().err
    # a damaged notebook: named, and the book already there is left as it was
    runs = executed_runs(tmp_path / "runs", ("00_quickstart",))
    (runs / "02_ssl_pretraining.ipynb").write_text('{"cells": [')
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("the previous book")
    assert main(["--runs", str(runs), "--out", str(site)]) == 2
    err = capsys.readouterr().err
    assert "02_ssl_pretraining.ipynb: not a readable notebook" in err and err.count("\n") == 1
    assert (site / "index.html").read_text() == "the previous book"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left
    with pytest.raises(NotebookError, match="would replace the runs folder"):
        build(runs, runs)


def test_raw_html_anchors_become_targets_the_book_resolves():
    """The glossary's anchors (``- <a id="hu"></a>**HU.** ...``, which JupyterLab and code hosts follow) become MyST
    targets in the staged copy, each after a blank line so that no list item swallows it."""
    from swinunetr_lib.notebooks.book import anchors_as_targets

    text = 'Intro.\n\n- <a id="hu"></a>**HU.** see [z](#z-score)\n  more\n- <a id="z-score"></a>**Z.** y\n'
    assert anchors_as_targets(text) == ('Intro.\n\n\n(hu)=\n- **HU.** see [z](#z-score)\n  more\n\n(z-score)=\n'
                                        '- **Z.** y\n')
    assert anchors_as_targets("no anchor here\n") == "no anchor here\n"
