"""A non-editable install works away from the checkout: the package carries what it needs at run time (the dataset
registry, the example scans' checksums) and no stage reads the repository (issue #24)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_non_editable_install_runs_from_another_folder(tmp_path):
    src = tmp_path / "src"  # a copy of the tracked files, so the build leaves nothing in the checkout
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(src)], check=True, capture_output=True, text=True)
    shutil.rmtree(src)  # nothing may point back into a source tree
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = ("import swinunetr_lib, pathlib\n"
            "from swinunetr_lib.finetune.task_presets import get_preset\n"
            "from swinunetr_lib.data.registry import load_registry\n"
            "p = get_preset('Task09_Spleen')\n"
            "print(pathlib.Path(swinunetr_lib.__file__).parent.parent, p.name, p.out_channels, p.modality,"
            " len(load_registry()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    where, name, classes, modality, n = out.stdout.split()
    assert Path(where) == site, f"imported {where}, not the installed copy"
    assert (name, classes, modality) == ("Task09_Spleen", "2", "CT") and int(n) >= 11
    helped = subprocess.run([sys.executable, "-m", "swinunetr_lib.finetune", "--help"], cwd=elsewhere, env=env,
                            capture_output=True, text=True)
    assert helped.returncode == 0 and "--data-manifest" in helped.stdout, helped.stderr[-2000:]
