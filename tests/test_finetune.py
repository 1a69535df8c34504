"""Fine-tuning: a tiny run end to end, exact resume, config errors. Also holds the helpers other
fine-tuning tests import (tiny phantom cohorts, a random-weight model.pt)."""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from swinunetr_lib.data.phantom import make_abdomen_phantom, make_msd_phantom, write_phantom
from swinunetr_lib.experiments.finetune_run import init_feature_size_warning
from swinunetr_lib.finetune.run import FinetuneConfig, finetune
from swinunetr_lib.finetune.task_presets import TaskPreset
from swinunetr_lib.models.swin_unetr import build_swinunetr, encoder_feature_size
from swinunetr_lib.pretrain.model import export_encoder
from swinunetr_lib.pretrain.run import PretrainConfig
from swinunetr_lib.train.loop import TrainConfig

TINY_ROI = [64, 32, 32]  # smallest cheap SwinUNETR input: 32^3 would leave one voxel at the bottleneck


def make_tiny_cohort(root: Path, n_train: int = 2, n_val: int = 1, kind: str = "btcv",
                     spacing: tuple[float, float, float] = (8.0, 8.0, 8.0)) -> Path:
    """Write phantom cases and a decathlon manifest (relative paths); returns the manifest path."""
    lists: dict[str, list] = {"training": [], "validation": []}
    for i in range(n_train + n_val):
        if kind == "btcv":
            ph = make_abdomen_phantom(i, spacing=spacing)
        elif kind == "ct":
            ph = make_msd_phantom(i, "ct_single_organ", spacing=spacing)
        else:
            ph = make_msd_phantom(i, "mr_multichannel", spacing=spacing, n_channels=2)
        img, lab = f"imagesTr/case{i}.nii.gz", f"labelsTr/case{i}.nii.gz"
        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        (root / "labelsTr").mkdir(exist_ok=True)
        write_phantom(root / img, root / lab, ph)
        lists["training" if i < n_train else "validation"].append({"image": img, "label": lab})
    (root / "dataset.json").write_text(json.dumps(lists))
    return root / "dataset.json"


def save_random_model(path: Path, preset: TaskPreset, feature_size: int = 12) -> Path:
    """A model.pt as finetune writes it, with untrained weights (for geometry / error tests)."""
    model = build_swinunetr(preset.in_channels, preset.out_channels, feature_size=feature_size)
    meta = {"task": preset.name, "in_channels": preset.in_channels, "out_channels": preset.out_channels,
            "feature_size": feature_size, "preset": preset.to_dict()}
    torch.save({"state_dict": model.state_dict(), "finetune": meta}, path)
    return path


def _cfg(manifest: Path, run_dir: Path, **kw) -> FinetuneConfig:
    base = dict(task="demo_btcv", data_manifest=str(manifest), run_dir=str(run_dir), feature_size=12,
                roi_size=TINY_ROI, spacing=[8.0, 8.0, 8.0], num_samples=1, max_steps=3, warmup_steps=1,
                lr=1e-3, val_interval=0, log_every=1, checkpoint_every=1, progress=False, device="cpu",
                deterministic=True)
    base.update(kw)
    return FinetuneConfig.from_dict(base)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return make_tiny_cohort(tmp_path_factory.mktemp("cohort"))


def test_tiny_run_from_official_weights_resumes_exactly(cohort, tmp_path):
    official = export_encoder(build_swinunetr(1, 14, feature_size=12), tmp_path / "model_swinvit.pt")
    kw = dict(val_interval=3, init="official", pretrained=str(official))
    straight = finetune(_cfg(cohort, tmp_path / "a", **kw))
    finetune(_cfg(cohort, tmp_path / "b", **kw), stop_after=1)  # interrupted after step 1 ...
    resumed = finetune(_cfg(cohort, tmp_path / "b", **kw))     # ... and continued to step 3
    assert straight.load_report is not None and straight.load_report.loaded == straight.load_report.total
    assert straight.fit.step == resumed.fit.step == 3

    # same batches, same augmentation, same LR and optimizer state: bitwise identical losses and weights
    # (compare last.pt: the interrupted run also validated at its stop, so its best.pt may be step 1's)
    la = [(r["loss"], r["grad_norm"]) for r in straight.fit.history if "loss" in r]
    lb = [(r["loss"], r["grad_norm"]) for r in resumed.fit.history if "loss" in r]
    assert len(la) == 3 and la == lb
    a = torch.load(straight.run_dir / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(resumed.run_dir / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    # the checkpoint records the task so inference can rebuild it; validation was logged per class
    meta = torch.load(straight.model_path)["finetune"]
    assert meta["task"] == "demo_btcv" and meta["out_channels"] == 14 and meta["in_channels"] == 1
    assert meta["roi_size"] == TINY_ROI and meta["spacing"] == [8.0, 8.0, 8.0] and meta["intensity"] == "ct_window"
    assert straight.best_mean_dice is not None and 0.0 <= straight.best_mean_dice <= 1.0
    assert (straight.run_dir / "checkpoints" / "best.pt").is_file()
    header = (straight.run_dir / "metrics.csv").read_text().splitlines()[0]
    assert "val_mean_dice" in header and "val_dice_liver" in header


def test_bad_configs_fail_clearly(cohort, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        finetune(_cfg(tmp_path / "nope.json", tmp_path / "r"))
    with pytest.raises(ValueError, match="validation"):
        empty = cohort.parent / "noval.json"  # beside the cohort's files (a link to them would leave the root)
        data = json.loads(cohort.read_text())
        empty.write_text(json.dumps({"training": data["training"], "validation": []}))
        finetune(_cfg(empty, tmp_path / "r", val_interval=1))
    with pytest.raises(ValueError, match=r"case0.nii.gz: 1 channel\(s\), task demo_mr expects 2"):
        finetune(_cfg(cohort, tmp_path / "r", task="demo_mr"))
    with pytest.raises(FileNotFoundError, match="missing.pt: pretrained encoder for init='ssl' not found"):
        finetune(_cfg(cohort, tmp_path / "r", init="ssl", pretrained=str(tmp_path / "missing.pt")))
    with pytest.raises(Exception, match="unknown parameter"):
        FinetuneConfig.from_dict({"max_step": 3})


def test_presets_cover_btcv_and_all_ten_msd_tasks():
    import numpy as np
    from monai.data import MetaTensor

    from swinunetr_lib.data.registry import dataset_info
    from swinunetr_lib.finetune.task_presets import get_preset, intensity_transform, msd_tasks

    btcv = get_preset("btcv")
    assert (btcv.out_channels, btcv.spacing, btcv.window, btcv.roi_size) == \
        (14, (1.5, 1.5, 2.0), (-175.0, 250.0), (96, 96, 96))
    assert len(msd_tasks()) == 10
    for task in msd_tasks():
        p, info = get_preset(task), dataset_info(task)
        assert p.in_channels == info.input_channels and p.out_channels == info.num_classes
        assert p.intensity == ("ct_window" if p.modality == "CT" else "mr_zscore")
    assert {get_preset(t).in_channels for t in msd_tasks()} == {1, 2, 4}

    # CT: clip to the window and scale to [0, 1]; the window's ends map to 0 and 1
    hu = MetaTensor(torch.tensor([[[[-1000.0, -175.0, 37.5, 250.0, 900.0]]]]))
    out = intensity_transform(btcv)({"image": hu})["image"]
    assert torch.allclose(out.flatten(), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    # MR: each channel z-scored over its non-zero voxels; zeros (outside the body) stay zero
    rng = np.random.default_rng(0)
    mr = np.zeros((2, 4, 4, 4), np.float32)
    mr[0, 1:3] = rng.normal(300, 50, (2, 4, 4))
    mr[1, 1:3] = rng.normal(40, 5, (2, 4, 4))
    z = np.asarray(intensity_transform(get_preset("Task05_Prostate"))({"image": MetaTensor(torch.tensor(mr))})["image"])
    for c in range(2):
        inside = z[c, 1:3]
        assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1) < 1e-4 and (z[c, 0] == 0).all()


def _right_kidney_is_right(crop: dict) -> bool | None:
    """True when the right kidney's centroid lies on the patient's right (+x in RAS) of the left one."""
    lab = crop["label"][0]
    right, left = (torch.nonzero(lab == c).float() for c in (2, 3))
    if len(right) == 0 or len(left) == 0:
        return None
    return bool(right[:, 0].mean() > left[:, 0].mean())


def test_demo_augmentation_keeps_left_and_right(tmp_path):
    """demo_btcv draws no flips or turns (left/right organs keep their labels' sides); btcv's recipe does."""
    import numpy as np

    from swinunetr_lib.finetune.run import AugmentedCases, preprocess_cases, resolve_preset

    manifest = make_tiny_cohort(tmp_path, n_train=1, n_val=0)
    entries = [{k: str(tmp_path / v) for k, v in e.items()} for e in json.loads(manifest.read_text())["training"]]
    sides = {}
    for task in ("demo_btcv", "btcv"):
        preset = resolve_preset(FinetuneConfig(task=task, spacing=[8.0, 8.0, 8.0], roi_size=[64, 64, 32],
                                               num_samples=1))
        data = AugmentedCases(preprocess_cases(entries, preset, with_indices=True), preset)
        np.random.seed(0)
        sides[task] = [s for s in (_right_kidney_is_right(data[0][0]) for _ in range(40)) if s is not None]
    assert len(sides["demo_btcv"]) >= 30 and all(sides["demo_btcv"])
    assert not all(sides["btcv"])  # the official recipe's lateral flips do swap them


def test_validation_from_folds_when_the_manifest_has_no_validation_list(tmp_path):
    """A manifest from `build-manifest` has "fold" keys and no "validation" list: fold 0 (or val_fold) validates."""
    from swinunetr_lib.data.manifest import build_manifest
    from swinunetr_lib.finetune.run import split_entries as _entries

    make_tiny_cohort(tmp_path, n_train=3, n_val=0)
    scanned = build_manifest(tmp_path, layout="auto", n_folds=3, seed=0)
    assert "validation" not in scanned or not scanned["validation"]
    scanned.pop("validation", None)
    manifest = tmp_path / "folds.json"
    manifest.write_text(json.dumps(scanned))
    folds = {str(tmp_path / e["image"]): e["fold"] for e in scanned["training"]}
    for val_fold in (None, 2):
        train, val = _entries(_cfg(manifest, tmp_path / "run", val_interval=1, val_fold=val_fold))
        assert len(train) == 2 and len(val) == 1
        assert folds[val[0]["image"]] == (val_fold or 0) and all(folds[e["image"]] != (val_fold or 0) for e in train)
    with pytest.raises(ValueError, match="fold 7"):
        _entries(_cfg(manifest, tmp_path / "run", val_interval=1, val_fold=7))
    for e in scanned["training"]:
        del e["fold"]
    manifest.write_text(json.dumps(scanned))
    # An official MSD dataset.json: neither list nor folds -> 5 deterministic folds, whatever the training seed.
    splits = [_entries(_cfg(manifest, tmp_path / "run", val_interval=1, seed=s)) for s in (0, 1)]
    assert splits[0] == splits[1] and len(splits[0][1]) == 1 and len(splits[0][0]) == 2
    assert len(_entries(_cfg(manifest, tmp_path / "run", val_interval=0))[0]) == 3  # no validation wanted: all train


def test_finetune_cli_one_line_errors_and_no_files_written(tmp_path, capsys):
    from swinunetr_lib.finetune.run import main

    manifest = make_tiny_cohort(tmp_path / "cohort", n_train=1, n_val=1)
    image = tmp_path / "cohort" / "imagesTr" / "case0.nii.gz"
    image.write_bytes(image.read_bytes()[:200])  # corrupt the training image
    run_dir = tmp_path / "run"
    base = ["--task", "demo_btcv", "--data-manifest", str(manifest), "--run-dir", str(run_dir), "--feature-size", "12",
            "--spacing", "8,8,8", "--max-steps", "1", "--device", "cpu"]
    for extra, expected in [([], f"{image}: preprocessing failed"),
                            (["--roi-size", "50"], "roi_size=50: need 3 positive"),
                            (["--roi-size", "32"], "roi_size=32: 32^3 leaves one voxel"),
                            (["--max-steps", "0"], "max_steps=0 must be >= 1"), (["--device", "tpu"], "device='tpu'")]:
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (extra, err)
        assert not (run_dir / "finetune_meta.json").exists()


def test_label_balanced_crops_hit_the_organ_in_a_case_smaller_than_the_roi(tmp_path):
    """The cached fg/bg indices are flat positions: they must refer to the padded array the crops come from."""
    import nibabel as nib
    import numpy as np

    from swinunetr_lib.finetune.run import AugmentedCases, preprocess_cases
    from swinunetr_lib.finetune.task_presets import get_preset

    image = np.full((20, 96, 24), 100.0, dtype=np.float32)  # soft tissue; 20 and 24 voxels < the 32^3 ROI
    label = np.zeros(image.shape, dtype=np.uint8)
    label[15:18, 80:83, 18:21] = 1  # a small organ far along y, where the crop position matters
    for name, arr in (("img", image), ("lab", label)):
        nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / f"{name}.nii.gz")
    preset = get_preset("demo_ct", spacing=None, roi_size=(32, 32, 32)).with_overrides(
        pos=1.0, neg=0.0, num_samples=4, flip_prob=0.0, rot90_prob=0.0)
    cases = preprocess_cases([{"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "lab.nii.gz")}],
                             preset, with_indices=True)
    data = AugmentedCases(cases, preset)
    np.random.seed(0)
    crops = [c for _ in range(10) for c in data[0]]
    assert all(c["label"].sum() > 0 for c in crops)  # pos=1: every crop is centred on the organ


def test_non_square_axial_roi_drops_90_degree_turns_with_a_note(capsys):
    from swinunetr_lib.finetune.run import resolve_preset
    from swinunetr_lib.finetune.task_presets import augment_transforms, get_preset

    preset = resolve_preset(FinetuneConfig(task="btcv", roi_size=[64, 96, 32]))
    assert preset.rot90_prob == 0.0 and "90-degree turns are left out" in capsys.readouterr().out
    assert resolve_preset(FinetuneConfig(task="btcv", roi_size=96)).rot90_prob > 0
    with pytest.raises(ValueError, match="square axial ROI"):
        augment_transforms(get_preset("btcv", roi_size=(64, 96, 32)))


# --- checked data, untrusted checkpoints, early option checks (issue #12) --------------------------------

def _one_line_error(main, argv, capsys) -> str:
    """Run the CLI; assert exit status 2 and a one-line error without a traceback; return it."""
    assert main([str(a) for a in argv]) == 2, argv
    err = capsys.readouterr().err
    assert err.startswith("python -m swinunetr_lib.finetune: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_a_label_of_another_shape_is_refused_naming_the_file(tmp_path, capsys):
    import nibabel as nib
    import numpy as np

    from swinunetr_lib.finetune.run import main

    manifest = make_tiny_cohort(tmp_path / "cohort", n_train=2, n_val=0)
    label = tmp_path / "cohort" / "labelsTr" / "case1.nii.gz"
    img = nib.load(label)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:, :-3], img.affine, img.header), label)
    run_dir = tmp_path / "run"
    err = _one_line_error(main, ["--task", "demo_btcv", "--data-manifest", manifest, "--run-dir", run_dir,
                                 "--feature-size", "12", "--roi-size", "[64,32,32]", "--spacing", "8,8,8",
                                 "--max-steps", "1", "--val-interval", "0", "--device", "cpu"], capsys)
    assert f"{label}: label shape (" in err and "differs from its image's (" in err and "not on the image grid" in err
    assert not run_dir.exists() or not any(run_dir.rglob("*"))


def test_booby_trapped_checkpoints_are_refused_without_running_them(cohort, tmp_path, capsys, booby_trap):
    from swinunetr_lib.finetune.run import main

    evil = tmp_path / "model_swinvit.pt"
    marker = booby_trap(evil)
    run_dir = tmp_path / "run"
    err = _one_line_error(main, ["--task", "demo_btcv", "--data-manifest", cohort, "--run-dir", run_dir,
                                 "--feature-size", "12", "--init", "ssl", "--pretrained", evil, "--device", "cpu"],
                          capsys)
    assert f"{evil}: refused to load: the file holds Python objects (posix.system)" in err and not marker.exists()
    booby_trap(run_dir / "checkpoints" / "last.pt", lambda trap: {"model": {}, "rng": trap})
    with pytest.raises(ValueError, match=r"last.pt: cannot resume from this checkpoint \(refused to load"):
        finetune(_cfg(cohort, run_dir, max_steps=1))
    assert not marker.exists()


def test_bad_options_and_paths_outside_the_data_root_fail_before_any_data_is_read(tmp_path, capsys):
    from swinunetr_lib.finetune.run import main

    missing = tmp_path / "no_manifest.json"  # the option errors come first: the manifest is never looked at
    base = ["--task", "demo_btcv", "--data-manifest", missing, "--run-dir", tmp_path / "run", "--device", "cpu"]
    for extra, expected in [(["--sw-batch-size", "0"], "sw_batch_size must be a whole number >= 1"),
                            (["--overlap", "1.5"], "overlap must be at least 0 and below 1"),
                            (["--log-every", "0"], "log_every=0 must be >= 1")]:
        assert expected in _one_line_error(main, base + extra, capsys), extra
    cohort = make_tiny_cohort(tmp_path / "cohort", n_train=2, n_val=0)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.nii.gz").write_bytes((tmp_path / "cohort" / "imagesTr" / "case0.nii.gz").read_bytes())
    data = json.loads(cohort.read_text())
    data["training"][1]["image"] = "../elsewhere/secret.nii.gz"
    cohort.write_text(json.dumps(data))
    err = _one_line_error(main, ["--task", "demo_btcv", "--data-manifest", cohort, "--run-dir", tmp_path / "run",
                                 "--device", "cpu", "--max-steps", "1"], capsys)
    assert f"{cohort}: training[1] image '../elsewhere/secret.nii.gz' leaves the data root" in err
    assert not (tmp_path / "run").exists()


def test_ssl_init_takes_the_encoders_feature_size_and_says_so(cohort, tmp_path, capsys, monkeypatch):
    """Notebook 02's demo encoder is feature size 12; notebook 03 defaults to 48: init='ssl' must not fail.
    The encoder file is read once, for its feature size and its weights."""
    encoder = export_encoder(build_swinunetr(1, 14, feature_size=12), tmp_path / "model_swinvit.pt")
    assert encoder_feature_size(encoder) == 12
    reads: list[Path] = []  # every unpickling, whichever helper of the library asks for it
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda path, *a, **k: reads.append(Path(path)) or real_load(path, *a, **k))
    res = finetune(_cfg(cohort, tmp_path / "r", init="ssl", pretrained=str(encoder), feature_size=48, max_steps=1))
    assert reads.count(encoder) == 1, reads
    out = capsys.readouterr().out
    assert "WARNING" in out and "has feature size 12; fine-tuning at feature_size=12 instead of 48" in out
    assert "NOT comparable with runs at feature_size=48" in out  # issue #26: said loudly, not only noted
    assert res.load_report is not None and res.load_report.loaded == res.load_report.total
    assert res.load_report.source == str(encoder)  # the report names the file, not an in-memory object
    assert torch.load(res.model_path)["finetune"]["feature_size"] == 12
    assert encoder_feature_size(tmp_path / "missing.pt") is None
    # notebook 03 says it before training, from the same library text; nothing for a matching size or scratch
    said = init_feature_size_warning(_cfg(cohort, tmp_path / "s", init="ssl", pretrained=str(encoder), feature_size=48))
    assert said is not None and "NOT comparable" in said and said in out
    assert init_feature_size_warning(_cfg(cohort, tmp_path / "s", init="ssl", pretrained=str(encoder),
                                          feature_size=12)) is None
    assert init_feature_size_warning(_cfg(cohort, tmp_path / "s", feature_size=48)) is None


def test_both_stage_configs_derive_the_loops_settings_the_same_way():
    """FinetuneConfig is a TrainConfig (as PretrainConfig is): every loop setting reaches fit, including the two
    the hand-made copy dropped (deterministic, dist_timeout_min); fine-tuning keeps its own defaults (#24)."""
    loop_names = {f.name for f in fields(TrainConfig)}
    for stage in (FinetuneConfig, PretrainConfig):
        assert issubclass(stage, TrainConfig) and loop_names <= {f.name for f in fields(stage)}
    cfg = FinetuneConfig(deterministic=True, dist_timeout_min=5.0, val_interval=50, max_steps=7)
    loop = cfg.train_config()
    assert type(loop) is TrainConfig and loop.deterministic and loop.dist_timeout_min == 5.0
    assert (loop.max_steps, loop.val_interval, loop.best_metric) == (7, 50, "mean_dice")
    assert FinetuneConfig(val_interval=0).train_config().best_metric == ""  # nothing to keep a best.pt by
    assert (FinetuneConfig().lr, FinetuneConfig().max_steps) == (1e-4, 30000)  # fine-tuning's own defaults
    assert PretrainConfig(deterministic=True).train_config().deterministic
