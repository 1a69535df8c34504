"""Exercise notebooks (swinunetr_lib.notebooks.exercises): generated from tagged solutions, current, runnable."""
from __future__ import annotations

import ast
import builtins
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat
import pytest

from swinunetr_lib.notebooks.exercises import (
    KINDS,
    ExerciseError,
    exercise_kinds,
    exercise_notebook,
    generate,
    relink,
    render,
    sources,
    stale,
    stub_source,
)
from swinunetr_lib.notebooks.runner import load_params_file, parameters_cells
from swinunetr_lib.paths import REPO_ROOT

SOURCES = sources()
TOY = '''# %% [markdown]
# # 99 · Toy
# Goal: a toy. Runtime: 1 s on CPU.

# %% tags=["parameters"]
n: int = 3  # how many

# %% [markdown] tags=["exercise"]
# **Exercise 1.** Predict the square of n.

# %% tags=["solution"]
# stub: square = None
square = n * n
square

# %% [markdown] tags=["solution"]
# It is n times n.

# %%
print("square:", square)

# %% [markdown]
# ## Recap
'''


def _toy(folder: Path, text: str = TOY) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    py = folder / "99_toy.py"
    py.write_text(text)
    return py


def test_every_notebook_has_exercises():
    """At least one exercise in each of 00-06 (#26: 00, 01, 04 and 05 had none), each of a named kind."""
    assert [p.name[:2] for p in SOURCES] == ["00", "01", "02", "03", "04", "05", "06"]
    for p in SOURCES:
        _, count = exercise_notebook(p)
        assert 1 <= count <= 6, f"{p.name}: {count} exercises"
        kinds = exercise_kinds(p)
        assert set(kinds) <= set(KINDS) and sum(kinds.values()) == count, f"{p.name}: {kinds}"


def _by_exercise(nb) -> dict[int, list]:
    """The cells of each exercise number: its question(s) and the solutions after each."""
    groups: dict[int, list] = {}
    current = None
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "exercise" in tags:
            current = int(cell.source.split("Exercise", 1)[1].split()[0].strip(".,*"))
            groups.setdefault(current, []).append(cell)
        elif "solution" in tags and current is not None:
            groups[current].append(cell)
        else:
            current = None
    return groups


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_exercises_are_predict_first(source):
    """#26: each exercise asks for a written prediction before anything reveals the answer, in a cell of its own
    right after the question (`prediction = None` in the exercise version, a worked guess in the tutorial), sized
    for 5 minutes, and compares it with the computed value through check_prediction."""
    for number, cells in _by_exercise(jupytext.read(source)).items():
        question, first = cells[0], cells[1]
        assert "5 min" in question.source, f"{source.name}: exercise {number} is not sized"
        assert first.cell_type == "code" and {"solution", "prediction"} <= set(first.metadata["tags"]), \
            f"{source.name}: exercise {number} does not start with its prediction cell"
        assert "# stub: prediction = None" in first.source and "\nprediction = " in "\n" + first.source
        assert "prediction = None" not in first.source.replace("# stub: prediction = None", "")
        checks = [c for c in cells[2:] if c.cell_type == "code" and "check_prediction(prediction" in c.source]
        assert checks, f"{source.name}: exercise {number} never compares the prediction"
        for c in cells[2:]:   # every code solution is scaffolded, never a blank cell
            if c.cell_type == "code":
                assert "# stub:" in c.source, f"{source.name}: exercise {number} has a solution without a stub"


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_three_self_check_questions_with_answers(source):
    cells = [c for c in jupytext.read(source).cells if "selfcheck" in c.metadata.get("tags", [])]
    assert len(cells) == 1, source.name
    text = cells[0].source
    assert text.count("<details><summary>Answer</summary>") == 3 == text.count("</details>")
    assert [f"**{i}.**" in text for i in (1, 2, 3)] == [True] * 3


def test_relink_moves_relative_links_one_folder_down():
    text = "[g](../docs/glossary.md#hu), [w](https://x.org/a), [a](#top), [r](/abs), [n](02_x.ipynb) ![i](fig.png)"
    assert relink(text) == ("[g](../../docs/glossary.md#hu), [w](https://x.org/a), [a](#top), [r](/abs), "
                            "[n](../02_x.ipynb) ![i](../fig.png)")


def test_generated_files_are_current():
    """`make test` fails when a tutorial changed and its exercise notebook was not regenerated."""
    proc = subprocess.run([sys.executable, "-m", "swinunetr_lib.notebooks.exercises", "check"], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_solutions_are_replaced_and_the_rest_is_kept(source):
    src = jupytext.read(source)
    ex = jupytext.reads(render(source).py_text, "py:percent")
    solutions = [c for c in src.cells if "solution" in c.metadata.get("tags", [])]
    stubs = [c for c in ex.cells if "stub" in c.metadata.get("tags", [])]
    assert solutions and len(stubs) == len(solutions)
    assert not [c for c in ex.cells if "solution" in c.metadata.get("tags", [])]
    text = render(source).py_text
    for sol in solutions:  # no line of a solution survives, except the lines its stubs give away on purpose
        stubs = {ln.split("# stub:", 1)[1].strip() for ln in sol.source.splitlines() if "# stub:" in ln}
        body = [ln for ln in sol.source.splitlines() if ln.strip() and not ln.lstrip().startswith("# stub:")
                and ln.strip() not in stubs]
        assert not [ln for ln in body if ln in text.splitlines() and len(ln.strip()) > 25], sol.source[:200]
    kept = [c.source if c.cell_type == "code" else relink(c.source) for c in src.cells
            if not {"solution"} & set(c.metadata.get("tags", []))]
    assert [c.source for c in ex.cells if "stub" not in c.metadata.get("tags", [])][2:] == kept[1:]
    assert ex.cells[1].source.splitlines()[0].endswith("(exercises)")
    assert "Generated file, do not edit" in ex.cells[0].source and source.name in ex.cells[0].source
    # the parameters cell is the source's, so the same parameter files apply
    assert parameters_cells(ex)[0].source == parameters_cells(src)[0].source
    for c in ex.cells:
        if c.cell_type == "code":
            ast.parse(c.source)


def _defined(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.comprehension):
            names |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
    return names


def undefined_names(nb) -> set[str]:
    """Names a code cell reads that no earlier cell (nor the cell itself) defines."""
    known, missing = set(dir(builtins)) | {"display", "get_ipython"}, set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        mine = _defined(tree)
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        missing |= used - known - mine
        known |= mine
    return missing


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_exercise_notebook_defines_every_name_later_cells_use(source):
    """Stubs must keep the exercise notebook runnable top to bottom: no name it reads is left undefined
    that the tutorial defines (checked statically; the browser test runs 02's exercise notebook)."""
    ex = jupytext.reads(render(source).py_text, "py:percent")
    assert undefined_names(ex) <= undefined_names(jupytext.read(source))


@pytest.mark.slow
@pytest.mark.after_smoke
@pytest.mark.parametrize("source", [p for p in SOURCES if not p.name.startswith("02_")],
                         ids=[p.stem for p in SOURCES if not p.name.startswith("02_")])
def test_exercise_notebook_runs_with_smoke_parameters(source, tmp_path, monkeypatch):
    """Papermill runs the exercise notebook top to bottom with its source's smoke parameters (02's runs in
    the browser test below).

    Where ``$SWINUNETR_SMOKE_RUNS`` names a finished smoke run (``make test``), the exercise notebook starts from a
    copy of its data and runs folders, as a student who ran the lessons first: the trainings are the lesson's own
    cells with the same parameters, so they resume at their last step instead of training again (the stubs replace
    only analysis cells), and every cell runs. Without it (``pytest`` alone) it starts from empty folders."""
    from swinunetr_lib.notebooks.runner import run_notebook

    ex_py = render(source).py
    params = load_params_file(REPO_ROOT / "ci" / "params" / "smoke" / f"{source.stem}.yml", ex_py)
    smoke = _from_smoke_run(tmp_path)
    trained = _logged_steps(tmp_path / "artifacts")
    monkeypatch.setenv("SWINUNETR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SWINUNETR_RUNS_DIR", str(tmp_path / "artifacts"))
    run = run_notebook(ex_py, params, tmp_path / "out", progress=False)
    assert run.ok, run.error
    executed = nbformat.read(run.output, as_version=4)
    stubs = [c for c in executed.cells if "stub" in c.metadata.get("tags", [])]
    assert stubs and all(c.cell_type == "markdown" or c.execution_count for c in stubs)
    if smoke:  # the lessons' finished trainings were resumed at their last step, not trained again
        after = _logged_steps(tmp_path / "artifacts")
        assert {run: after[run] for run in trained} == trained


def _from_smoke_run(tmp_path: Path) -> bool:
    """Copy the data and runs folders of the smoke run ``$SWINUNETR_SMOKE_RUNS`` names (if any) to ``tmp_path``."""
    smoke = os.environ.get("SWINUNETR_SMOKE_RUNS")
    for folder in ("data", "artifacts") if smoke else ():
        shutil.copytree(Path(smoke) / folder, tmp_path / folder, symlinks=True)
    return bool(smoke)


def _logged_steps(runs: Path) -> dict[str, int]:
    """Rows of every metrics.csv under ``runs`` (one per logged step), by run folder."""
    return {str(f.parent.relative_to(runs)): f.read_text().count("\n") for f in sorted(runs.rglob("metrics.csv"))}


def test_stub_lines_become_code():
    assert stub_source("# stub: a = 1\n# stub: b = None  # later cells read b\na = 2 * 3", 4) == \
        "# Exercise 4: your code here\na = 1\nb = None  # later cells read b"
    loop = "# stub: for i in range(2):\n# stub:     total = i\ntotal = 1"   # indentation kept: a stub may hold a loop
    assert stub_source(loop, 1) == "# Exercise 1: your code here\nfor i in range(2):\n    total = i"
    ast.parse(stub_source(loop, 1))
    assert stub_source("# stub: prediction = None\nprediction = 3", 2, prediction=True).splitlines() == \
        ["# Exercise 2: your prediction, written before running anything below", "prediction = None"]


def test_generate_check_and_stale_detection(tmp_path):
    py = _toy(tmp_path / "nb")
    assert stale(folder=py.parent) == [f"{py.parent / 'exercises' / '99_toy_ex.py'}: missing; run "
                                       "`python -m swinunetr_lib.notebooks.exercises generate`",
                                       f"{py.parent / 'exercises' / '99_toy_ex.ipynb'}: missing; run "
                                       "`python -m swinunetr_lib.notebooks.exercises generate`"]
    [g] = generate(folder=py.parent)
    assert g.exercises == 1 and stale(folder=py.parent) == []
    ex = (tmp_path / "nb" / "exercises" / "99_toy_ex.py").read_text()
    assert "square = n * n" not in ex and "square = None" in ex and "It is n times n" not in ex
    assert "*Exercise 1: your answer here.*" in ex
    raw = json.loads(g.ipynb.read_text())
    nbformat.validate(nbformat.reads(g.ipynb.read_text(), as_version=4))
    assert raw["metadata"]["kernelspec"]["name"] == "python3"
    assert all(c.get("outputs", []) == [] for c in raw["cells"])
    first = g.ipynb.read_bytes()
    generate(folder=py.parent)
    assert g.ipynb.read_bytes() == first, "regenerating must give the same bytes"
    py.write_text(TOY.replace("n * n", "n ** 2"))  # a changed solution does not show in the exercise version
    assert stale(folder=py.parent) == []
    py.write_text(TOY.replace('print("square:"', 'print("n squared:"'))  # any other edit leaves it stale
    problems = stale(folder=py.parent)
    assert len(problems) == 2 and "99_toy_ex.py: stale" in problems[0] and "99_toy_ex.ipynb: stale" in problems[1]
    orphan = py.parent / "exercises" / "98_gone_ex.py"
    orphan.write_text("# %%\n")
    assert any("98_gone_ex.py: generated from no notebook" in p for p in stale(folder=py.parent))


def test_check_command_exits_nonzero_naming_the_stale_file(tmp_path):
    shutil.copytree(REPO_ROOT / "notebooks", tmp_path / "notebooks")   # a copy whose 02 source changed
    src = tmp_path / "notebooks" / "02_ssl_pretraining.py"
    heading = "**Exercise 1 (predict, 5 min).**"
    src.write_text(src.read_text().replace(heading, f"{heading} (edited)"))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "swinunetr_lib.notebooks.exercises", *args, str(src)],
                              capture_output=True, text=True, cwd=REPO_ROOT)

    proc = cli("check")
    assert proc.returncode == 1
    assert "02_ssl_pretraining_ex.py: stale" in proc.stderr and "03_finetune" not in proc.stderr
    assert cli("generate").returncode == 0 and cli("check").returncode == 0
    assert "(edited)" in (tmp_path / "notebooks" / "exercises" / "02_ssl_pretraining_ex.ipynb").read_text()


def test_convention_errors_name_the_cell(tmp_path):
    lonely = TOY.replace('# %% [markdown] tags=["exercise"]\n', "# %% [markdown]\n")
    with pytest.raises(ExerciseError, match=r"99_toy.py: cell 3: a 'solution' cell must follow"):
        exercise_notebook(_toy(tmp_path / "a", lonely))
    unanswered = TOY.replace('# %% tags=["solution"]\n', "# %%\n").replace('# %% [markdown] tags=["solution"]\n',
                                                                           "# %% [markdown]\n")
    with pytest.raises(ExerciseError, match="the last exercise has no 'solution' cell"):
        exercise_notebook(_toy(tmp_path / "b", unanswered))
    with pytest.raises(ExerciseError, match="no such notebook source"):
        generate([tmp_path / "nope.py"])


# ------------------------------------------------------------------------------------------ in the browser
def _browser_check():
    """ci/browser_check.py, imported by path (registered first: its dataclasses look their module up)."""
    if "browser_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location("browser_check", REPO_ROOT / "ci" / "browser_check.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["browser_check"] = module
        spec.loader.exec_module(module)
    return sys.modules["browser_check"]


@pytest.mark.browser
@pytest.mark.slow
def test_exercise_notebook_runs_in_jupyterlab(tmp_path):
    """notebooks/exercises/02_ssl_pretraining_ex.ipynb, with the smoke parameters of its source, run with
    "Run All Cells" in JupyterLab in headless Chromium: every cell executes, no error output, figures render.
    After the smoke run (``make test``) it starts from a copy of its folders, as the test above does."""
    bc = _browser_check()
    if not Path(bc.CHROMIUM).is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{bc.CHROMIUM} missing in CI: {bc.INSTALL_HINT}")
        pytest.skip(f"{bc.CHROMIUM} not installed ({bc.INSTALL_HINT})")
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook
    from playwright.sync_api import sync_playwright

    ex = REPO_ROOT / "notebooks" / "exercises" / "02_ssl_pretraining_ex.ipynb"
    params = load_params_file(REPO_ROOT / "ci" / "params" / "smoke" / "02_ssl_pretraining.yml",
                              REPO_ROOT / "notebooks" / "02_ssl_pretraining.py")
    out = REPO_ROOT / "runs" / "browser_exercises"   # JupyterLab serves the repository
    shutil.rmtree(out, ignore_errors=True)
    dest = out / "notebooks" / ex.name
    dest.parent.mkdir(parents=True)
    nbformat.write(parameterize_notebook(load_notebook_node(str(ex)), params, report_mode=False), dest)
    _from_smoke_run(tmp_path)
    env = dict(os.environ, SWINUNETR_DATA_DIR=str(tmp_path / "data"), SWINUNETR_RUNS_DIR=str(tmp_path / "artifacts"),
               MPLBACKEND="Agg")
    settings = Path(tempfile.mkdtemp(prefix="lab-settings-"))
    env["JUPYTER_RUNTIME_DIR"] = str(settings / "runtime")
    port = bc.free_port()
    proc = bc.start_lab(port, settings, env, out / "jupyterlab.log")
    try:
        bc.wait_http(f"http://127.0.0.1:{port}/api/status", proc, 120, out / "jupyterlab.log")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=bc.CHROMIUM, args=bc.CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(60_000)
                result = bc.check_notebook(page, f"http://127.0.0.1:{port}", str(dest.relative_to(REPO_ROOT)), "run",
                                           out, 600)
            finally:
                browser.close()
    finally:
        bc.stop_lab(proc)
        shutil.rmtree(settings, ignore_errors=True)
    assert result.ok, result.errors
    assert result.executed_cells == result.code_cells > 0
    assert result.rendered_imgs >= result.png_outputs > 0
    stubs = sum("stub" in c.metadata.get("tags", []) for c in nbformat.read(dest, as_version=4).cells)
    assert stubs >= 3
