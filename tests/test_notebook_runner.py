"""The notebook runner: a failing cell names the notebook and the cell; bad parameter files are refused."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

from swinunetr_lib.notebooks import NotebookError, check_pair, load_params_file, run_all

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
