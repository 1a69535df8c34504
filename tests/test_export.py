"""MONAI bundle export: the bundle run by MONAI's own runner gives swinunetr_lib.infer's label map; bad input."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from test_finetune import _cfg, make_tiny_cohort, save_random_model

from swinunetr_lib.finetune.task_presets import get_preset
from swinunetr_lib.infer.export import ExportError, export_bundle, load_checkpoint, main
from swinunetr_lib.infer.predict import infer

# Non-trivial resampling (3 mm scan -> 4 x 4 x 4.5 mm) and a small ROI: 4 overlapping windows on the cropped
# scan. (A 32^3 ROI is too small: SwinUNETR's bottleneck would be 1 voxel, which instance norm refuses.)
TINY_PRESET = dict(spacing=(4.0, 4.0, 4.5), roi_size=(64, 64, 32))
PROG = "python -m swinunetr_lib.infer.export"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = save_random_model(tmp_path_factory.mktemp("ckpt") / "model.pt", get_preset("demo_btcv", **TINY_PRESET))
    obj = torch.load(path, weights_only=True)
    obj.update(best_mean_dice=0.5, step=2)  # as finetune writes it
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def scan(example_ct_sm, tmp_path_factory):
    """A crop of the example CT (122 x 101 x 30, 3 mm, RAS) stored in LPS order, so orientation, spacing and
    foreground crop all have something to invert."""
    img = nib.load(str(example_ct_sm))
    data = np.asarray(img.dataobj)[5:117, 5:96, 4:28]
    affine = img.affine.copy()
    affine[:3, 3] = (img.affine @ np.array([5, 5, 4, 1]))[:3]
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = data.shape[0] - 1, data.shape[1] - 1
    out = tmp_path_factory.mktemp("scan") / "ct_crop.nii.gz"
    nib.save(nib.Nifti1Image(data[::-1, ::-1].copy(), affine @ flip), str(out))
    assert nib.aff2axcodes(nib.load(str(out)).affine) == ("L", "P", "S")
    return out


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory):
    return export_bundle(checkpoint, tmp_path_factory.mktemp("export") / "bundle", torchscript=True)


def test_bundle_layout_and_configs(bundle):
    names = sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file())
    assert names == ["LICENSE", "configs/inference.json", "configs/metadata.json", "docs/README.md",
                     "models/model.pt", "models/model.ts"]
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    cfg = json.loads((bundle / "configs/inference.json").read_text())
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    assert cfg["network_def"] == {"_target_": "SwinUNETR", "in_channels": 1, "out_channels": 14, "feature_size": 12}
    assert cfg["inferer"] == {"_target_": "SlidingWindowInferer", "roi_size": [64, 64, 32], "sw_batch_size": 4,
                              "overlap": 0.5, "mode": "gaussian"}
    assert cfg["label_names"]["0"] == "background" and cfg["label_names"]["1"] == "spleen"
    steps = {t["_target_"]: t for t in cfg["preprocessing"]["transforms"]}
    assert steps["Orientationd"]["axcodes"] == "RAS" and steps["Spacingd"]["pixdim"] == [4.0, 4.0, 4.5]
    assert (steps["ScaleIntensityRanged"]["a_min"], steps["ScaleIntensityRanged"]["a_max"]) == (-175.0, 250.0)
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == cfg["label_names"]
    assert meta["swinunetr_lib"]["step"] == 2 and meta["swinunetr_lib"]["preset"]["name"] == "demo_btcv"
    # models/model.pt: a plain state dict the bundle's network_def loads (strictly)
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs/inference.json"))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle / "models/model.pt", weights_only=True))


def test_monai_bundle_run_matches_infer(bundle, checkpoint, scan, tmp_path):
    from monai.bundle import run

    ref = infer(checkpoint, scan, tmp_path / "infer" / "seg.nii.gz", device="cpu")
    run(config_file=str(bundle / "configs/inference.json"), bundle_root=str(bundle),
        datalist=[str(scan)], output_dir=str(tmp_path / "bundle_out"), device="$torch.device('cpu')")
    out = tmp_path / "bundle_out" / "ct_crop_seg.nii.gz"
    a, b, src = nib.load(str(ref)), nib.load(str(out)), nib.load(str(scan))
    assert b.shape == src.shape == a.shape
    np.testing.assert_allclose(b.affine, src.affine, atol=1e-4)
    assert b.get_data_dtype() == np.uint8
    ours, theirs = np.asarray(a.dataobj), np.asarray(b.dataobj)
    assert len(np.unique(ours)) > 1  # several classes, so the comparison means something
    np.testing.assert_array_equal(theirs, ours)


def test_torchscript_matches_eager(bundle, checkpoint):
    state, meta, _, _ = load_checkpoint(checkpoint)
    from swinunetr_lib.models.swin_unetr import build_swinunetr

    model = build_swinunetr(1, 14, feature_size=12).eval()
    model.load_state_dict(state)
    ts = torch.jit.load(str(bundle / "models/model.ts"))
    torch.manual_seed(0)
    x = torch.rand(2, 1, 64, 64, 32)  # batch 2: the trace (made at batch 1) generalises over the batch
    with torch.no_grad():
        torch.testing.assert_close(ts(x), model(x), rtol=1e-4, atol=1e-5)


def test_real_finetune_checkpoint_loads_with_weights_only(tmp_path):
    """A model.pt as finetune writes it (1 step on the tiny phantom cohort): its metadata (config, load report,
    best Dice) unpickles with weights_only=True, and the bundle's weights are the checkpoint's."""
    from swinunetr_lib.finetune.run import finetune

    result = finetune(_cfg(make_tiny_cohort(tmp_path / "cohort"), tmp_path / "run", max_steps=1, val_interval=1))
    out = export_bundle(result.model_path, tmp_path / "bundle")
    meta = json.loads((out / "configs/metadata.json").read_text())["swinunetr_lib"]
    assert meta["step"] == 1 and meta["best_mean_dice"] == pytest.approx(result.best_mean_dice)
    state = torch.load(out / "models/model.pt", weights_only=True)
    original = torch.load(result.model_path, weights_only=True)["state_dict"]
    assert state.keys() == original.keys() and all(torch.equal(state[k], original[k]) for k in state)


@pytest.mark.skipif(importlib.util.find_spec("fire") is None, reason="python -m monai.bundle needs the fire package")
def test_python_dash_m_monai_bundle_run(bundle, scan, tmp_path):
    res = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                          str(bundle / "configs/inference.json"), "--bundle_root", str(bundle),
                          "--datalist", f"['{scan}']", "--output_dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert nib.load(str(tmp_path / "ct_crop_seg.nii.gz")).shape == nib.load(str(scan)).shape


# ------------------------------------------------------------------------------------------- bad input


@pytest.fixture
def cli(capsys, monkeypatch):
    monkeypatch.delenv("SWINUNETR_TRACEBACK", raising=False)

    def call(*argv) -> tuple[int, str]:
        code = main([str(a) for a in argv])
        return code, capsys.readouterr().err
    return call


def test_missing_checkpoint(cli, tmp_path):
    code, err = cli("bundle", "--checkpoint", tmp_path / "nope.pt", "--out", tmp_path / "b")
    assert code == 2 and err == f"{PROG}: error: {tmp_path / 'nope.pt'}: checkpoint not found\n"
    assert list(tmp_path.iterdir()) == []


def test_corrupt_checkpoint(cli, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    code, err = cli("bundle", "--checkpoint", bad, "--out", tmp_path / "b")
    assert code == 2 and err.startswith(f"{PROG}: error: {bad}: cannot be read as a torch checkpoint")
    assert err.count("\n") == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt"]


def test_checkpoint_without_finetune_meta(cli, checkpoint, tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": torch.load(checkpoint, weights_only=True)["state_dict"]}, plain)
    code, err = cli("bundle", "--checkpoint", plain, "--out", tmp_path / "b")
    assert code == 2 and err.startswith(f"{PROG}: error: {plain}: no fine-tuning metadata (task, channels, classes); "
                                        "expected model.pt written by swinunetr_lib.finetune") and err.count("\n") == 1
    assert not (tmp_path / "b").exists()


def test_pickled_code_is_not_loaded(cli, tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"finetune": {"task": "x"}, "state_dict": {}, "obj": Path("x")}, evil)  # needs weights_only=False
    code, err = cli("bundle", "--checkpoint", evil, "--out", tmp_path / "b")
    assert code == 2 and f"{evil}: refused to load: the file holds Python objects" in err and err.count("\n") == 1


def test_existing_non_empty_out(cli, checkpoint, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("keep me")
    code, err = cli("bundle", "--checkpoint", checkpoint, "--out", out)
    assert code == 2 and err == f"{PROG}: error: {out}: output folder exists and is not empty; give a new folder\n"
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_existing_empty_out_is_used(cli, checkpoint, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    code, err = cli("bundle", "--checkpoint", checkpoint, "--out", out)
    assert code == 0 and err == ""
    assert (out / "models/model.pt").is_file() and (out / "configs/inference.json").is_file()
    assert not (out / "models/model.ts").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_python_dash_m_reports_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SWINUNETR_TRACEBACK"}
    res = subprocess.run([sys.executable, "-m", "swinunetr_lib.infer.export", "bundle", "--checkpoint",
                          str(tmp_path / "missing.pt"), "--out", str(tmp_path / "c")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2
    assert res.stderr == f"{PROG}: error: {tmp_path / 'missing.pt'}: checkpoint not found\n"
    assert list(tmp_path.iterdir()) == []


def test_load_checkpoint_errors_are_export_errors(tmp_path):
    ckpt = tmp_path / "partial.pt"
    torch.save({"state_dict": {}, "finetune": {"task": "x"}}, ckpt)
    with pytest.raises(ExportError, match="fine-tuning metadata lacks in_channels, out_channels, feature_size, preset"):
        load_checkpoint(ckpt)


def test_the_checkpoint_is_unpickled_once(checkpoint, monkeypatch):
    """Weights, metadata, best_mean_dice and step all come from one torch.load of model.pt."""
    reads: list[Path] = []  # every unpickling, whichever helper of the library asks for it
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda path, *a, **k: reads.append(Path(path)) or real_load(path, *a, **k))
    state, meta, preset, obj = load_checkpoint(checkpoint)
    assert reads == [checkpoint]
    assert (obj["best_mean_dice"], obj["step"]) == (0.5, 2) and meta["task"] == preset.name == "demo_btcv"
    assert all(torch.equal(v, obj["state_dict"][k]) for k, v in state.items())
