"""The precomputed path end to end: the instructor's runs (tiny, real) are packed, unpacked into an attendee's fresh
runs folder, and notebooks 02-06 show them.

Executing the five notebooks whole would train five more runs; each notebook is executed instead as its
``precomputed`` view (:func:`swinunetr_lib.notebooks.runner.tagged_view`): its imports, its parameters and the cells
tagged ``precomputed``, i.e. every cell that shows the instructor's runs and the cheap cells they read (the data, the
views), unchanged. Not covered here: the cells that put the attendee's own run beside the instructor's (they run in
the smoke notebooks).

The instructor's runs: where ``$SWINUNETR_SMOKE_RUNS`` names a finished smoke run (``make test`` sets it to
``runs/smoke`` and runs this test after the smoke notebooks, marker ``after_smoke``), that folder is packed as an
instructor packs ``make demo``'s: the real flow, executed notebooks and figures included, and nothing trained twice.
Without it (``pytest`` alone), the runs are made here at the smallest sizes by the calls the notebooks make.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from swinunetr_lib.data.cohort import build_demo_cohort
from swinunetr_lib.experiments.finetune_run import run_from_params
from swinunetr_lib.experiments.label_efficiency import LabelEfficiencyConfig, run_sweep
from swinunetr_lib.finetune.run import FinetuneConfig, finetune, split_entries
from swinunetr_lib.infer.evaluation import evaluate
from swinunetr_lib.notebooks import precomputed as pc
from swinunetr_lib.notebooks.runner import NOTEBOOK_DIR, load_params_file, notebook_parameters, run_notebook
from swinunetr_lib.pretrain.run import PretrainConfig, pretrain

SMOKE = NOTEBOOK_DIR.parent / "ci" / "params" / "smoke"
MSD_TASK = "Task901_PhantomSpleen"


def _smoke(stem: str, **more) -> dict:
    """The notebook's smoke parameters, on the CPU."""
    py = NOTEBOOK_DIR / f"{stem}.py"
    cpu = {"device": "cpu"} if "device" in notebook_parameters(py) else {}
    return {**load_params_file(SMOKE / f"{stem}.yml", py), **cpu, **more}


SMOKE_NOTEBOOKS = ("00_quickstart", "01_data_curation", "02_ssl_pretraining", "03_finetune_btcv", "04_finetune_msd",
                   "05_visualize_3d", "06_label_efficiency")


def finished_smoke_run() -> Path | None:
    """``$SWINUNETR_SMOKE_RUNS`` when it names a smoke run that executed every notebook (else None)."""
    folder = os.environ.get("SWINUNETR_SMOKE_RUNS")
    if not folder:
        return None
    folder = Path(folder)
    missing = [nb for nb in SMOKE_NOTEBOOKS if not (folder / f"{nb}.ipynb").is_file()]
    if missing or not (folder / "artifacts").is_dir():
        pytest.fail(f"$SWINUNETR_SMOKE_RUNS={folder}: not a finished smoke run (missing {missing or ['artifacts']}); "
                    "run `make smoke` first, or unset it to make the runs here")
    return folder


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory):
    """The instructor's runs, packed and unpacked into an attendee's empty runs folder (``$SWINUNETR_RUNS_DIR``):
    the smoke run's (``$SWINUNETR_SMOKE_RUNS``), or made once here at the smallest sizes by the library calls the
    notebooks make. Yields (attendee runs, instructor's runs as packed: the artifacts folder)."""
    root = tmp_path_factory.mktemp("precomputed_e2e")
    attendee = root / "attendee"
    smoke = finished_smoke_run()
    with pytest.MonkeyPatch.context() as mp:
        if smoke is not None:
            mp.setenv("SWINUNETR_DATA_DIR", str(smoke / "data"))  # the cohort the smoke notebooks read
            archive = pc.pack(smoke, root / "usb" / "smoke.precomputed.tar.gz",  # as `make pack` packs runs/demo
                              compresslevel=1)  # the weights hardly compress: the fastest level
            mp.setenv("SWINUNETR_RUNS_DIR", str(attendee))
            pc.unpack(archive)
            yield attendee, smoke / "artifacts"
            return
        instructor = root / "instructor"
        mp.setenv("SWINUNETR_DATA_DIR", str(root / "data"))
        mp.setenv("SWINUNETR_RUNS_DIR", str(instructor))
        cohort = build_demo_cohort()
        pretrain(PretrainConfig(data_manifest=str(cohort.pretrain_manifest),
                                run_dir=str(instructor / "ssl_pretraining"), roi_size=32, feature_size=12,
                                batch_size=1, num_samples=2, max_steps=2, warmup_steps=1, device="cpu",
                                checkpoint_every=2))
        run_from_params({**notebook_parameters(NOTEBOOK_DIR / "03_finetune_btcv.py"), **_smoke("03_finetune_btcv")})
        cfg = FinetuneConfig(task=MSD_TASK, data_manifest=str(cohort.msd_manifests[MSD_TASK]),
                             run_dir=str(instructor / "finetune_msd" / MSD_TASK), init="scratch", spacing=[8.0] * 3,
                             roi_size=[64, 32, 32], feature_size=12, max_steps=2, val_interval=2, warmup_steps=1,
                             device="cpu", log_every=1, checkpoint_every=2, progress=False)
        res = finetune(cfg)
        evaluate(res.model_path, split_entries(cfg)[1], res.run_dir / "eval", device="cpu")
        # notebook 06's sweep of one run at smoke size, through the library engine (notebook 03's steps, no Jupyter)
        (root / "sweep.yml").write_text(yaml.safe_dump(_smoke("03_finetune_btcv")))
        run_sweep(LabelEfficiencyConfig(params=str(root / "sweep.yml"), fractions=[1.0], inits=["scratch"],
                                        seeds=[0], engine="library"))
        archive = pc.pack(instructor, root / "usb" / "demo.precomputed.tar.gz")
        mp.setenv("SWINUNETR_RUNS_DIR", str(attendee))
        pc.unpack(archive)
        yield attendee, instructor


def _execute(stem: str, params: dict, out: Path) -> str:
    """Run the notebook's precomputed view; all its text outputs (stdout, plain and HTML results), joined."""
    run = run_notebook(NOTEBOOK_DIR / f"{stem}.py", params, out, progress=False, tag="precomputed")
    assert run.ok, run.error
    nb = nbformat.read(run.output, as_version=4)
    texts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            texts.append(o.get("text", ""))
            texts += [o.get("data", {}).get(k, "") for k in ("text/plain", "text/html", "text/markdown")]
    return "\n".join(texts)


def _images(out: Path, stem: str) -> int:
    return len(list((out / "figures" / stem).glob("*.png")))


@pytest.mark.after_smoke
def test_notebooks_show_the_unpacked_instructor_runs(unpacked, tmp_path):
    attendee, instructor = unpacked
    pre = attendee / "precomputed"
    assert sorted(pc.finished_runs(pre)) == sorted(pc.finished_runs(instructor))

    text = _execute("02_ssl_pretraining", _smoke("02_ssl_pretraining"), tmp_path)
    assert f"instructor's precomputed run: {pre / 'ssl_pretraining'}" in text
    assert "L1 inside the boxes: instructor's precomputed run" in text
    assert _images(tmp_path, "02_ssl_pretraining") >= 3  # views, the instructor's curves and reconstructions

    text = _execute("03_finetune_btcv", _smoke("03_finetune_btcv"), tmp_path)
    btcv = json.loads((instructor / "finetune_btcv" / "scratch_frac1_seed0" / "results.json").read_text())
    assert f"instructor's precomputed run: {pre / 'finetune_btcv' / 'scratch_frac1_seed0'}" in text
    assert f"<td>{btcv['steps']}</td>" in text and "hd95_mm" in text  # its settings and its per-organ table
    assert _images(tmp_path, "03_finetune_btcv") >= 2  # its curves and its prediction of the held-out case

    text = _execute("04_finetune_msd", _smoke("04_finetune_msd", tasks=[MSD_TASK]), tmp_path)
    msd = pd.read_csv(instructor / "finetune_msd" / MSD_TASK / "eval" / "summary.csv").set_index("class")
    assert f"precomputed runs found for ['{MSD_TASK}']" in text
    # pandas shows 6 decimals without trailing zeros (0.008900086 is shown as 0.0089)
    shown = [float(v) for v in re.findall(r"<td>(-?\d+\.\d+)</td>", text)]
    assert "eval mean Dice" in text and any(abs(v - msd.loc["mean", "dice"]) <= 5e-7 for v in shown), shown

    text = _execute("05_visualize_3d", _smoke("05_visualize_3d"), tmp_path)
    shown = "the instructor's precomputed run"
    ssl = pc.ShownRun(pre / "ssl_pretraining", shown).describe()
    assert ssl.startswith(f"{shown} ssl_pretraining (") and " steps, feature size " in ssl  # read from its files
    assert f"reconstructions by {ssl}" in text
    # notebook 03's run, not the sweep's label_efficiency_* run beside it
    ft = pc.ShownRun(pre / "finetune_btcv" / "scratch_frac1_seed0", shown).describe()
    assert f"prediction by {ft}" in text and ft.endswith(", init scratch)")

    text = _execute("06_label_efficiency", _smoke("06_label_efficiency"), tmp_path)
    summary = pd.read_csv(instructor / "label_efficiency" / "summary.csv")
    assert f"precomputed sweep: {pre / 'label_efficiency'}" in text
    assert "labeled_fraction" in text and _images(tmp_path, "06_label_efficiency") >= 1
    assert len(summary) >= 1 and "text" in summary  # the table as the notebook shows it: each setting's gain
    assert all(str(t) in text for t in summary["text"]), list(summary["text"])
    assert not (attendee / "finetune_btcv").exists() and not (attendee / "ssl_pretraining").exists()  # nothing trained
