"""The notebook runner: a failing cell names the notebook and the cell; bad parameter files are refused."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import pytest

from swinunetr_lib.notebooks.runner import (
    NotebookError,
    check_pair,
    load_params_file,
    parse_parameter_cell,
    parse_parameters,
    run_all,
    tagged_view,
)

SOURCE = '''# %% [markdown]
# # Toy
# Goal: a toy. Expected runtime: 1 s on CPU.

# %% tags=["parameters"]
steps = 2  # how many
fail_at = -1  # the step that raises, -1 never

# %%
import os
print(os.environ["SWINUNETR_RUNS_DIR"])
for i in range(steps):
    if i == fail_at:
        raise RuntimeError(f"boom at {i}")
print("done", steps)
'''


def make_pair(folder: Path, name: str = "00_toy") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    py = folder / f"{name}.py"
    py.write_text(SOURCE)
    nb = jupytext.read(py)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    jupytext.write(nb, py.with_suffix(".ipynb"))
    return py


def test_run_succeeds_with_params_and_isolated_dirs(tmp_path):
    py = make_pair(tmp_path / "nb")
    params = tmp_path / "params"
    params.mkdir()
    (params / "00_toy.yml").write_text("steps: 3\n")
    runs = run_all([py], params, tmp_path / "out", progress=False)
    assert runs[0].ok, runs[0].error
    text = (tmp_path / "out" / "00_toy.ipynb").read_text()
    assert "done 3" in text and str(tmp_path / "out" / "artifacts") in text


def test_failing_cell_names_notebook_and_cell_and_keeps_partial_output(tmp_path):
    py = make_pair(tmp_path / "nb")
    params = tmp_path / "params"
    params.mkdir()
    (params / "00_toy.yml").write_text("fail_at: 1\n")
    runs = run_all([py], params, tmp_path / "out", progress=False)
    assert not runs[0].ok
    assert "00_toy.py failed in cell" in runs[0].error and "boom at 1" in runs[0].error
    assert (tmp_path / "out" / "00_toy.ipynb").exists()


def test_misspelled_and_mistyped_parameters(tmp_path):
    py = make_pair(tmp_path / "nb")
    bad = tmp_path / "00_toy.yml"
    bad.write_text("step: 3\n")
    with pytest.raises(NotebookError, match=r"00_toy.yml: unknown parameter 'step' \(did you mean 'steps'\?\)"):
        load_params_file(bad, py)
    bad.write_text("steps: three\n")
    with pytest.raises(NotebookError, match="'steps' = 'three' is a str"):
        load_params_file(bad, py)


def test_out_of_sync_pair_is_refused(tmp_path):
    py = make_pair(tmp_path / "nb")
    py.write_text(SOURCE + "\n# %%\nprint('new cell')\n")
    with pytest.raises(NotebookError, match="jupytext --sync"):
        check_pair(py)


def test_cli_exit_codes(tmp_path):
    py = make_pair(tmp_path / "nb")
    params = tmp_path / "params"
    params.mkdir()
    (params / "00_toy.yml").write_text("fail_at: 0\n")
    cmd = [sys.executable, "-m", "swinunetr_lib.notebooks", "run", str(py), "--params", str(params),
           "--output", str(tmp_path / "out"), "--no-progress"]
    failed = subprocess.run(cmd, capture_output=True, text=True)
    assert failed.returncode == 1 and "FAILED" in failed.stdout and "00_toy.py failed in cell" in failed.stdout
    (params / "00_toy.yml").write_text("fail_att: 0\n")
    refused = subprocess.run(cmd, capture_output=True, text=True)
    assert refused.returncode == 2 and "fail_att" in refused.stderr
    missing = subprocess.run(cmd[:6] + [str(tmp_path / "no_such_dir")] + cmd[7:], capture_output=True, text=True)
    assert missing.returncode == 2 and "no_such_dir: --params must be a folder" in missing.stderr
    assert not (tmp_path / "out" / "00_toy.ipynb").exists() or refused.returncode == 2


TYPED_CELL = """\
steps: int = 2  # how many
lr: float = 1e-3  # AdamW learning rate
spacing: "Optional[list[float]]" = [3.0, 3.0]  # voxel size in mm; None keeps the grid
names: list[str] = ["a"]  # which
tag = ""  # not annotated: checked against the default's type
"""


def test_annotated_parameters_are_parsed_with_type_and_help():
    params = parse_parameter_cell(TYPED_CELL, "cell")
    assert parse_parameters(TYPED_CELL, "cell") == {"steps": 2, "lr": 1e-3, "spacing": [3.0, 3.0], "names": ["a"],
                                                    "tag": ""}
    assert params["steps"].annotation is int and params["steps"].help == "how many"
    assert params["spacing"].type_text == "Optional[list[float]]" and params["tag"].annotation is None
    with pytest.raises(NotebookError, match=r"'steps' default 'x' does not match its annotation int"):
        parse_parameter_cell('steps: int = "x"  # how many\n', "cell")
    with pytest.raises(NotebookError, match="annotation 'Path' is not understood"):
        parse_parameter_cell('out: Path = "a"  # folder\n', "cell")
    with pytest.raises(NotebookError, match="line 1 is not 'name: type = plain value'"):
        parse_parameter_cell("steps: int  # no value\n", "cell")


def test_annotated_parameters_type_check(tmp_path):
    py = make_pair(tmp_path / "nb")
    py.write_text(SOURCE.replace("steps = 2  # how many\nfail_at = -1", TYPED_CELL + "fail_at: int = -1"))
    params = tmp_path / "00_toy.yml"
    params.write_text("lr: 1\nspacing: null\nnames: [b, c]\nsteps: 3\n")
    values = load_params_file(params, py)
    assert values == {"lr": 1.0, "spacing": None, "names": ["b", "c"], "steps": 3} and isinstance(values["lr"], float)
    for bad, needle in [("steps: three", "'steps' = 'three' is a str, the notebook declares steps: int = 2"),
                        ("steps: 2.5", "'steps' = 2.5 is a float"), ("steps: true", "'steps' = True is a bool"),
                        ("names: [1]", "names: list[str]"), ("spacing: [1, x]", "Optional[list[float]]"),
                        ("tag: 3", "'tag' = 3 is a int, the notebook's default '' is a str")]:
        params.write_text(bad + "\n")
        with pytest.raises(NotebookError, match=re.escape(needle)):
            load_params_file(params, py)


def test_params_command_shows_types_and_help(tmp_path):
    py = make_pair(tmp_path / "nb")
    py.write_text(SOURCE.replace("steps = 2", "steps: int = 2"))
    out = subprocess.run([sys.executable, "-m", "swinunetr_lib.notebooks", "params", str(py)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["steps: int = 2  # how many", "fail_at = -1  # the step that raises, -1 never"]


BILLION_LAUGHS = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
steps: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_yaml_alias_bomb_is_refused_at_once(tmp_path):
    """Issue #27: nested aliases (9 levels, 9^9 strings once expanded) are refused in one line within a second."""
    py = make_pair(tmp_path / "nb")
    bomb = tmp_path / "00_toy.yml"
    bomb.write_text(BILLION_LAUGHS)
    start = time.perf_counter()
    with pytest.raises(NotebookError) as err:
        load_params_file(bomb, py)
    assert time.perf_counter() - start < 1
    message = str(err.value)
    assert len(message.splitlines()) == 1 and len(message) < 400
    assert message.startswith(f"{bomb}: line 1: YAML anchors and aliases")
    bomb.write_text("x: &a 1\n")  # an anchor alone is refused too
    with pytest.raises(NotebookError, match="line 1: YAML anchors and aliases"):
        load_params_file(bomb, py)


def test_huge_value_is_cut_in_the_error_message(tmp_path):
    py = make_pair(tmp_path / "nb")
    bad = tmp_path / "00_toy.yml"
    bad.write_text("steps: [" + ", ".join(["'" + "x" * 1000 + "'"] * 1000) + "]\n? " + "y" * 5000 + "\n: 1\n")
    with pytest.raises(NotebookError) as err:
        load_params_file(bad, py)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and len(message) < 1000 and "'steps' = ['xxx" in message


def test_tagged_view_keeps_the_setup_and_the_tagged_cells(tmp_path):
    py = tmp_path / "00_view.py"
    py.write_text('# %% [markdown]\n# # Toy\n\n# %%\nimport math\n\n# %% tags=["parameters"]\nn = 2  # how many\n\n'
                  '# %%\ntrained = n * 10\n\n# %% tags=["precomputed"]\nshown = math.sqrt(n)\n\n'
                  '# %% tags=["solution", "precomputed"]\nalso = 1\n')
    jupytext.write(jupytext.read(py), py.with_suffix(".ipynb"))
    view = nbformat.read(tagged_view(py.with_suffix(".ipynb"), "precomputed", tmp_path / "v.ipynb"), as_version=4)
    assert [c.source for c in view.cells] == ["# Toy", "import math", "n = 2  # how many", "shown = math.sqrt(n)",
                                              "also = 1"]
    with pytest.raises(NotebookError, match="no cell tagged 'missing'"):
        tagged_view(py.with_suffix(".ipynb"), "missing", tmp_path / "w.ipynb")
