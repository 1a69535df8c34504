"""Project-level invariants: notebook pairs, parameters cells, smoke parameter files, dependency lists."""
from __future__ import annotations

import json
import re

import jupytext
import pytest
import tomllib
import yaml

from swinunetr_lib.notebooks.runner import (
    NotebookError,
    check_pair,
    list_notebooks,
    load_params_file,
    parameters_cells,
    parse_parameters,
)
from swinunetr_lib.paths import REPO_ROOT

NOTEBOOKS = list_notebooks()
ids = [p.stem for p in NOTEBOOKS]


def test_there_are_notebooks():
    assert [p.stem[:2] for p in NOTEBOOKS] == sorted({p.stem[:2] for p in NOTEBOOKS}), "duplicate NN_ prefixes"
    assert NOTEBOOKS and NOTEBOOKS[0].stem == "00_quickstart"


@pytest.mark.parametrize("py", NOTEBOOKS, ids=ids)
def test_pair_in_sync_and_outputs_stripped(py):
    ipynb = check_pair(py)
    raw = json.loads(ipynb.read_text())
    assert raw["metadata"]["kernelspec"]["name"] == "python3", f"{ipynb}: no python3 kernelspec (papermill needs it)"
    for cell in raw["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, f"{ipynb}: outputs committed"


@pytest.mark.parametrize("py", NOTEBOOKS, ids=ids)
def test_one_plain_parameters_cell_after_title(py):
    nb = jupytext.read(py)
    cells = parameters_cells(nb)
    assert len(cells) == 1, f"{py}: {len(cells)} parameters cells"
    params = parse_parameters(cells[0].source, str(py))
    assert params, f"{py}: empty parameters cell"
    for line in cells[0].source.splitlines():
        if "=" in line:
            assert "#" in line, f"{py}: parameter line without a '# what it means' comment: {line!r}"
    title = nb.cells[0]
    assert title.cell_type == "markdown" and title.source.startswith("# "), f"{py}: first cell is not a title"
    text = title.source.lower()
    assert "goal" in text or "you will" in text, f"{py}: title cell does not state the goal"
    assert re.search(r"runtime", text) and "cpu" in text, f"{py}: title cell does not state the expected runtime"
    assert nb.cells[-1].cell_type == "markdown" and "recap" in nb.cells[-1].source.lower(), f"{py}: no closing recap"
    assert ".cuda()" not in py.read_text(), f"{py}: bare .cuda()"
    # papermill reads the same cell with its own line parser (a "=" in a comment defeats it): every name must survive
    from papermill.translators import PythonTranslator

    seen = {p.name for p in PythonTranslator.inspect({"source": cells[0].source})}
    assert seen == set(params), f"{py}: papermill cannot parse parameters {sorted(set(params) - seen)}"


@pytest.mark.parametrize("py", NOTEBOOKS, ids=ids)
def test_every_parameter_is_typed_for_papermill_help(py):
    """``name: type = value  # help``: papermill --help-notebook shows the type and the comment."""
    import papermill

    from swinunetr_lib.notebooks.runner import notebook_parameter_specs

    specs = notebook_parameter_specs(py)
    untyped = [k for k, p in specs.items() if p.annotation is None]
    assert not untyped, f"{py}: parameters without a type annotation: {untyped}"
    inspected = papermill.inspect_notebook(str(py.with_suffix(".ipynb")))
    assert set(inspected) == set(specs)
    for name, p in inspected.items():
        assert p["inferred_type_name"] == specs[name].type_text != "None", (py, name, p)
        assert p["help"] and p["help"] == specs[name].help, (py, name, p)


@pytest.mark.parametrize("py", NOTEBOOKS, ids=ids)
def test_parameters_read_without_jupytext_agree_with_jupytext(py, monkeypatch):
    """Machines without Jupyter (``label_efficiency --engine library`` on a GPU machine) read the parameters cell
    from the percent-format text: the same names, defaults, types and help as through jupytext."""
    import sys

    from swinunetr_lib.notebooks.runner import notebook_parameter_specs

    with_jupytext = notebook_parameter_specs(py)
    monkeypatch.setitem(sys.modules, "jupytext", None)  # import jupytext now raises ImportError
    assert notebook_parameter_specs(py) == with_jupytext
    with pytest.raises(ImportError):
        notebook_parameter_specs(py.with_suffix(".ipynb"))


def test_parameters_read_as_text_need_exactly_one_cell(tmp_path, monkeypatch):
    import sys

    from swinunetr_lib.notebooks.runner import notebook_parameter_specs

    monkeypatch.setitem(sys.modules, "jupytext", None)
    (tmp_path / "two.py").write_text('# %% tags=["parameters"]\na = 1\n\n# %% tags=["parameters"]\nb = 2\n')
    with pytest.raises(NotebookError, match=r"two.py: expected exactly one parameters cell, found 2"):
        notebook_parameter_specs(tmp_path / "two.py")


@pytest.mark.parametrize("profile", ["smoke", "demo"])
def test_param_files_validate(profile):
    folder = REPO_ROOT / "ci" / "params" / profile
    for py in NOTEBOOKS:
        pfile = folder / f"{py.stem}.yml"
        assert pfile.exists(), f"{pfile} missing"
        load_params_file(pfile, py)
    stems = {p.stem for p in NOTEBOOKS}
    assert {p.stem for p in folder.glob("*.yml")} <= stems


def test_misspelled_parameter_is_named(tmp_path):
    py = NOTEBOOKS[0]
    good = yaml.safe_load((REPO_ROOT / "ci/params/smoke" / f"{py.stem}.yml").read_text()) or {}
    key = next(iter(parse_parameters(parameters_cells(jupytext.read(py))[0].source, "x")))
    bad = tmp_path / f"{py.stem}.yml"
    bad.write_text(yaml.safe_dump({**good, key + "s": 1}))
    with pytest.raises(NotebookError, match=rf"unknown parameter '{key}s'.*did you mean '{key}'"):
        load_params_file(bad, py)


def _names(specs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", s, maxsplit=1)[0].lower().replace("_", "-") for s in specs}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {s for s in pip if not s.startswith("-")}
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject: {wanted - listed}"


def test_itkwidgets_is_optional_and_lab4_safe():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert "itkwidgets" not in _names(project["dependencies"])
    viewer = project["optional-dependencies"]["viewer"]
    assert any(s.startswith("itkwidgets") and "1.0" in s for s in viewer), "itkwidgets 0.32 would downgrade Lab"
    assert "ngff-zarr==0.12.2" in viewer, "ngff-zarr 0.50 breaks view(numpy_array)"


def test_label_efficiency_run_params_validate_against_notebook_03():
    nb03 = REPO_ROOT / "notebooks" / "03_finetune_btcv.py"
    files = sorted((REPO_ROOT / "ci" / "params" / "label_efficiency").glob("*.yml"))
    assert files
    for f in files:
        load_params_file(f, nb03)
