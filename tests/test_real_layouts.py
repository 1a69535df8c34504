"""The public datasets as they are distributed (tests/real_layouts.py: real folders, data lists, dtypes and
headers, tiny synthetic content) through every command: build-manifest, validate, finetune, infer, pretrain,
dicom-to-nifti. Each command either gets it right or stops with one line naming the file and the fix."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from real_layouts import (
    BTCV_TEST,
    BTCV_TRAIN,
    BTCV_VALIDATION,
    btcv_case,
    save_nifti,
    write_btcv_challenge,
    write_btcv_monai,
    write_dicom_series,
    write_msd_ct,
    write_msd_mr4d,
    write_tcia_tree,
)

from swinunetr_lib.data.__main__ import main as data_main
from swinunetr_lib.data.manifest import build_manifest, detect_layout
from swinunetr_lib.finetune.run import main as finetune_main
from swinunetr_lib.infer.predict import main as infer_main

# CPU-sized fine-tuning: 2 steps at feature size 12 on the phantoms' own 12 mm grid
TINY = ["--feature-size", "12", "--roi-size", "64,32,32", "--spacing", "12,12,12", "--num-samples", "1",
        "--max-steps", "2", "--warmup-steps", "1", "--val-interval", "0", "--device", "cpu", "--progress", "false"]


def run(capsys, main, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code: int, err: str, prog: str) -> str:
    assert code == 2, err
    line = err.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, err
    assert line.startswith(f"python -m {prog}: error: "), err
    return line


@pytest.fixture(scope="module")
def btcv_monai(tmp_path_factory) -> Path:
    return write_btcv_monai(tmp_path_factory.mktemp("layouts") / "BTCV")


@pytest.fixture(scope="module")
def btcv_download(tmp_path_factory) -> Path:
    return write_btcv_challenge(tmp_path_factory.mktemp("layouts") / "btcv_download")


@pytest.fixture(scope="module")
def msd(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("layouts") / "msd"
    write_msd_ct(root)
    write_msd_mr4d(root)
    return root


@pytest.fixture(scope="module")
def ct_model(tmp_path_factory) -> Path:
    """An untrained Task09_Spleen model.pt at the phantoms' 12 mm (for the DICOM reading checks)."""
    from test_finetune import save_random_model

    from swinunetr_lib.finetune.task_presets import get_preset

    preset = get_preset("Task09_Spleen", spacing=(12.0, 12.0, 12.0), roi_size=(64, 32, 32))
    return save_random_model(tmp_path_factory.mktemp("ckpt") / "model.pt", preset)


# ------------------------------------------------------------------------------- 1. BTCV layouts


def test_btcv_monai_layout_pairs_labels_by_case_number_and_keeps_dataset_0_split(btcv_monai, tmp_path, capsys):
    out = tmp_path / "btcv.json"
    for layout in ("auto", "btcv"):
        code, stdout, err = run(capsys, data_main, "build-manifest", btcv_monai, "--layout", layout, "--out", out)
        assert code == 0, err
        m = json.loads(out.read_text())
        assert (len(m["training"]), len(m["validation"]), len(m["test"])) == (24, 6, 20)
        assert all(e["label"] == e["image"].replace("imagesTr/img", "labelsTr/label")
                   for e in m["training"] + m["validation"])
        assert {e["image"] for e in m["validation"]} == {f"imagesTr/img{i:04d}.nii.gz" for i in BTCV_VALIDATION}
        assert m["test"][0] == {"image": f"imagesTs/img{BTCV_TEST[0]:04d}.nii.gz"}
        assert len(m["labels"]) == 14 and m["name"] == "BTCV"
        assert "30 labeled, 14 classes (btcv layout)" in stdout
    code, stdout, err = run(capsys, data_main, "validate", out, "--root", btcv_monai)
    assert code == 0, stdout


@pytest.mark.parametrize("where, prefix, n_test", [("", "RawData/Training/", 20), ("RawData", "Training/", 20),
                                                   ("RawData/Training", "", 0)])
def test_btcv_challenge_archive_pairs_from_its_top_rawdata_or_training(btcv_download, where, prefix, n_test):
    root = btcv_download / where
    assert detect_layout(root) == "btcv"
    m = build_manifest(root)
    assert [(e["image"], e["label"]) for e in m["training"]] == [
        (f"{prefix}img/img{i:04d}.nii.gz", f"{prefix}label/label{i:04d}.nii.gz") for i in BTCV_TRAIN]
    assert len(m.get("test", [])) == n_test and len(m["labels"]) == 14


def test_labeled_layout_that_pairs_nothing_is_an_error_naming_both_folders(tmp_path, capsys):
    msd = tmp_path / "Task09_Spleen"
    for i in range(3):
        for name in (f"imagesTr/spleen_{i}.nii.gz", f"labelsTr/spleen_{i}_seg.nii.gz"):
            (msd / name).parent.mkdir(parents=True, exist_ok=True)
            (msd / name).write_bytes(b"")
    btcv = tmp_path / "btcv"
    (btcv / "img").mkdir(parents=True)
    (btcv / "label").mkdir()
    (btcv / "img" / "img0001.nii.gz").write_bytes(b"")
    for root, images, labels in ((msd, "imagesTr", "labelsTr"), (btcv, "img", "label")):
        code, _, err = run(capsys, data_main, "build-manifest", root, "--out", tmp_path / "m.json")
        line = one_line_error(code, err, "swinunetr_lib.data build-manifest")
        assert f"{root / images}" in line and f"{root / labels}" in line and "case number" in line
        assert not (tmp_path / "m.json").exists()


def test_flat_layout_never_takes_label_maps_as_pretraining_scans(btcv_monai, btcv_download, msd):
    for root, n in ((btcv_monai, 24 + 6 + 20), (btcv_download, 30 + 20), (msd / "Task09_Spleen", 6 + 2)):
        images = [e["image"] for e in build_manifest(root, layout="flat")["training"]]
        assert len(images) == n and not any("label" in p.lower() or "/._" in p for p in images), images


# ----------------------------------------------------------------------------------- 5. validation


def test_validate_catches_label_17_in_a_scanned_btcv_manifest_without_num_classes(tmp_path, capsys):
    image, label, affine = btcv_case(1)
    label[5, 5, 5] = 17
    save_nifti(tmp_path / "Training" / "img" / "img0001.nii.gz", image, affine, "image")
    save_nifti(tmp_path / "Training" / "label" / "label0001.nii.gz", label, affine, "label")
    out = tmp_path / "btcv.json"
    assert run(capsys, data_main, "build-manifest", tmp_path / "Training", "--out", out, "--n-folds", "1")[0] == 0
    code, stdout, _ = run(capsys, data_main, "validate", out, "--root", tmp_path / "Training")
    assert code == 1 and "label values [17] are not task classes 0..13 (label_out_of_range)" in stdout


def test_validate_names_an_appledouble_file_listed_in_a_manifest(msd, tmp_path, capsys):
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"modality": {"0": "CT"}, "labels": {"0": "background", "1": "spleen"},
                                    "training": [{"image": "./imagesTr/._spleen_2.nii.gz",
                                                  "label": "./labelsTr/spleen_2.nii.gz"}]}))
    code, stdout, _ = run(capsys, data_main, "validate", manifest, "--root", msd / "Task09_Spleen")
    assert code == 1 and "(appledouble)" in stdout and "AppleDouble" in stdout and "spleen_2.nii.gz" in stdout
    assert "corrupt_gzip" not in stdout


# -------------------------------------------------------- 2. + 4. a dataset's own classes, relative paths


def test_msd_task_from_its_dataset_json_with_relative_paths_finetune_and_infer(msd, monkeypatch, capsys):
    """MSD's own dataset.json ("./imagesTr/..." paths, float labels, '._' files beside) as the manifest, no
    --task, every path relative to the current folder."""
    monkeypatch.chdir(msd)
    code, stdout, err = run(capsys, finetune_main, "--data-manifest", "Task09_Spleen/dataset.json",
                            "--run-dir", "runs/spleen", *TINY)
    assert code == 0, err
    assert f"task Task09_Spleen: taken from {msd / 'Task09_Spleen' / 'dataset.json'} (it names 'Spleen')" in stdout
    meta = json.loads((msd / "runs" / "spleen" / "finetune_meta.json").read_text())
    assert meta["task"] == "Task09_Spleen" and meta["out_channels"] == 2 and meta["preset"]["window"] == [-41.0, 176.0]
    code, _, err = run(capsys, infer_main, "--checkpoint", "runs/spleen/model.pt", "--input",
                       "Task09_Spleen/imagesTs/spleen_1.nii.gz", "--output", "seg/spleen_1.nii.gz", "--device", "cpu")
    assert code == 0, err
    src, seg = nib.load(msd / "Task09_Spleen/imagesTs/spleen_1.nii.gz"), nib.load(msd / "seg/spleen_1.nii.gz")
    assert seg.shape == src.shape and np.array_equal(seg.affine, src.affine)
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= {0, 1}


def test_btcv_labels_with_the_spleen_task_stop_before_training_naming_the_manifest(btcv_download, tmp_path, capsys):
    manifest = tmp_path / "btcv.json"
    m = build_manifest(btcv_download, n_folds=1)
    manifest.write_text(json.dumps(m))
    run_dir = tmp_path / "run"
    code, _, err = run(capsys, finetune_main, "--task", "Task09_Spleen", "--data-manifest", manifest, "--data-root",
                       btcv_download, "--run-dir", run_dir, *TINY)
    line = one_line_error(code, err, "swinunetr_lib.finetune")
    assert f"{manifest}: its labels {{0: background, 1: spleen, 2: kidney_right," in line
    assert "are not task Task09_Spleen's {0: background, 1: spleen}; use --task btcv" in line
    assert not run_dir.exists()
    # a manifest that does not say its classes: the label values are caught while preprocessing, naming the file
    bare = {"training": m["training"][:1]}
    manifest.write_text(json.dumps(bare))
    code, _, err = run(capsys, finetune_main, "--task", "Task09_Spleen", "--data-manifest", manifest, "--data-root",
                       btcv_download, "--run-dir", run_dir, *TINY)
    line = one_line_error(code, err, "swinunetr_lib.finetune")
    label = btcv_download / m["training"][0]["label"]
    assert f"{label}: label values [2, 3, 4, 5, 6, 7, 8, 9, 10, 11] ... are not classes of task Task09_Spleen" in line
    assert not (run_dir / "checkpoints").exists()


def test_btcv_download_to_finetune_and_inference(btcv_monai, tmp_path, capsys):
    manifest = tmp_path / "btcv.json"
    assert run(capsys, data_main, "build-manifest", btcv_monai, "--out", manifest)[0] == 0
    code, stdout, err = run(capsys, finetune_main, "--data-manifest", manifest, "--data-root", btcv_monai,
                            "--run-dir", tmp_path / "run", "--labeled-fraction", "0.125", *TINY)  # 3 of 24 cases
    assert code == 0, err
    assert "task btcv: taken from" in stdout
    meta = json.loads((tmp_path / "run" / "finetune_meta.json").read_text())
    assert meta["task"] == "btcv" and meta["out_channels"] == 14 and meta["n_train"] == 3
    src = btcv_monai / "imagesTs" / "img0061.nii.gz"
    code, _, err = run(capsys, infer_main, "--checkpoint", tmp_path / "run" / "model.pt", "--input", src,
                       "--output", tmp_path / "seg.nii.gz", "--device", "cpu", "--task", "btcv")
    assert code == 0, err
    seg = nib.load(tmp_path / "seg.nii.gz")
    assert seg.shape == nib.load(src).shape and np.array_equal(seg.affine, nib.load(src).affine)
    # the data list of the Swin UNETR code is a manifest too: its short class names are BTCV's
    from swinunetr_lib.finetune.run import FinetuneConfig, resolve_task

    assert resolve_task(FinetuneConfig(data_manifest=str(btcv_monai / "dataset_0.json"))).task == "btcv"


def test_msd_4d_mr_task_takes_its_task_from_the_manifest_and_infers(msd, tmp_path, capsys):
    """Task05_Prostate: 4D (X, Y, Z, 2) images. The training loop itself is the one the 2-channel demo_mr
    tests run (test_finetune.py); here: the task and its channels come from the data list, and inference."""
    task = msd / "Task05_Prostate"
    manifest = tmp_path / "prostate.json"
    assert run(capsys, data_main, "build-manifest", task, "--out", manifest)[0] == 0
    code, stdout, _ = run(capsys, data_main, "validate", manifest, "--root", task)
    assert code == 0, stdout
    code, _, err = run(capsys, finetune_main, "--task", "btcv", "--data-manifest", manifest, "--data-root", task,
                       "--run-dir", tmp_path / "wrong", *TINY)
    line = one_line_error(code, err, "swinunetr_lib.finetune")
    assert "its modality {0: T2, 1: ADC} (2 channel(s)) is not task btcv's (CT, 1 channel(s): CT)" in line
    assert "use --task Task05_Prostate" in line and not (tmp_path / "wrong").exists()
    from test_finetune import save_random_model

    from swinunetr_lib.finetune.run import FinetuneConfig, resolve_task
    from swinunetr_lib.finetune.task_presets import get_preset

    cfg = resolve_task(FinetuneConfig(data_manifest=str(manifest), data_root=str(task)))
    assert cfg.task == "Task05_Prostate" and "(it names 'Prostate')" in capsys.readouterr().out
    preset = get_preset("Task05_Prostate", spacing=(12.0, 12.0, 12.0), roi_size=(64, 32, 32))
    model = save_random_model(tmp_path / "model.pt", preset)
    src = task / "imagesTs" / "prostate_03.nii.gz"
    code, _, err = run(capsys, infer_main, "--checkpoint", model, "--input", src, "--output", tmp_path / "seg.nii.gz",
                       "--device", "cpu", "--task", "Task05_Prostate")
    assert code == 0, err
    seg = nib.load(tmp_path / "seg.nii.gz")
    assert seg.shape == nib.load(src).shape[:3] and np.array_equal(seg.affine, nib.load(src).affine)


# ------------------------------------------------------------------------------------ 3. DICOM


def test_infer_reads_a_dicom_folder_as_dicom_to_nifti_does(ct_model, tmp_path, capsys):
    """InstanceNumbers that disagree with ImagePositionPatient, rescale changing slice by slice."""
    series = tmp_path / "series"
    hu, affine = write_dicom_series(series)
    ct = tmp_path / "ct.nii.gz"
    assert run(capsys, data_main, "dicom-to-nifti", series, ct)[0] == 0
    img = nib.load(ct)
    assert np.array_equal(np.asarray(img.dataobj, dtype=np.float32), hu) and np.allclose(img.affine, affine)
    code, _, err = run(capsys, infer_main, "--checkpoint", ct_model, "--input", series, "--output",
                       tmp_path / "seg.nii.gz", "--device", "cpu")
    assert code == 0, err
    seg = nib.load(tmp_path / "seg.nii.gz")  # on the grid of dicom-to-nifti's output, so the two overlay
    assert seg.shape == img.shape and np.allclose(seg.affine, img.affine, atol=1e-4)


def test_tcia_download_tree_top_lists_its_series_and_takes_the_single_ct(ct_model, tmp_path, capsys):
    top = write_tcia_tree(tmp_path / "tcia")
    ct = tmp_path / "ct.nii.gz"
    code, stdout, err = run(capsys, data_main, "dicom-to-nifti", top, ct)
    assert code == 0, err
    assert "2 series below it" in stdout and "(CT, 18 files, 'ABDOMEN 5.0 B30f')" in stdout
    assert "(SEG, 1 files" in stdout
    code, stdout, err = run(capsys, infer_main, "--checkpoint", ct_model, "--input", top, "--output",
                            tmp_path / "seg.nii.gz", "--device", "cpu")
    assert code == 0, err
    assert "reading " in stdout and "2.000000-ABDOMEN 5.0 B30f-20001" in stdout
    seg = nib.load(tmp_path / "seg.nii.gz")
    assert seg.shape == nib.load(ct).shape and np.allclose(seg.affine, nib.load(ct).affine, atol=1e-4)
    two = write_tcia_tree(tmp_path / "two", n_patients=2)
    code, _, err = run(capsys, infer_main, "--checkpoint", ct_model, "--input", two, "--output",
                       tmp_path / "seg2.nii.gz", "--device", "cpu")
    line = one_line_error(code, err, "swinunetr_lib.infer")
    assert "4 series below it, 2 of them CT" in line and "SYNTH-0001" in line and "SYNTH-0002" in line
    assert "give one series folder" in line and not (tmp_path / "seg2.nii.gz").exists()


# ------------------------------------------------------------- 4. pretraining, as the README writes it


def test_pretrain_readme_workflow_with_relative_paths(btcv_download, tmp_path, monkeypatch, capsys):
    """build-manifest --layout flat, then pretrain --data-root, paths relative to the current folder. The
    training loop is replaced by one batch drawn from the loader (the loop itself: test_pretrain.py)."""
    import swinunetr_lib.pretrain.run as pretrain_module
    from swinunetr_lib.train.loop import FitResult

    data = tmp_path / "pretrain_ct"
    shutil.copytree(btcv_download / "RawData" / "Testing", data / "Testing")
    for f in sorted((data / "Testing" / "img").iterdir())[2:]:
        f.unlink()
    shutil.copytree(btcv_download / "RawData" / "Training" / "label", data / "label")  # label maps: never scans
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run(capsys, data_main, "build-manifest", "pretrain_ct", "--layout", "flat",
                            "--out", "data_manifests/pretrain.json")
    assert code == 0, err
    assert len(json.loads((tmp_path / "data_manifests/pretrain.json").read_text())["training"]) == 2
    batches = []

    def one_batch(model, step_fn, loader, cfg, run_dir, **kwargs):
        batches.append(next(iter(loader))["image"].shape)
        return FitResult(step=0, metrics={}, history=[], last_checkpoint=None)

    monkeypatch.setattr(pretrain_module, "fit", one_batch)
    code, stdout, err = run(capsys, pretrain_module.main, "--data-manifest", "data_manifests/pretrain.json",
                            "--data-root", "pretrain_ct", "--run-dir", "runs/ssl", "--max-steps", "1",
                            "--warmup-steps", "0", "--roi-size", "32", "--feature-size", "12", "--batch-size", "1",
                            "--num-samples", "2", "--device", "cpu", "--progress", "false")
    assert code == 0, err
    assert batches == [(2, 1, 32, 32, 32)] and (tmp_path / "runs" / "ssl" / "model_swinvit.pt").is_file()


# -------------------------------------------------------------------------- 6. presets vs sources


def test_presets_match_their_sources():
    from swinunetr_lib.finetune.task_presets import get_preset

    # MONAI tutorials, modules/dynunet_pipeline/task_params.py: spacing["09"] = [0.79, 0.79, 1.6]
    assert get_preset("Task09_Spleen").spacing == (0.79, 0.79, 1.6)
    # research-contributions SwinUNETR/BTCV/main.py: RandFlipd/RandRotate90d 0.2, RandScale/RandShiftIntensityd 0.1
    btcv = get_preset("btcv")
    probabilities = (btcv.flip_prob, btcv.rot90_prob, btcv.scale_intensity_prob, btcv.shift_intensity_prob)
    assert probabilities == (0.2, 0.2, 0.1, 0.1)
