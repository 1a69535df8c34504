"""``python -m swinunetr_lib.data prepare``: the body box on the real example CT, the files it writes (RAS int16 HU,
metadata, manifest), resuming, parallel workers, failures and bad input (issue #15)."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import Compose, CropForegroundd, ScaleIntensityRanged
from monai.transforms.utils import generate_spatial_bounding_box

from swinunetr_lib.data.__main__ import main
from swinunetr_lib.data.example_data import fetch_example
from swinunetr_lib.data.prepare import PrepareConfig, prepare, volume_name
from swinunetr_lib.data.prepared_volumes import body_mask
from swinunetr_lib.data.pretrain_volumes import volume_transforms

PROG = "python -m swinunetr_lib.data prepare"


@pytest.fixture(scope="module")
def example_ct():
    return fetch_example("example_ct.nii.gz")


def _copy_cohort(tmp_path, example_ct, n=2):
    """``n`` copies of the real example CT (the second one flipped to LPS, so orientation matters) + a manifest."""
    img = nib.load(example_ct)
    for i in range(n):
        data, affine = np.asarray(img.dataobj), img.affine.copy()
        if i % 2:
            data, affine = data[::-1, ::-1].copy(), affine @ np.array(
                [[-1, 0, 0, data.shape[0] - 1], [0, -1, 0, data.shape[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]])
        nib.save(nib.Nifti1Image(data, affine), tmp_path / f"ct{i}.nii.gz")
    (tmp_path / "m.json").write_text(json.dumps({"training": [{"image": f"ct{i}.nii.gz"} for i in range(n)]}))
    return tmp_path / "m.json"


def test_body_box_removes_air_on_the_real_example_ct(example_ct):
    hu = np.asarray(Compose(volume_transforms()[:-1])({"image": str(example_ct)})["image"])  # (1, X, Y, Z) RAS
    # MONAI's default foreground after scaling (> -1000 HU) keeps the whole scan: noise in the air passes it
    scaled = ScaleIntensityRanged("image", -1000, 1000, 0.0, 1.0, clip=True)({"image": hu})["image"]
    start, end = generate_spatial_bounding_box(scaled)
    assert list(start) == [0, 0, 0] and list(end) == list(hu.shape[1:])
    # ours: largest component above -500 HU
    start, end = generate_spatial_bounding_box(hu, select_fn=body_mask)
    box = tuple(slice(s, e) for s, e in zip(start, end, strict=True))
    assert np.prod([e - s for s, e in zip(start, end, strict=True)]) < np.prod(hu.shape[1:])  # something was cut
    outside = np.ones(hu.shape[1:], bool)
    outside[box] = False
    assert np.median(hu[0][outside]) < -900  # what was cut is air (and the table)
    inside = hu[0][box]
    assert (inside > -500).mean() > 0.4  # the box is mostly body
    cropped = CropForegroundd("image", "image", select_fn=body_mask)({"image": hu})["image"]
    assert tuple(cropped.shape[1:]) == tuple(e - s for s, e in zip(start, end, strict=True))


def test_prepare_writes_ras_int16_with_metadata_and_resumes(tmp_path, example_ct, capsys):
    manifest = _copy_cohort(tmp_path, example_ct)
    out = tmp_path / "prep"
    assert main(["prepare", str(manifest), "--out", str(out), "--num-workers", "2", "--progress", "false"]) == 0
    assert "2 volumes" in capsys.readouterr().out
    res = json.loads((out / "prepared.json").read_text())
    assert res["format"] == "swinunetr-prepared-v1" and res["numTraining"] == 2 and res["failed"] == []
    arrays = [np.load(out / e["image"], mmap_mode="r") for e in res["training"]]
    assert all(a.dtype == np.int16 for a in arrays)
    # the LPS copy, reoriented to RAS, is the same array as the RAS original
    np.testing.assert_array_equal(arrays[0], arrays[1])
    meta = json.loads((out / res["training"][0]["meta"]).read_text())
    src = np.asarray(nib.load(example_ct).dataobj)
    (x0, y0, z0), (x1, y1, z1) = meta["body_box"]
    np.testing.assert_array_equal(arrays[0], np.clip(src[x0:x1, y0:y1, z0:z1], -1024, 3071))
    assert meta["spacing"] == [3.0, 3.0, 3.0] and meta["source_shape"] == list(src.shape)
    assert list(arrays[0].shape) == meta["shape"] and meta["source"] == str(tmp_path / "ct0.nii.gz")
    # the stored grid's affine places voxel (0, 0, 0) at the box corner of the source grid
    corner = nib.load(example_ct).affine @ np.array([x0, y0, z0, 1.0])
    np.testing.assert_allclose(np.array(meta["affine"])[:, 3], corner, atol=1e-4)
    assert len(meta["source_sha256"]) == 64

    # a rerun skips finished volumes; a changed source is prepared again
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "volumes").iterdir()}
    shutil.copy(example_ct, tmp_path / "ct0.nii.gz")
    prepare(manifest, PrepareConfig(out=str(out), num_workers=1, progress=False))
    after = {p.name: p.stat().st_mtime_ns for p in (out / "volumes").iterdir()}
    name0, name1 = volume_name(str(tmp_path / "ct0.nii.gz")), volume_name(str(tmp_path / "ct1.nii.gz"))
    assert after[f"{name1}.npy"] == stamps[f"{name1}.npy"] and after[f"{name1}.json"] == stamps[f"{name1}.json"]
    assert after[f"{name0}.json"] != stamps[f"{name0}.json"]


def test_resampling_and_float16(tmp_path, example_ct):
    manifest = _copy_cohort(tmp_path, example_ct, n=1)
    res = prepare(manifest, PrepareConfig(out=str(tmp_path / "p"), spacing=[4.5, 4.5, 4.5], dtype="float16",
                                          progress=False))
    meta = json.loads((tmp_path / "p" / res["training"][0]["meta"]).read_text())
    arr = np.load(tmp_path / "p" / res["training"][0]["image"])
    assert arr.dtype == np.float16 and meta["spacing"] == [4.5, 4.5, 4.5]
    # 3 -> 4.5 mm
    assert all(abs(n - s * 3 / 4.5) <= 1 for n, s in zip(meta["source_shape"], (122, 101, 112), strict=True))
    assert not np.all(arr == np.rint(arr))  # bilinear resampling keeps fractional HU


def test_failures_are_reported_and_the_rest_kept(tmp_path, example_ct, capsys, monkeypatch):
    monkeypatch.delenv("SWINUNETR_TRACEBACK", raising=False)
    manifest = _copy_cohort(tmp_path, example_ct, n=1)
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti")
    data = json.loads(manifest.read_text())
    data["training"].append({"image": "bad.nii.gz"})
    manifest.write_text(json.dumps(data))
    assert main(["prepare", str(manifest), "--out", str(tmp_path / "p"), "--progress", "false"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG}: error: 1 of 2 volume(s) failed, e.g. {tmp_path / 'bad.nii.gz'}") and \
        err.count("\n") == 1
    res = json.loads((tmp_path / "p" / "prepared.json").read_text())
    assert res["numTraining"] == 1 and res["failed"][0]["source"] == str(tmp_path / "bad.nii.gz")


@pytest.mark.parametrize("argv, expected", [
    (["missing.json", "--out", "o"], "missing.json: manifest not found"),
    (["m.json"], "--out is required"),
    (["m.json", "--out", "o", "--dtype", "int8"], "--dtype 'int8': expected one of int16, float16"),
    (["m.json", "--out", "o", "--spacing", "1,2"], "need 3 positive voxel sizes"),
    (["m.json", "--out", "m.json"], "is a file, not a folder"),
])
def test_bad_input_is_one_line(tmp_path, example_ct, capsys, monkeypatch, argv, expected):
    monkeypatch.delenv("SWINUNETR_TRACEBACK", raising=False)
    monkeypatch.chdir(tmp_path)
    _copy_cohort(tmp_path, example_ct, n=1)
    assert main(["prepare", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG}: error: ") and expected in err and err.count("\n") == 1, err


def test_a_second_prepare_into_a_live_folder_is_refused_and_stale_temp_files_removed(tmp_path, example_ct, capsys,
                                                                                     monkeypatch):
    """Issue #27: two prepares into one folder mixed int16 and float16 volumes; the second is now refused."""
    monkeypatch.delenv("SWINUNETR_TRACEBACK", raising=False)
    manifest = _copy_cohort(tmp_path, example_ct, n=1)
    out = tmp_path / "p"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom swinunetr_lib.utils.run_lock import run_dir_lock\n"
         "with run_dir_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)\n", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        argv = ["prepare", str(manifest), "--out", str(out), "--progress", "false", "--dtype", "float16"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{out}: in use by another run (pid {holder.pid}" in err, err
        assert not (out / "volumes").exists() and not (out / "prepared.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock, as a kill -9 would
        holder.wait()
    # the killed prepare's temporary files (atomic writes cut short) are removed by the next prepare
    (out / "volumes").mkdir()
    stale = [out / "volumes" / ".ct0-0123abcd.npy.ab12cd34.tmp.npy", out / ".prepared.json.ab12cd34.tmp.json"]
    for p in stale:
        p.write_bytes(b"half")
    assert main(["prepare", str(manifest), "--out", str(out), "--progress", "false"]) == 0
    assert not [p for p in stale if p.exists()] and not (out / ".lock").exists()
