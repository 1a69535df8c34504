"""``python -m swinunetr_lib.data``: bad input -> exit status 2, one line naming the file/option, nothing written."""
import json
import shutil

import pytest

from swinunetr_lib.data.__main__ import main as cli_main
from swinunetr_lib.data.example_data import fetch_example


def touch(root, *names):
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(b"")


def listing(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def run_bad(capsys, argv, *needles):
    """Run the CLI, expect exit 2 and a single error line containing every needle; return that line."""
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"python -m swinunetr_lib.data {argv[0]}: error: "), err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


@pytest.fixture
def data(tmp_path):
    touch(tmp_path / "d", *(f"imagesTr/c{i}.nii.gz" for i in range(4)), *(f"labelsTr/c{i}.nii.gz" for i in range(4)))
    touch(tmp_path / "flat", "a.nii.gz", "b.nii.gz")
    return tmp_path


@pytest.mark.parametrize("extra, needles", [
    (["--fractions", "abc"], ["--fractions", "'abc' is not a number"]),
    (["--fractions", "0.5,2"], ["--fractions", "not in (0, 1]"]),
    (["--fractions", "0,0.5"], ["--fractions", "not in (0, 1]"]),
    (["--fractions", "0.1,0.101"], ["--fractions", "_frac10.json"]),
    (["--n-folds", "-2"], ["--n-folds", "-2"]),
    (["--n-folds", "0"], ["--n-folds"]),
])
def test_build_manifest_rejects_bad_options_before_writing(data, capsys, extra, needles):
    before = listing(data)
    run_bad(capsys, ["build-manifest", str(data / "d"), "--out", str(data / "m.json"), *extra], *needles)
    assert listing(data) == before  # no m.json, no m_frac*.json


def test_build_manifest_fractions_on_unlabeled_data_write_nothing(data, capsys):
    before = listing(data)
    run_bad(capsys, ["build-manifest", str(data / "flat"), "--out", str(data / "m.json"), "--fractions", "0.5"],
            "--fractions", "no labeled", "flat layout")
    assert listing(data) == before


def test_build_manifest_out_is_a_directory(data, capsys):
    (data / "outdir").mkdir()
    run_bad(capsys, ["build-manifest", str(data / "d"), "--out", str(data / "outdir")], "--out", "is a directory")
    assert listing(data / "outdir") == []
    (data / "afile").write_text("x")
    run_bad(capsys, ["build-manifest", str(data / "d"), "--out", str(data / "afile" / "m.json")], "--out", "afile")
    assert (data / "afile").read_text() == "x"


def test_build_manifest_good_run_still_writes_all(data, capsys):
    assert cli_main(["build-manifest", str(data / "d"), "--out", str(data / "m.json"), "--fractions", "0.5,1,0.5"]) == 0
    assert json.loads((data / "m_frac50.json").read_text())["numTraining"] == 2
    assert json.loads((data / "m_frac100.json").read_text())["numTraining"] == 4


@pytest.fixture(scope="module")
def series():
    return fetch_example("example_ct_dicom")  # read-only; these checks fail before reading it


@pytest.mark.parametrize("out, extra, needles", [
    ("x.txt", [], ["OUT", "x.txt", ".nii"]),
    ("outdir", [], ["OUT", "outdir", "is a directory"]),
    ("ct.nii.gz", ["--orientation", "RRS"], ["--orientation", "'RRS'", "L/R, A/P, S/I"]),
    ("ct.nii.gz", ["--orientation", "RA"], ["--orientation", "'RA'"]),
    ("ct.nii.gz", ["--orientation", "XYZ"], ["--orientation", "'XYZ'"]),
])
def test_dicom_to_nifti_checks_out_and_orientation_first(series, tmp_path, capsys, out, extra, needles):
    (tmp_path / "outdir").mkdir()
    before = listing(tmp_path)
    run_bad(capsys, ["dicom-to-nifti", str(series), str(tmp_path / out), *extra], *needles)
    assert listing(tmp_path) == before


def test_dicom_to_nifti_names_a_truncated_slice(series, tmp_path, capsys):
    folder = tmp_path / "series"
    folder.mkdir()
    files = sorted(series.iterdir())[:4]
    for f in files:
        shutil.copyfile(f, folder / f.name)
    broken = folder / files[1].name
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    err = run_bad(capsys, ["dicom-to-nifti", str(folder), str(tmp_path / "ct.nii.gz")],
                  str(folder), files[1].name, "could not be read", "truncated")
    assert "evenly spaced" not in err
    assert not (tmp_path / "ct.nii.gz").exists()


def test_validate_rejects_bad_num_classes_and_directory(tmp_path, capsys):
    m = tmp_path / "m.json"
    m.write_text(json.dumps({"training": [{"image": "a.nii.gz"}]}))
    run_bad(capsys, ["validate", str(m), "--num-classes", "-3"], "--num-classes", "-3")
    run_bad(capsys, ["validate", str(m), "--num-classes", "0"], "--num-classes")
    run_bad(capsys, ["validate", str(tmp_path)], str(tmp_path), "is a directory")


def test_demo_cohort_out_dir_is_a_file(tmp_path, capsys):
    f = tmp_path / "cohort"
    f.write_text("not a folder")
    run_bad(capsys, ["demo-cohort", "--out-dir", str(f)], str(f), "not a folder")
    assert f.read_text() == "not a folder" and listing(tmp_path) == ["cohort"]


@pytest.mark.parametrize("extra, needle", [
    (["--spacing", "[0,3,3]"], "spacing"),
    (["--spacing", "[3,3]"], "spacing"),
    (["--n-msd", "1"], "n_msd"),
    (["--n-unlabeled", "-1"], "n_unlabeled"),
    (["--seed", "-1"], "seed"),
])
def test_demo_cohort_bad_parameters_touch_nothing(tmp_path, capsys, extra, needle):
    root = tmp_path / "c"
    root.mkdir()
    stamp = root / "cohort.json"
    stamp.write_text('{"params": {}, "files": []}\n')  # an earlier build's stamp must survive
    run_bad(capsys, ["demo-cohort", "--out-dir", str(root), *extra], needle)
    assert stamp.read_text() == '{"params": {}, "files": []}\n' and listing(root) == ["cohort.json"]
    run_bad(capsys, ["demo-cohort", "--out-dir", str(tmp_path / "new"), *extra], needle)
    assert not (tmp_path / "new").exists()
