"""Demo cohort: real example + phantoms, valid manifests, held-out split, idempotent builds; registry."""
import json

import nibabel as nib
import numpy as np
import pytest

from swinunetr_lib.data.cohort import DemoCohortConfig, build_demo_cohort
from swinunetr_lib.data.registry import dataset_info, load_registry, pretraining_total, registry_table
from swinunetr_lib.data.validate import validate_manifest


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return build_demo_cohort(tmp_path_factory.mktemp("cohort"), n_phantoms=4, n_validation=1, n_unlabeled=2, n_msd=3)


def test_manifests_are_valid_and_relative(cohort):
    for name, path in cohort.manifests().items():
        report = validate_manifest(path)
        assert report.ok and not report.problems, f"{name}: {report}"
        m = json.loads(path.read_text())
        for key in ("training", "validation"):
            for e in m.get(key, []):
                assert not e["image"].startswith("/") and ".." not in e["image"]
    ft = json.loads(cohort.finetune_manifest.read_text())
    assert [e["image"] for e in ft["validation"]] == ["imagesTr/phantom_003.nii.gz"]
    train_imgs = {e["image"] for e in ft["training"]}
    assert "imagesTr/example_ct_sm.nii.gz" in train_imgs and len(train_imgs) == 4
    assert not train_imgs & {e["image"] for e in ft["validation"]}  # held out
    assert "SYNTHETIC PHANTOMS" in ft["description"] and "imagesTr/phantom_000.nii.gz" in ft["phantoms"]
    pre = json.loads(cohort.pretrain_manifest.read_text())
    assert all(set(e) == {"image"} for e in pre["training"] + pre["validation"])
    pre_imgs = {e["image"] for e in pre["training"] + pre["validation"]}
    assert "unlabeled/example_ct.nii.gz" in pre_imgs and not pre_imgs & {e["image"] for e in ft["validation"]}


def test_real_example_is_remapped_to_btcv(cohort):
    lab = np.asanyarray(nib.load(cohort.root / "labelsTr/example_ct_sm.nii.gz").dataobj)
    assert set(np.unique(lab)) == set(range(14)) - {5}  # no esophagus in the example
    img = nib.load(cohort.root / "imagesTr/example_ct_sm.nii.gz")
    label_affine = nib.load(cohort.root / "labelsTr/example_ct_sm.nii.gz").affine
    assert img.shape == lab.shape and np.allclose(img.affine, label_affine)


def test_msd_tasks(cohort):
    mr = json.loads(cohort.msd_manifests["Task902_PhantomMR"].read_text())
    img = nib.load(cohort.msd_manifests["Task902_PhantomMR"].parent / mr["training"][0]["image"])
    assert img.ndim == 4 and img.shape[3] == len(mr["modality"]) == 2
    sp = json.loads(cohort.msd_manifests["Task901_PhantomSpleen"].read_text())
    assert sp["labels"] == {"0": "background", "1": "spleen"} and sp["numTraining"] == 2


def test_build_is_idempotent_and_parameters_matter(cohort):
    stamp = cohort.root / "cohort.json"
    mtime = stamp.stat().st_mtime_ns
    again = build_demo_cohort(cohort.root, n_phantoms=4, n_validation=1, n_unlabeled=2, n_msd=3)
    assert again == cohort and stamp.stat().st_mtime_ns == mtime
    cfg = DemoCohortConfig.from_dict({"out_dir": str(cohort.root), "n_phantoms": 4, "n_validation": 1,
                                      "n_unlabeled": 2, "n_msd": 3})
    assert cfg.build().params == cohort.params and stamp.stat().st_mtime_ns == mtime
    (cohort.root / "imagesTr/phantom_001.nii.gz").unlink()  # a damaged build is rebuilt
    build_demo_cohort(cohort.root, n_phantoms=4, n_validation=1, n_unlabeled=2, n_msd=3)
    assert (cohort.root / "imagesTr/phantom_001.nii.gz").is_file() and stamp.stat().st_mtime_ns != mtime
    with pytest.raises(ValueError, match="n_validation"):
        build_demo_cohort(cohort.root, n_phantoms=2, n_validation=2)


def test_registry():
    reg = load_registry()
    msd = [d for d in reg.values() if d.collection == "Medical Segmentation Decathlon"]
    assert len(msd) == 10 and all(d.num_training and d.labels and d.licence for d in msd)
    assert dataset_info("Task01_BrainTumour").input_channels == 4
    assert dataset_info("Task05_Prostate").input_channels == 2
    assert dataset_info("Task09_Spleen").num_training == 41
    assert dataset_info("BTCV").num_classes == 14 and dataset_info("BTCV").registration_required
    counts = {d.name: d.num_cases for d in reg.values() if d.kind == "pretrain"}
    assert counts == {"LUNA16": 888, "TCIA_Covid19": 771, "HNSCC": 1287, "TCIA_CT_Colonography": 1599, "LIDC_IDRI": 474}
    assert pretraining_total() == 5019
    assert len(registry_table("pretrain")) == 5
    with pytest.raises(KeyError, match="Task11"):
        dataset_info("Task11_Nope")


def test_bad_parameters_are_rejected_before_writing(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="out_dir .*file exists and is not a folder"):
        build_demo_cohort(f)
    with pytest.raises(ValueError, match="is a file, not a folder"):
        build_demo_cohort(f / "sub")
    for kw, msg in (({"spacing": (0, 3, 3)}, "spacing"), ({"spacing": (300, 300, 300)}, "too coarse"),
                    ({"shape": (4, 8, 8)}, "shape"), ({"n_msd": 0}, "n_msd"), ({"seed": -1}, "seed")):
        with pytest.raises(ValueError, match=msg):
            build_demo_cohort(tmp_path / "new", **kw)
        assert not (tmp_path / "new").exists()
