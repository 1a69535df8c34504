"""Validator: a corpus of malformed inputs, each with its own message; all reported at once; nothing modified."""
import hashlib
import json
import os

import nibabel as nib
import numpy as np
import pytest

from swinunetr_lib.data.__main__ import main as cli_main
from swinunetr_lib.data.validate import validate_manifest

LABELS = {str(i): f"class{i}" for i in range(14)}
AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])


def ct(shape=(16, 16, 12)):
    """A tiny CT-like volume in HU: air outside, soft tissue body, one bone voxel."""
    img = np.full(shape, -1000, np.int16)
    img[3:-3, 3:-3, :] = 40
    img[8, 8, :] = 700
    return img


def lab(shape=(16, 16, 12), value=6):
    out = np.zeros(shape, np.uint8)
    out[5:9, 5:9, 3:8] = value
    return out


def save(root, rel, arr, affine=AFFINE):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), path)
    return rel


def write(root, manifest, name="m.json"):
    path = root / name
    path.write_text(json.dumps(manifest) if not isinstance(manifest, str) else manifest)
    return path


def pair(root, name, image=None, label=None, label_affine=AFFINE):
    img = save(root, f"imagesTr/{name}.nii.gz", ct() if image is None else image)
    lb = save(root, f"labelsTr/{name}.nii.gz", lab() if label is None else label, label_affine)
    return {"image": img, "label": lb}


def base(entries, **extra):
    return {"modality": {"0": "CT"}, "labels": LABELS, "training": entries, **extra}


def corrupt_gzip(root):
    e = pair(root, "x")
    p = root / e["image"]
    b = bytearray(p.read_bytes())
    for i in range(60, min(len(b) - 8, 400)):
        b[i] ^= 0x5A
    p.write_bytes(bytes(b))
    return base([e])


def not_gzip(root):
    e = pair(root, "x")
    (root / e["image"]).write_bytes(b"plain text, not gzip")
    return base([e])


def truncated_gz(root):
    e = pair(root, "x", image=np.random.default_rng(0).integers(-1000, 1000, (40, 40, 30)).astype(np.int16),
             label=lab((40, 40, 30)))
    p = root / e["image"]
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return base([e])


def truncated_nii(root):
    img = save(root, "imagesTr/x.nii", ct())
    p = root / img
    p.write_bytes(p.read_bytes()[:-500])
    return base([{"image": img, "label": save(root, "labelsTr/x.nii.gz", lab())}])


def empty_file(root):
    e = pair(root, "x")
    (root / e["image"]).write_bytes(b"")
    return base([e])


def image_2d(root):
    return base([pair(root, "x", image=ct()[:, :, 0], label=lab()[:, :, 0])])


def image_5d(root):
    return base([pair(root, "x", image=ct()[..., None, None].repeat(2, 3).repeat(2, 4))])


def shape_mismatch(root):
    return base([pair(root, "x", label=lab((16, 16, 10)))])


def affine_mismatch(root):
    shifted = AFFINE.copy()
    shifted[:3, 3] = [0, 0, 6.0]
    return base([pair(root, "x", label_affine=shifted)])


def label_out_of_range(root):
    return base([pair(root, "x", label=lab(value=20))])


def label_not_integer(root):
    return base([pair(root, "x", label=lab().astype(np.float32) * 0.3)])


def nan_image(root):
    img = ct().astype(np.float32)
    img[0, 0, :3] = np.nan
    img[1, 1, 1] = np.inf
    return base([pair(root, "x", image=img)])


def normalised_ct(root):
    return base([pair(root, "x", image=(ct().astype(np.float32) + 1000) / 1700)])


def raw_pixels_ct(root):
    return base([pair(root, "x", image=(ct() + 1024).astype(np.int16))])


def raw_pixels_with_padding_ct(root):
    """GE-style: stored values (water ~ +1024) with -2000 padding outside the field of view, intercept not applied."""
    img = (ct() + 1024).astype(np.int16)
    img[:3] = -2000
    return base([pair(root, "x", image=img)])


def constant_image(root):
    return base([pair(root, "x", image=np.zeros((16, 16, 12), np.int16))])


def wrong_channels(root):
    img = np.stack([ct()] * 3, -1)
    return {"modality": {"0": "T1", "1": "T2"}, "labels": LABELS, "training": [pair(root, "x", image=img)]}


def path_escapes_root(root):
    save(root.parent, "outside.nii.gz", ct())
    return base([{"image": "../outside.nii.gz", "label": pair(root, "x")["label"]}])


def link_escapes_root(root):
    target = root.parent / "elsewhere.nii.gz"
    nib.save(nib.Nifti1Image(ct(), AFFINE), target)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    os.symlink(target, root / "imagesTr/link.nii.gz")
    return base([{"image": "imagesTr/link.nii.gz", "label": pair(root, "x")["label"]}])


def absolute_path(root):
    e = pair(root, "x")
    return base([{"image": str(root / e["image"]), "label": e["label"]}])


def duplicate(root):
    e = pair(root, "x")
    return base([e, pair(root, "y")], validation=[dict(e)])


def empty_list(root):
    return base([])


def missing_image_key(root):
    return base([{"label": pair(root, "x")["label"]}])


def missing_label_key(root):
    return base([{"image": pair(root, "x")["image"]}])


def missing_file(root):
    return base([{"image": "imagesTr/ghost.nii.gz", "label": pair(root, "x")["label"]}])


def folder_not_file(root):
    (root / "imagesTr" / "dir.nii.gz").mkdir(parents=True)
    return base([{"image": "imagesTr/dir.nii.gz", "label": pair(root, "x")["label"]}])


def bad_json(root):
    return '{"training": [ {"image": '


def not_an_object(root):
    return [{"image": "a.nii.gz"}]


def no_lists(root):
    return {"name": "nothing", "labels": LABELS}


def entry_not_object(root):
    return base(["imagesTr/x.nii.gz"])


# (builder, expected code, entry named in the message, words the message must contain)
CORPUS = [
    (corrupt_gzip, "corrupt_gzip", "training[0] image", "gzip stream is corrupt"),
    (not_gzip, "corrupt_gzip", "training[0] image", "not a gzip stream"),
    (truncated_gz, "truncated", "training[0] image", "truncated"),
    (truncated_nii, "truncated", "training[0] image", "truncated"),
    (empty_file, "unreadable", "training[0] image", "empty (0 bytes)"),
    (image_2d, "not_3d", "training[0] image", "image is 2D"),
    (image_5d, "not_3d", "training[0] image", "image is 5D"),
    (shape_mismatch, "shape_mismatch", "training[0] label", "image shape (16, 16, 12) != label shape (16, 16, 10)"),
    (affine_mismatch, "affine_mismatch", "training[0] label", "not on the image grid"),
    (label_out_of_range, "label_out_of_range", "training[0] label", "label values [20] are not task classes 0..13"),
    (label_not_integer, "label_not_integer", "training[0] label", "non-integer"),
    (nan_image, "nan_inf", "training[0] image", "3 NaN and 1 Inf"),
    (normalised_ct, "implausible_hu", "training[0] image", "normalised, not Hounsfield"),
    (raw_pixels_ct, "implausible_hu", "training[0] image", "RescaleIntercept not applied"),
    (raw_pixels_with_padding_ct, "implausible_hu", "training[0] image", "raw stored pixels with a padding value"),
    (constant_image, "constant_image", "training[0] image", "every voxel has the value 0"),
    (wrong_channels, "channels", "training[0] image", "3 channels"),
    (path_escapes_root, "outside_root", "training[0] image", "leaves the data root"),
    (link_escapes_root, "outside_root", "training[0] image", "through a link"),
    (absolute_path, "absolute_path", "training[0] image", "path is absolute"),
    (duplicate, "duplicate", "validation[0] image", "same image as training[0]"),
    (empty_list, "empty_list", "manifest", "list 'training' is empty"),
    (missing_image_key, "missing_key", "training[0]", "no 'image' key"),
    (missing_label_key, "missing_key", "training[0]", "no 'label' key"),
    (missing_file, "missing_file", "training[0] image", "does not exist"),
    (folder_not_file, "not_a_file", "training[0] image", "is a folder"),
    (bad_json, "bad_json", "manifest", "not valid JSON"),
    (not_an_object, "not_an_object", "manifest", "must be an object"),
    (no_lists, "no_lists", "manifest", "none of the data lists"),
    (entry_not_object, "bad_entry", "training[0]", "must be an object"),
]


def digest(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("build,code,entry,words", CORPUS, ids=[c[0].__name__ for c in CORPUS])
def test_each_malformed_input_gets_its_specific_message(tmp_path, build, code, entry, words):
    root = tmp_path / "root"
    root.mkdir()
    manifest = write(root, build(root))
    before = digest(tmp_path)
    report = validate_manifest(manifest)
    assert digest(tmp_path) == before  # validation never modifies anything
    matching = [p for p in report.problems if p.code == code]
    assert matching, f"expected {code}, got {[str(p) for p in report.problems]}"
    text = str(matching[0])
    assert f"] {entry}" in text and words in text, text
    assert not report.ok
    assert "internal_error" not in report.codes()


def test_every_problem_reported_at_once_and_good_entries_pass(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    good = [pair(root, f"good{i}") for i in range(2)]
    entries = []  # each builder writes files named "x", so each gets its own sub-folder
    for i, builder in enumerate([shape_mismatch, label_out_of_range, nan_image, missing_file]):
        sub = root / f"case{i}"
        sub.mkdir()
        m = builder(sub)
        entries += [{k: f"case{i}/{v}" for k, v in e.items()} for e in m["training"]]
    report = validate_manifest(write(root, base(good + entries, validation=[])))
    assert {"shape_mismatch", "label_out_of_range", "nan_inf", "missing_file", "empty_list"} <= report.codes()
    assert [r["status"] for r in report.table().to_dict("records")][:2] == ["ok", "ok"]
    assert {p.entry for p in report.errors} == {"training[2]", "training[3]", "training[4]", "training[5]"}
    assert report.table().loc[0, "shape"] == "16x16x12" and report.table().loc[0, "value_min"] == -1000


def test_absent_class_is_not_a_problem_and_cli_exit_codes(tmp_path, capsys):
    root = tmp_path / "root"
    root.mkdir()
    manifest = write(root, base([pair(root, "a")]))  # only class 6 present of 0..13
    report = validate_manifest(manifest)
    assert report.ok and report.problems == []
    msd_style = write(root, base([pair(root, "b")], test=["./imagesTr/a.nii.gz"]), "msd.json")  # MSD test list: strings
    assert validate_manifest(msd_style).problems == []
    assert cli_main(["validate", str(manifest), "--root", str(root)]) == 0
    bad = write(root, base([{"image": "imagesTr/ghost.nii.gz", "label": "labelsTr/a.nii.gz"}]), "bad.json")
    assert cli_main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "training[0] image 'imagesTr/ghost.nii.gz': file does not exist" in out
    assert cli_main(["validate", str(root / "missing.json")]) == 1
    assert "does not exist" in capsys.readouterr().out
