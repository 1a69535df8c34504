"""Manifest building from the three layouts, k-fold splits and labeled-fraction subsets."""
import json

import pytest
from monai.data import load_decathlon_datalist

from swinunetr_lib.data.__main__ import main as cli_main
from swinunetr_lib.data.manifest import (
    assign_folds,
    build_manifest,
    detect_layout,
    labeled_fraction_subsets,
    resolve_entries,
    split_fold,
    write_manifest,
)


def touch(root, *names):
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(b"")


def test_decathlon_layout(tmp_path):
    touch(tmp_path, *(f"imagesTr/spleen_{i}.nii.gz" for i in range(6)),
          *(f"labelsTr/spleen_{i}.nii.gz" for i in range(5)),
          "imagesTr/._spleen_0.nii.gz", "imagesTs/spleen_9.nii.gz", "imagesTr/notes.txt")
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "Spleen", "labels": {"0": "background", "1": "spleen"}}))
    m = build_manifest(tmp_path, n_folds=3)
    assert detect_layout(tmp_path) == "decathlon" and m["name"] == "Spleen" and m["labels"]["1"] == "spleen"
    assert [e["image"] for e in m["training"]] == [f"imagesTr/spleen_{i}.nii.gz" for i in range(6)]
    assert all(e["label"] == e["image"].replace("images", "labels") for e in m["training"][:5])
    assert "label" not in m["training"][5]  # unpaired image kept, unlabeled (the validator will flag it)
    assert m["test"] == [{"image": "imagesTs/spleen_9.nii.gz"}]
    path = write_manifest(m, tmp_path / "m.json")
    loaded = load_decathlon_datalist(str(path), True, "training", base_dir=str(tmp_path))
    assert loaded[0]["image"] == str(tmp_path / "imagesTr/spleen_0.nii.gz")
    assert resolve_entries(path, key="test")[0]["image"] == str(tmp_path / "imagesTs/spleen_9.nii.gz")


def test_btcv_and_flat_layouts(tmp_path):
    btcv = tmp_path / "btcv"
    touch(btcv, "img/img0001.nii.gz", "img/img0002.nii.gz", "label/label0001.nii.gz", "label/label0002.nii.gz")
    m = build_manifest(btcv, n_folds=1)
    assert detect_layout(btcv) == "btcv"
    assert m["training"] == [{"image": "img/img0001.nii.gz", "label": "label/label0001.nii.gz"},
                             {"image": "img/img0002.nii.gz", "label": "label/label0002.nii.gz"}]
    flat = tmp_path / "flat"
    touch(flat, "a.nii.gz", "sub/b.nii", "c.mha")
    m = build_manifest(flat, n_folds=1)
    assert m["training"] == [{"image": "a.nii.gz"}, {"image": "sub/b.nii"}]
    with pytest.raises(ValueError, match="no NIfTI images"):
        build_manifest(tmp_path / "btcv" / "img", layout="decathlon")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        build_manifest(tmp_path / "nope")


def test_folds_are_deterministic_balanced_and_partition():
    entries = [{"image": f"i{k:02d}.nii.gz", "label": f"l{k:02d}.nii.gz"} for k in range(23)]
    a, b = assign_folds(entries, 5, seed=1), assign_folds(list(reversed(entries)), 5, seed=1)
    fold_of = {e["image"]: e["fold"] for e in a}
    assert fold_of == {e["image"]: e["fold"] for e in b}  # independent of input order
    sizes = sorted(sum(f == k for f in fold_of.values()) for k in range(5))
    assert sizes == [4, 4, 5, 5, 5]
    assert fold_of != {e["image"]: e["fold"] for e in assign_folds(entries, 5, seed=2)}
    seen = []
    for k in range(5):
        train, val = split_fold({"training": a}, k)
        assert len(train) + len(val) == 23 and not {e["image"] for e in train} & {e["image"] for e in val}
        seen += [e["image"] for e in val]
    assert sorted(seen) == sorted(e["image"] for e in entries)
    with pytest.raises(ValueError, match="fold 7"):
        split_fold({"training": a}, 7)


def test_labeled_fraction_subsets_are_nested_and_sized():
    entries = [{"image": f"i{k}.nii.gz", "label": f"l{k}.nii.gz"} for k in range(24)] + [{"image": "u.nii.gz"}]
    subsets = labeled_fraction_subsets(entries, (0.1, 0.25, 0.5, 1.0), seed=0)
    assert [len(subsets[f]) for f in (0.1, 0.25, 0.5, 1.0)] == [3, 6, 12, 24]
    for small, big in ((0.1, 0.25), (0.25, 0.5), (0.5, 1.0)):
        assert {e["image"] for e in subsets[small]} <= {e["image"] for e in subsets[big]}
    assert subsets == labeled_fraction_subsets(entries, (0.1, 0.25, 0.5, 1.0), seed=0)
    assert len(labeled_fraction_subsets(entries[:3], (0.1,))[0.1]) == 1  # at least one case
    with pytest.raises(ValueError, match="not in"):
        labeled_fraction_subsets(entries, (1.5,))


def test_cli_build_manifest_with_fractions(tmp_path, capsys):
    touch(tmp_path / "d", *(f"imagesTr/c{i}.nii.gz" for i in range(4)), *(f"labelsTr/c{i}.nii.gz" for i in range(4)))
    out = tmp_path / "m.json"
    assert cli_main(["build-manifest", str(tmp_path / "d"), "--out", str(out), "--n-folds", "2",
                     "--fractions", "0.5,1"]) == 0
    assert len(json.loads(out.read_text())["training"]) == 4
    assert json.loads((tmp_path / "m_frac50.json").read_text())["numTraining"] == 2
    assert cli_main(["build-manifest", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_resolve_entries_rejects_non_string_paths(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"training": [{"image": "a.nii.gz"}, {"image": 5}]}))
    with pytest.raises(ValueError, match=r"m\.json: training\[1\]\['image'\] must be a non-empty path string, got 5"):
        resolve_entries(path)
    with pytest.raises(ValueError, match=r"validation\[0\]\['label'\]"):
        resolve_entries({"validation": [{"image": "a", "label": None}]}, tmp_path, "validation")
    with pytest.raises(ValueError, match=r"training\[0\] must be an object"):
        resolve_entries({"training": [3]}, tmp_path)
    with pytest.raises(ValueError, match="'training' must be a list"):
        resolve_entries({"training": "a.nii.gz"}, tmp_path)
    assert resolve_entries({"test": ["t.nii.gz"]}, tmp_path, "test") == [{"image": str(tmp_path / "t.nii.gz")}]
    with pytest.raises(ValueError, match="is a directory"):
        resolve_entries(tmp_path)


def test_parse_fractions_and_n_folds():
    from swinunetr_lib.data.manifest import parse_fractions

    assert parse_fractions("0.1, 0.25,1,1") == [0.1, 0.25, 1.0]
    for bad, msg in (("abc", "'abc' is not a number"), ("0.5,2", "not in"), ("nan", "not in"), ("", "not a number")):
        with pytest.raises(ValueError, match=f"--fractions .*{msg}"):
            parse_fractions(bad)
    with pytest.raises(ValueError, match="n_folds must be"):
        build_manifest("/nonexistent", n_folds=-2)
