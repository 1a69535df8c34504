"""Inference command: label map on the input's grid (shape + affine), NIfTI and DICOM input, clear errors."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from swinunetr_lib.example_data import fetch_example
from swinunetr_lib.infer import InferenceError, infer, main
from swinunetr_lib.task_presets import get_preset

from test_finetune import save_random_model

CPU_PRESET = dict(spacing=(6.0, 6.0, 6.0), roi_size=(64, 64, 32))


@pytest.fixture(scope="module")
def ct_model(tmp_path_factory):
    return save_random_model(tmp_path_factory.mktemp("ckpt") / "model.pt", get_preset("demo_btcv", **CPU_PRESET))


def test_cli_writes_label_map_with_input_affine_and_shape(ct_model, tmp_path):
    src = fetch_example("example_mr_sm.nii.gz")  # LPS orientation, so the inversion has work to do
    out = tmp_path / "seg.nii.gz"
    main(["--checkpoint", str(ct_model), "--input", str(src), "--output", str(out), "--device", "cpu"])
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
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(ct_model), "--input", str(src), "--output", str(tmp_path / "s.nii.gz"),
              "--task", "Task09_Spleen"])
    assert exit_info.value.code == 2
    assert "fine-tuned for task 'demo_btcv' (14 classes), not 'Task09_Spleen'" in capsys.readouterr().err
    not_a_ckpt = tmp_path / "x.pt"
    not_a_ckpt.write_text("hello")
    with pytest.raises(InferenceError, match="x.pt: cannot be read as a torch checkpoint"):
        infer(not_a_ckpt, src, tmp_path / "s.nii.gz")
