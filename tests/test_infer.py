"""Inference command: label map on the input's grid (shape + affine), NIfTI and DICOM input, clear errors."""
from __future__ import annotations

import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from test_finetune import save_random_model

from swinunetr_lib.data.example_data import fetch_example
from swinunetr_lib.finetune.task_presets import get_preset
from swinunetr_lib.infer.predict import InferenceError, infer, main

CPU_PRESET = dict(spacing=(6.0, 6.0, 6.0), roi_size=(64, 64, 32))


@pytest.fixture(scope="module")
def ct_model(tmp_path_factory):
    return save_random_model(tmp_path_factory.mktemp("ckpt") / "model.pt", get_preset("demo_btcv", **CPU_PRESET))


def test_cli_writes_label_map_with_input_affine_and_shape(ct_model, tmp_path):
    src = fetch_example("example_mr_sm.nii.gz")  # LPS orientation, so the inversion has work to do
    out = tmp_path / "seg.nii.gz"
    assert main(["--checkpoint", str(ct_model), "--input", str(src), "--output", str(out), "--device", "cpu"]) == 0
    ref, seg = nib.load(src), nib.load(out)
    assert seg.shape == ref.shape and np.array_equal(seg.affine, ref.affine)
    data = np.asarray(seg.dataobj)
    assert data.dtype == np.uint8 and data.max() <= 13


def test_dicom_folder_input(ct_model, tmp_path):
    out = infer(ct_model, fetch_example("example_ct_dicom"), tmp_path / "seg.nii.gz", device="cpu")
    seg = nib.load(out)
    assert seg.shape == (512, 512, 20)
    assert np.allclose(np.linalg.norm(seg.affine[:3, :3], axis=0), (0.977, 0.977, 2.0), atol=0.01)


def test_wrong_channel_count(tmp_path):
    mr2 = save_random_model(tmp_path / "mr.pt", get_preset("demo_mr", **CPU_PRESET))
    src = fetch_example("example_ct_sm.nii.gz")
    with pytest.raises(InferenceError, match=r"example_ct_sm.nii.gz: 1 channel\(s\), but task demo_mr expects 2"):
        infer(mr2, src, tmp_path / "seg.nii.gz", device="cpu")
    assert not (tmp_path / "seg.nii.gz").exists()


def test_unreadable_and_missing_input(ct_model, tmp_path):
    bad = tmp_path / "scan.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file")
    with pytest.raises(InferenceError, match=r"scan.nii.gz: cannot be read"):
        infer(ct_model, bad, tmp_path / "seg.nii.gz", device="cpu")
    with pytest.raises(InferenceError, match=r"nothere.nii.gz: input not found"):
        infer(ct_model, tmp_path / "nothere.nii.gz", tmp_path / "seg.nii.gz", device="cpu")


def test_checkpoint_of_another_task_is_refused(ct_model, tmp_path, capsys):
    src = fetch_example("example_ct_sm.nii.gz")
    assert main(["--checkpoint", str(ct_model), "--input", str(src), "--output", str(tmp_path / "s.nii.gz"),
                 "--task", "Task09_Spleen"]) == 2
    assert "fine-tuned for task 'demo_btcv' (14 classes), not 'Task09_Spleen'" in capsys.readouterr().err
    not_a_ckpt = tmp_path / "x.pt"
    not_a_ckpt.write_text("hello")
    with pytest.raises(InferenceError, match="x.pt: cannot be read as a torch checkpoint"):
        infer(not_a_ckpt, src, tmp_path / "s.nii.gz")


# --- bad command-line input: one line on stderr, exit status 2, nothing written -------------------------

@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the command; return (exit status, stderr), asserting the error is one line without a traceback."""
    monkeypatch.delenv("SWINUNETR_TRACEBACK", raising=False)

    def run(*argv: str) -> tuple[int, str]:
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err
        if code != 0:
            assert err.startswith("python -m swinunetr_lib.infer: error: ") and err.count("\n") == 1, err
            assert "Traceback" not in err
        return code, err

    return run


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_window_options_checked_before_anything_else(cli, tmp_path):
    src, out = fetch_example("example_ct_sm.nii.gz"), tmp_path / "seg.nii.gz"
    missing_ckpt = tmp_path / "nothere.pt"  # the option error comes first: nothing else was looked at
    code, err = cli("--checkpoint", missing_ckpt, "--input", src, "--output", out, "--sw-batch-size", "0")
    assert code == 2 and "--sw-batch-size must be a whole number >= 1" in err and "got 0" in err
    for bad in ("1.5", "1", "-0.1", "nan"):
        code, err = cli("--checkpoint", missing_ckpt, "--input", src, "--output", out, "--overlap", bad)
        assert code == 2 and "--overlap must be at least 0 and below 1" in err, bad
    code, err = cli("--checkpoint", missing_ckpt, "--input", src, "--output", out, "--device", "foo")
    assert code == 2 and "--device 'foo' is not a device" in err
    with pytest.raises(InferenceError, match="sw_batch_size must be"):
        infer(missing_ckpt, src, out, sw_batch_size=0)
    assert _files(tmp_path) == []


def test_checkpoint_metadata_without_required_keys(cli, tmp_path):
    ckpt = tmp_path / "partial.pt"
    torch.save({"state_dict": {}, "finetune": {"task": "x"}}, ckpt)
    out = tmp_path / "seg.nii.gz"
    code, err = cli("--checkpoint", ckpt, "--input", fetch_example("example_ct_sm.nii.gz"), "--output", out)
    assert code == 2
    assert f"{ckpt}: fine-tuning metadata lacks in_channels, out_channels, feature_size, preset (has: task)" in err
    assert not out.exists()


def test_checkpoint_of_another_feature_size(ct_model, cli, tmp_path):
    obj = torch.load(ct_model, weights_only=False)
    obj["finetune"] = {**obj["finetune"], "feature_size": 24}  # weights are feature_size 12
    ckpt = tmp_path / "fs.pt"
    torch.save(obj, ckpt)
    out = tmp_path / "seg.nii.gz"
    code, err = cli("--checkpoint", ckpt, "--input", fetch_example("example_ct_sm.nii.gz"), "--output", out,
                    "--device", "cpu")
    assert code == 2 and f"{ckpt}: weights do not fit the model its metadata records (feature_size=24" in err
    assert "tensor(s) of another shape" in err and "0 missing, 0 unexpected" in err
    assert "first mismatch: " in err and "in the checkpoint but " in err and "another feature_size" in err
    assert len(err) < 600 and not out.exists()


def test_folder_without_dicom_files(ct_model, cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "seg.nii.gz"
    code, err = cli("--checkpoint", ct_model, "--input", empty, "--output", out)
    assert code == 2 and f"{empty}: no DICOM files (the folder is empty)" in err
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not DICOM")
    code, err = cli("--checkpoint", ct_model, "--input", junk, "--output", out)
    assert code == 2 and f"{junk}: no DICOM files (1 file(s), none readable as DICOM, e.g. notes.txt)" in err
    assert not out.exists()


def test_output_path_checked_before_the_model_is_loaded(cli, tmp_path):
    src = fetch_example("example_ct_sm.nii.gz")
    missing_ckpt = tmp_path / "nothere.pt"  # output errors are reported before the checkpoint is opened
    folder = tmp_path / "out"
    folder.mkdir()
    code, err = cli("--checkpoint", missing_ckpt, "--input", src, "--output", folder)
    assert code == 2 and f"{folder}: output must end in .nii or .nii.gz" in err
    as_dir = tmp_path / "dir.nii.gz"
    as_dir.mkdir()
    code, err = cli("--checkpoint", missing_ckpt, "--input", src, "--output", as_dir)
    assert code == 2 and f"{as_dir}: output is a folder" in err
    blocker = tmp_path / "afile"
    blocker.write_text("keep me")
    code, err = cli("--checkpoint", missing_ckpt, "--input", src, "--output", blocker / "sub" / "seg.nii.gz")
    assert code == 2 and f"output folder: cannot be created, {blocker} is a file" in err
    code, err = cli("--checkpoint", missing_ckpt, "--input", src, "--output", tmp_path / "seg.txt")
    assert code == 2 and "seg.txt: output must end in .nii or .nii.gz" in err
    code, err = cli("--checkpoint", missing_ckpt, "--input", src, "--output", src)
    assert code == 2 and "output would overwrite the input scan" in err
    assert blocker.read_text() == "keep me"
    assert _files(tmp_path) == ["afile", "dir.nii.gz", "out"]


def test_python_dash_m_reports_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SWINUNETR_TRACEBACK"}
    res = subprocess.run([sys.executable, "-m", "swinunetr_lib.infer", "--checkpoint", str(tmp_path / "c.pt"),
                          "--input", str(tmp_path), "--output", str(tmp_path / "seg.nii.gz"), "--sw-batch-size", "0"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2
    assert res.stderr == ("python -m swinunetr_lib.infer: error: --sw-batch-size must be a whole number >= 1 "
                          "(windows per forward pass), got 0\n")
    assert _files(tmp_path) == []


# --- untrusted checkpoints, damaged scans, a GPU that is not there (issue #12) ---------------------------

def test_a_booby_trapped_checkpoint_is_refused_without_running_it(cli, tmp_path, booby_trap):
    ckpt = tmp_path / "evil.pt"
    marker = booby_trap(ckpt, lambda trap: {"state_dict": {}, "finetune": trap})
    out = tmp_path / "seg.nii.gz"
    code, err = cli("--checkpoint", ckpt, "--input", fetch_example("example_ct_sm.nii.gz"), "--output", out,
                    "--device", "cpu")
    assert code == 2 and f"{ckpt}: refused to load: the file holds Python objects (posix.system)" in err
    assert not marker.exists() and not out.exists()


def test_a_scan_with_nan_voxels_is_an_error_naming_the_file_and_the_count(ct_model, cli, tmp_path):
    data = np.full((40, 40, 24), -500.0, dtype=np.float32)
    data[10:30, 10:30, 5:20] = 40.0
    data[3, 4, 5:12] = np.nan  # 7 NaN voxels
    data[0, 0, 0] = np.inf
    scan = tmp_path / "nan_scan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([4.0, 4.0, 4.0, 1.0])), scan)
    out = tmp_path / "seg.nii.gz"
    code, err = cli("--checkpoint", ct_model, "--input", scan, "--output", out, "--device", "cpu")
    assert code == 2 and f"{scan}: 8 of 38400 voxels are not finite (7 NaN, 1 Inf)" in err
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
def test_device_cuda_without_a_gpu_is_an_error(ct_model, cli, tmp_path):
    out = tmp_path / "seg.nii.gz"
    code, err = cli("--checkpoint", ct_model, "--input", fetch_example("example_ct_sm.nii.gz"), "--output", out,
                    "--device", "cuda")
    assert code == 2 and "--device 'cuda': " in err and "use device=cpu" in err
    assert not out.exists()


def test_help_gives_each_options_meaning_and_default(capsys):
    """--help is built from InferConfig's field comments, as for the other commands."""
    import dataclasses
    import re

    from swinunetr_lib.config import field_comments
    from swinunetr_lib.infer.predict import InferConfig

    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    comments = field_comments(InferConfig)
    for f in dataclasses.fields(InferConfig):
        flag = "--" + f.name.replace("_", "-")
        default = "required" if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING \
            else ('""' if f.default == "" else str(f.default))
        assert f.name in comments, f"{f.name} has no comment in InferConfig"
        first_words = " ".join(comments[f.name].split()[:4])
        assert re.search(re.escape(flag) + r" \S+.*?" + re.escape(first_words), text), flag
        assert f"(default: {default})" in text, (flag, default)
    assert "--input INPUT [INPUT ...]" in text  # several channel files after one --input, as before
    with pytest.raises(SystemExit) as stop:
        main(["--input", "a.nii.gz"])
    assert stop.value.code == 2 and "required: --checkpoint, --output" in capsys.readouterr().err
