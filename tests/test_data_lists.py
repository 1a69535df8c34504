"""#27 item 8: data lists that do not match the disk, and float labels: one line that says how many, which, and
advice that fits the situation."""
import json
import shutil

import nibabel as nib
import pydicom
import pytest
import torch
from test_finetune import make_tiny_cohort

from swinunetr_lib.data.__main__ import main as data_main
from swinunetr_lib.data.dicom import DicomError, dicom_series_info, read_dicom_series
from swinunetr_lib.finetune.cases import check_label_values
from swinunetr_lib.finetune.run import main as finetune_main
from swinunetr_lib.finetune.task_presets import get_preset
from swinunetr_lib.infer.predict import check_input_paths, dicom_as_nifti
from swinunetr_lib.infer.predict import main as infer_main

TRAIN, VAL, TEST = [*range(1, 11), *range(21, 35)], list(range(35, 41)), list(range(61, 81))  # BTCV dataset_0.json


def _btcv_with_some_cases(root, present):
    """The MONAI BTCV layout with the official 50-entry dataset_0.json, but only the cases ``present`` on disk."""
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True)
    for i in present:
        if i in TEST:
            (root / "imagesTs" / f"img{i:04d}.nii.gz").write_bytes(b"x")
        else:
            (root / "imagesTr" / f"img{i:04d}.nii.gz").write_bytes(b"x")
            (root / "labelsTr" / f"label{i:04d}.nii.gz").write_bytes(b"x")

    def pair(i):
        return {"image": f"imagesTr/img{i:04d}.nii.gz", "label": f"labelsTr/label{i:04d}.nii.gz"}

    (root / "dataset_0.json").write_text(json.dumps({
        "name": "BTCV", "training": [pair(i) for i in TRAIN], "validation": [pair(i) for i in VAL],
        "test": [f"imagesTs/img{i:04d}.nii.gz" for i in TEST]}))
    return root


@pytest.fixture
def run(capsys, monkeypatch):
    monkeypatch.delenv("SWINUNETR_TRACEBACK", raising=False)

    def call(main, *argv):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        if code != 0:
            assert err.count("\n") == 1 and ": error: " in err and "Traceback" not in err, err
        return code, out, err

    return call


def test_build_manifest_stops_on_cases_missing_from_the_datalist_unless_allowed(tmp_path, run):
    root = _btcv_with_some_cases(tmp_path / "BTCV", [1, 2, 3, 35, 61])
    out = tmp_path / "m.json"
    code, _, err = run(data_main, "build-manifest", root, "--out", out)
    assert code == 2 and f"error: {root / 'dataset_0.json'}: 45 of the 50 images it lists are not on disk " \
                         "(imagesTr/img0004.nii.gz, imagesTr/img0005.nii.gz, imagesTr/img0006.nii.gz, " \
                         "imagesTr/img0007.nii.gz, imagesTr/img0008.nii.gz, ...); copy them, or give " \
                         "--allow-missing to build from the cases found" in err, err
    assert not out.exists()

    code, stdout, _ = run(data_main, "build-manifest", root, "--out", out, "--allow-missing")
    assert code == 0 and "note: 45 image(s) of the dataset's own list are not on disk and left out " \
                         "(--allow-missing): imagesTr/img0004.nii.gz, " in stdout, stdout
    m = json.loads(out.read_text())
    assert len(m["training"]) == 3 and len(m["validation"]) == 1 and len(m["test"]) == 1
    assert "missing_from_datalist" not in m


def test_finetune_on_a_list_in_the_data_folder_with_cases_missing_says_so(tmp_path, run):
    manifest = make_tiny_cohort(tmp_path / "cohort", n_train=2, n_val=1)
    gone = tmp_path / "cohort" / "imagesTr" / "case1.nii.gz"
    gone.unlink()
    args = ["--task", "demo_btcv", "--data-manifest", manifest, "--run-dir", tmp_path / "run", "--feature-size", "12",
            "--spacing", "8,8,8", "--max-steps", "1", "--device", "cpu"]
    code, _, err = run(finetune_main, *args)
    assert code == 2 and f"error: {manifest}: 1 of the 6 files it lists are not found ({gone}); the others are " \
                         f"there, under {manifest.parent}: copy the missing cases, or leave them out" in err, err
    assert "--data-root" not in err

    moved = tmp_path / "lists" / "m.json"  # the list away from its data: now --data-root is the advice
    moved.parent.mkdir()
    moved.write_text(manifest.read_text())
    code, _, err = run(finetune_main, *[moved if a == manifest else a for a in args])
    assert code == 2 and f"error: {moved}: 6 of the 6 files it lists are not found (" in err
    assert f"its paths are taken relative to the manifest's folder {moved.parent}: give the data folder as " \
           "--data-root" in err, err


def test_float_labels_get_their_own_advice():
    preset = get_preset("demo_btcv")
    label = torch.zeros(1, 4, 4, 4)
    label[0, 1, 1, 1] = 0.9999
    with pytest.raises(ValueError) as err:
        check_label_values(label, preset, "lab.nii.gz")
    assert str(err.value) == ("lab.nii.gz: label values [0.9999] are not whole numbers; a label map holds integer "
                              "class ids (0..13): round it (numpy.rint) and save it as integers (e.g. uint8), and "
                              "resample labels only with nearest neighbour")
    label[0, 1, 1, 1] = 20.0  # a whole number outside the task: still the other task's advice
    with pytest.raises(ValueError, match=r"label values \[20\] are not classes of task demo_btcv .*--task"):
        check_label_values(label, preset, "lab.nii.gz")


# --- DICOM folders: several series, a missing slice ----------------------------------------------------------

@pytest.fixture(scope="module")
def two_series(tmp_path_factory):
    """One folder holding two series (40-odd slices each, different SeriesDescription), as some exports do."""
    from real_layouts import write_dicom_series

    root = tmp_path_factory.mktemp("dicom")
    both = root / "both"
    both.mkdir()
    for number, description in ((2, "ABDOMEN 5.0 B30f"), (3, "ABDOMEN 1.0 B70f")):
        write_dicom_series(root / str(number), seed=0, series_number=number, description=description)
        for f in (root / str(number)).iterdir():
            shutil.copy(f, both / f"s{number}-{f.name}")
    return root


def test_two_series_in_one_folder_are_listed_with_description_and_slice_count(two_series, run, tmp_path):
    both = two_series / "both"
    info = dicom_series_info(both)
    (uid2, n2), (uid3, n3) = info.series_uids.items()
    listing = f"{uid2} ('ABDOMEN 5.0 B30f', {n2} slices); {uid3} ('ABDOMEN 1.0 B70f', {n3} slices)"
    with pytest.raises(DicomError) as err:
        read_dicom_series(both)
    assert str(err.value) == f"{both}: holds 2 series: {listing}; choose one with --series-uid UID"
    code, _, err = run(data_main, "dicom-to-nifti", both, tmp_path / "ct.nii.gz")
    assert code == 2 and "choose one with --series-uid UID" in err and "series_uid=" not in err

    out = tmp_path / "seg.nii.gz"  # infer: the same listing and option, checked before the model is loaded
    code, _, err = run(infer_main, "--checkpoint", tmp_path / "model.pt", "--input", both, "--output", out)
    assert code == 2 and f"error: {both}: holds 2 DICOM series: {listing}; choose one with --series-uid UID" in err
    code, _, err = run(infer_main, "--checkpoint", tmp_path / "model.pt", "--input", both, "--output", out,
                       "--series-uid", "1.2.3")
    assert code == 2 and f"error: {both}: no series '1.2.3' (--series-uid); series found: {listing}" in err, err
    assert check_input_paths([str(both)], uid3) == [str(both)]
    with dicom_as_nifti([str(both)], uid3) as files:  # what infer reads with --series-uid
        assert nib.load(files[0]).shape[2] == n3


def test_a_missing_slice_is_located_by_position_and_instance_number(two_series, tmp_path):
    src = two_series / "2"
    headers = sorted((float(pydicom.dcmread(f).ImagePositionPatient[2]), int(pydicom.dcmread(f).InstanceNumber), f)
                     for f in src.iterdir())
    gap = tmp_path / "gap"
    gap.mkdir()
    for k, (_, _, f) in enumerate(headers):
        if k != 5:  # the sixth slice from the bottom is missing
            shutil.copy(f, gap / f.name)
    (z4, n4, _), (z6, n6, _) = headers[4], headers[6]
    step = headers[1][0] - headers[0][0]
    with pytest.raises(DicomError) as err:
        read_dicom_series(gap)
    assert str(err.value) == (f"{gap}: slices are not evenly spaced: a step of {z6 - z4:.4g} mm instead of "
                              f"{step:.4g} mm between the slices at {z4:.4g} mm (InstanceNumber {n4}) and {z6:.4g} mm "
                              f"(InstanceNumber {n6}), about 1 slice(s) missing there; re-export the complete series")
