"""MONAI bundle export: the bundle run by MONAI's own runner gives swinunetr_lib.infer's label map; bad input."""
from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from test_finetune import _cfg, make_tiny_cohort, save_random_model

from swinunetr_lib.finetune.task_presets import TaskPreset, get_preset, preset_names
from swinunetr_lib.infer.bundle_values import (
    PRESET_FIELDS,
    BundleValueError,
    bundle_safe_value,
    bundle_values,
    checked_preset,
)
from swinunetr_lib.infer.export import ExportError, export_bundle, load_checkpoint, main
from swinunetr_lib.infer.predict import infer

# Non-trivial resampling (3 mm scan -> 4 x 4 x 4.5 mm) and a small ROI: 4 overlapping windows on the cropped
# scan. (A 32^3 ROI is too small: SwinUNETR's bottleneck would be 1 voxel, which instance norm refuses.)
TINY_PRESET = {"spacing": (4.0, 4.0, 4.5), "roi_size": (64, 64, 32)}
PROG = "python -m swinunetr_lib.infer.export"
HAS_FIRE = importlib.util.find_spec("fire") is not None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = save_random_model(tmp_path_factory.mktemp("ckpt") / "model.pt", get_preset("demo_btcv", **TINY_PRESET))
    obj = torch.load(path, weights_only=True)
    obj.update(best_mean_dice=0.5, step=2)  # as finetune writes it
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def scan(example_ct_sm, tmp_path_factory):
    """A crop of the example CT (122 x 101 x 30, 3 mm, RAS) stored in LPS order, so orientation, spacing and
    foreground crop all have something to invert."""
    img = nib.load(str(example_ct_sm))
    data = np.asarray(img.dataobj)[5:117, 5:96, 4:28]
    affine = img.affine.copy()
    affine[:3, 3] = (img.affine @ np.array([5, 5, 4, 1]))[:3]
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = data.shape[0] - 1, data.shape[1] - 1
    out = tmp_path_factory.mktemp("scan") / "ct_crop.nii.gz"
    nib.save(nib.Nifti1Image(data[::-1, ::-1].copy(), affine @ flip), str(out))
    assert nib.aff2axcodes(nib.load(str(out)).affine) == ("L", "P", "S")
    return out


@pytest.fixture(scope="module")
def reference_seg(checkpoint, scan, tmp_path_factory):
    """swinunetr_lib.infer's label map of ``scan`` by ``checkpoint``: what every bundle of its weights must give."""
    return infer(checkpoint, scan, tmp_path_factory.mktemp("infer") / "seg.nii.gz", device="cpu")


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory):
    return export_bundle(checkpoint, tmp_path_factory.mktemp("export") / "bundle", torchscript=True)


def test_bundle_layout_and_configs(bundle):
    names = sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file())
    assert names == ["LICENSE", "configs/inference.json", "configs/metadata.json", "docs/README.md",
                     "models/model.pt", "models/model.ts"]
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    cfg = json.loads((bundle / "configs/inference.json").read_text())
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    assert cfg["network_def"] == {"_target_": "SwinUNETR", "in_channels": 1, "out_channels": 14, "feature_size": 12}
    assert cfg["inferer"] == {"_target_": "SlidingWindowInferer", "roi_size": [64, 64, 32], "sw_batch_size": 4,
                              "overlap": 0.5, "mode": "gaussian"}
    assert cfg["label_names"]["0"] == "background" and cfg["label_names"]["1"] == "spleen"
    steps = {t["_target_"]: t for t in cfg["preprocessing"]["transforms"]}
    assert steps["Orientationd"]["axcodes"] == "RAS" and steps["Spacingd"]["pixdim"] == [4.0, 4.0, 4.5]
    assert (steps["ScaleIntensityRanged"]["a_min"], steps["ScaleIntensityRanged"]["a_max"]) == (-175.0, 250.0)
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == cfg["label_names"]
    assert meta["swinunetr_lib"]["step"] == 2 and meta["swinunetr_lib"]["preset"]["name"] == "demo_btcv"
    # models/model.pt: a plain state dict the bundle's network_def loads (strictly)
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs/inference.json"))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle / "models/model.pt", weights_only=True))


def test_monai_bundle_run_matches_infer(bundle, reference_seg, scan, tmp_path):
    from monai.bundle import run

    ref = reference_seg
    run(config_file=str(bundle / "configs/inference.json"), bundle_root=str(bundle),
        datalist=[str(scan)], output_dir=str(tmp_path / "bundle_out"), device="$torch.device('cpu')")
    out = tmp_path / "bundle_out" / "ct_crop_seg.nii.gz"
    a, b, src = nib.load(str(ref)), nib.load(str(out)), nib.load(str(scan))
    assert b.shape == src.shape == a.shape
    np.testing.assert_allclose(b.affine, src.affine, atol=1e-4)
    assert b.get_data_dtype() == np.uint8
    ours, theirs = np.asarray(a.dataobj), np.asarray(b.dataobj)
    assert len(np.unique(ours)) > 1  # several classes, so the comparison means something
    np.testing.assert_array_equal(theirs, ours)


def test_torchscript_matches_eager(bundle, checkpoint):
    state, _ = load_checkpoint(checkpoint)
    from swinunetr_lib.models.swin_unetr import build_swinunetr

    model = build_swinunetr(1, 14, feature_size=12).eval()
    model.load_state_dict(state)
    ts = torch.jit.load(str(bundle / "models/model.ts"))
    torch.manual_seed(0)
    x = torch.rand(2, 1, 64, 64, 32)  # batch 2: the trace (made at batch 1) generalises over the batch
    with torch.no_grad():
        torch.testing.assert_close(ts(x), model(x), rtol=1e-4, atol=1e-5)


def test_real_finetune_checkpoint_loads_with_weights_only(tmp_path):
    """A model.pt as finetune writes it (1 step on the tiny phantom cohort): its metadata (config, load report,
    best Dice) unpickles with weights_only=True, and the bundle's weights are the checkpoint's."""
    from swinunetr_lib.finetune.run import finetune

    result = finetune(_cfg(make_tiny_cohort(tmp_path / "cohort"), tmp_path / "run", max_steps=1, val_interval=1))
    out = export_bundle(result.model_path, tmp_path / "bundle")
    meta = json.loads((out / "configs/metadata.json").read_text())["swinunetr_lib"]
    assert meta["step"] == 1 and meta["best_mean_dice"] == pytest.approx(result.best_mean_dice)
    state = torch.load(out / "models/model.pt", weights_only=True)
    original = torch.load(result.model_path, weights_only=True)["state_dict"]
    assert state.keys() == original.keys() and all(torch.equal(state[k], original[k]) for k in state)


@pytest.mark.skipif(not HAS_FIRE, reason="python -m monai.bundle needs the fire package")
def test_python_dash_m_monai_bundle_run(bundle, scan, tmp_path):
    res = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                          str(bundle / "configs/inference.json"), "--bundle_root", str(bundle),
                          "--datalist", f"['{scan}']", "--output_dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert nib.load(str(tmp_path / "ct_crop_seg.nii.gz")).shape == nib.load(str(scan)).shape


# ------------------------------------------------------------------------------------------- bad input


@pytest.fixture
def cli(capsys, monkeypatch):
    monkeypatch.delenv("SWINUNETR_TRACEBACK", raising=False)

    def call(*argv) -> tuple[int, str]:
        code = main([str(a) for a in argv])
        return code, capsys.readouterr().err
    return call


def test_missing_checkpoint(cli, tmp_path):
    code, err = cli("bundle", "--checkpoint", tmp_path / "nope.pt", "--out", tmp_path / "b")
    assert code == 2 and err == f"{PROG}: error: {tmp_path / 'nope.pt'}: checkpoint not found\n"
    assert list(tmp_path.iterdir()) == []


def test_corrupt_checkpoint(cli, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    code, err = cli("bundle", "--checkpoint", bad, "--out", tmp_path / "b")
    assert code == 2 and err.startswith(f"{PROG}: error: {bad}: cannot be read as a torch checkpoint")
    assert err.count("\n") == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt"]


def test_checkpoint_without_finetune_meta(cli, checkpoint, tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": torch.load(checkpoint, weights_only=True)["state_dict"]}, plain)
    code, err = cli("bundle", "--checkpoint", plain, "--out", tmp_path / "b")
    assert code == 2 and err.startswith(f"{PROG}: error: {plain}: no fine-tuning metadata (task, channels, classes); "
                                        "expected model.pt written by swinunetr_lib.finetune") and err.count("\n") == 1
    assert not (tmp_path / "b").exists()


def test_pickled_code_is_not_loaded(cli, tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"finetune": {"task": "x"}, "state_dict": {}, "obj": Path("x")}, evil)  # needs weights_only=False
    code, err = cli("bundle", "--checkpoint", evil, "--out", tmp_path / "b")
    assert code == 2 and f"{evil}: refused to load: the file holds Python objects" in err and err.count("\n") == 1


def test_existing_non_empty_out(cli, checkpoint, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("keep me")
    code, err = cli("bundle", "--checkpoint", checkpoint, "--out", out)
    assert code == 2 and err == f"{PROG}: error: {out}: output folder exists and is not empty; give a new folder\n"
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_existing_empty_out_is_used(cli, checkpoint, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    code, err = cli("bundle", "--checkpoint", checkpoint, "--out", out)
    assert code == 0 and err == ""
    assert (out / "models/model.pt").is_file() and (out / "configs/inference.json").is_file()
    assert not (out / "models/model.ts").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_python_dash_m_reports_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SWINUNETR_TRACEBACK"}
    res = subprocess.run([sys.executable, "-m", "swinunetr_lib.infer.export", "bundle", "--checkpoint",
                          str(tmp_path / "missing.pt"), "--out", str(tmp_path / "c")],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    assert res.returncode == 2
    assert res.stderr == f"{PROG}: error: {tmp_path / 'missing.pt'}: checkpoint not found\n"
    assert list(tmp_path.iterdir()) == []


def test_load_checkpoint_errors_are_export_errors(tmp_path):
    ckpt = tmp_path / "partial.pt"
    torch.save({"state_dict": {}, "finetune": {"task": "x"}}, ckpt)
    with pytest.raises(ExportError, match="fine-tuning metadata lacks in_channels, out_channels, feature_size, preset"):
        load_checkpoint(ckpt)


def test_the_checkpoint_is_unpickled_once(checkpoint, monkeypatch):
    """Weights, metadata, best_mean_dice and step all come from one torch.load of model.pt."""
    reads: list[Path] = []  # every unpickling, whichever helper of the library asks for it
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda path, *a, **k: reads.append(Path(path)) or real_load(path, *a, **k))
    state, values = load_checkpoint(checkpoint)
    assert reads == [checkpoint]
    assert (values.best_mean_dice, values.step, values.preset.name) == (0.5, 2, "demo_btcv")
    obj = real_load(checkpoint, weights_only=True)
    assert all(torch.equal(v, obj["state_dict"][k]) for k, v in state.items())


# --------------------------------------------- checkpoint values MONAI's runner would evaluate (issue #27)

# What MONAI's config parser runs when a config string starts with "$": it creates MARKER in the working folder.
PAYLOAD = "$__import__('pathlib').Path('MARKER').touch()"
Mutation = Callable[[dict[str, Any], str], None]


def _put(*path: str | int) -> Mutation:
    """Put the payload at ``path`` in the checkpoint object (an int indexes a list)."""
    def put(obj: dict[str, Any], payload: str) -> None:
        node = obj
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = payload
    return put


def _as_key(obj: dict[str, Any], payload: str) -> None:
    labels = obj["finetune"]["preset"]["labels"]
    obj["finetune"]["preset"]["labels"] = {payload if k == "13" else k: v for k, v in labels.items()}


# (field the refusal names, how the payload goes in): every checkpoint value a bundle file holds.
P = ("finetune", "preset")
HOSTILE: list[tuple[str, Mutation]] = [
    ("in_channels", _put("finetune", "in_channels")),
    ("out_channels", _put("finetune", "out_channels")),
    ("feature_size", _put("finetune", "feature_size")),
    ("preset.name", _put(*P, "name")),                       # the task name
    ("preset.modality", _put(*P, "modality")),
    ("preset.labels[1]", _put(*P, "labels", "1")),           # a label name
    ("preset.labels key", _as_key),                          # a class id
    ("preset.labels", _put(*P, "labels")),
    ("preset.in_channels", _put(*P, "in_channels")),
    ("preset.channel_names[0]", _put(*P, "channel_names", 0)),
    ("preset.channel_names", _put(*P, "channel_names")),
    ("preset.spacing[1]", _put(*P, "spacing", 1)),
    ("preset.spacing", _put(*P, "spacing")),
    ("preset.intensity", _put(*P, "intensity")),
    ("preset.window[0]", _put(*P, "window", 0)),             # intensity range
    ("preset.window[1]", _put(*P, "window", 1)),
    ("preset.roi_size[2]", _put(*P, "roi_size", 2)),
    ("preset.num_samples", _put(*P, "num_samples")),
    ("preset.pos", _put(*P, "pos")),
    ("preset.neg", _put(*P, "neg")),
    ("preset.flip_prob", _put(*P, "flip_prob")),
    ("preset.rot90_prob", _put(*P, "rot90_prob")),
    ("preset.scale_intensity_prob", _put(*P, "scale_intensity_prob")),
    ("preset.shift_intensity_prob", _put(*P, "shift_intensity_prob")),
    ("preset", lambda obj, payload: obj["finetune"]["preset"].update({payload: 1.0})),  # an unknown preset field
    ("best_mean_dice", _put("best_mean_dice")),
    ("step", _put("step")),
]
# A component instead of a number, no "$" in it: MONAI would import and call its _target_ (os.mkdir("MARKER")).
TARGET_IN_SPACING = ("preset.spacing[0]", lambda obj, payload: obj["finetune"]["preset"]["spacing"].__setitem__(
    0, {"_target_": "os.mkdir", "path": "MARKER"}))
CASES = [f for f, _ in HOSTILE] + ["preset.spacing[0] (_target_)", "file name"]


def _with(checkpoint: Path, out: Path, mutate: Mutation, payload: str = PAYLOAD) -> Path:
    """A copy of ``checkpoint`` (same weights) with ``mutate(obj, payload)`` applied to its metadata."""
    obj = torch.load(checkpoint, weights_only=True)
    obj = {**obj, "finetune": copy.deepcopy(obj["finetune"])}
    preset = obj["finetune"]["preset"]
    for key in ("channel_names", "spacing", "window", "roi_size"):
        preset[key] = list(preset[key])
    mutate(obj, payload)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, out)
    return out


@pytest.fixture(scope="module")
def hostile(checkpoint, tmp_path_factory) -> dict[str, Path]:
    """One checkpoint per case, each in a folder of its own: the payload in one field, all else honest."""
    root = tmp_path_factory.mktemp("hostile")
    cases = {}
    for i, (_field, mutate) in enumerate([*HOSTILE, TARGET_IN_SPACING]):
        name = CASES[i]
        cases[name] = _with(checkpoint, root / f"case{i}" / "model.pt", mutate)
    # the checkpoint's file name goes into metadata.json too
    cases["file name"] = _with(checkpoint, root / "name" / f"{PAYLOAD}.pt", lambda obj, payload: None)
    return cases


def _field(case: str) -> str:
    return case.split(" (")[0]


@pytest.mark.parametrize("case", CASES)
def test_hostile_value_in_any_field_is_refused(cli, hostile, case, tmp_path, monkeypatch):
    """A "$"-string (or a _target_ component) in any checkpoint value a bundle holds stops the export with one
    line naming the file and the field; no output folder, no temporary folder, nothing run."""
    monkeypatch.chdir(tmp_path)  # where MARKER would appear
    ckpt = hostile[case]
    code, err = cli("bundle", "--checkpoint", ckpt, "--out", tmp_path / "new" / "bundle")
    assert (code, err.count("\n")) == (2, 1), err
    assert err.startswith(f"{PROG}: error: {ckpt}: {_field(case)} "), err
    assert list(tmp_path.iterdir()) == [] and list(ckpt.parent.iterdir()) == [ckpt]


def test_fit_checkpoint_meta_json_is_checked_and_named(checkpoint, tmp_path):
    """fit's checkpoints/best.pt takes its metadata from finetune_meta.json (JSON, which allows NaN): that file is
    the one named."""
    obj = torch.load(checkpoint, weights_only=True)
    meta = copy.deepcopy(obj["finetune"])
    meta["preset"]["spacing"] = [4.0, float("nan"), 4.5]
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "finetune_meta.json").write_text(json.dumps(meta))
    torch.save({"model": obj["state_dict"], "step": 3}, tmp_path / "run" / "checkpoints" / "best.pt")
    with pytest.raises(ExportError, match=re.escape(f"{tmp_path / 'run' / 'finetune_meta.json'}: preset.spacing[1] "
                                                    "must be a finite number, not nan")):
        export_bundle(tmp_path / "run" / "checkpoints" / "best.pt", tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


@pytest.fixture(scope="module")
def plain_text_bundle(checkpoint, tmp_path_factory) -> tuple[Path, str]:
    """A bundle of ``checkpoint``'s weights whose task, channel and label 1 are named by the payload without its
    leading "$": plain text, which the check lets through and MONAI's runner never evaluates."""
    text = PAYLOAD[1:]
    root = tmp_path_factory.mktemp("plain_text")

    def names(obj: dict[str, Any], payload: str) -> None:
        preset = obj["finetune"]["preset"]
        preset["name"], preset["labels"]["1"], preset["channel_names"][0] = payload, payload, payload

    ckpt = _with(checkpoint, root / "model.pt", names, text)
    return export_bundle(ckpt, root / "bundle"), text


@pytest.mark.skipif(not HAS_FIRE, reason="python -m monai.bundle needs the fire package")
def test_monai_bundle_run_evaluates_nothing_from_the_checkpoint(cli, checkpoint, hostile, plain_text_bundle, scan,
                                                               reference_seg, tmp_path, monkeypatch):
    """Issue #27: (a) a label, channel or task name that MONAI would run ("$__import__('pathlib')...touch()") is
    refused; (b) the same text as a plain name is exported verbatim, and `python -m monai.bundle run` on that
    bundle creates no marker and writes swinunetr_lib.infer's label map."""
    monkeypatch.chdir(tmp_path)
    from monai.bundle import ConfigParser

    ConfigParser({"x": PAYLOAD}).get_parsed_content("x")  # the payload is live: MONAI runs it when given it
    assert (tmp_path / "MARKER").is_file()
    (tmp_path / "MARKER").unlink()
    for field in ("preset.labels[1]", "preset.channel_names[0]", "preset.name"):
        code, err = cli("bundle", "--checkpoint", hostile[field], "--out", tmp_path / "refused")
        assert code == 2 and err.startswith(f"{PROG}: error: {hostile[field]}: {field} holds '$'"), err
    assert list(tmp_path.iterdir()) == []

    bundle, text = plain_text_bundle
    cfg = json.loads((bundle / "configs/inference.json").read_text())
    assert cfg["task"] == cfg["label_names"]["1"] == cfg["channel_names"][0] == text
    assert f"- 1: `{text}`" in (bundle / "docs/README.md").read_text()  # a code span: no markup either
    res = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                          str(bundle / "configs/inference.json"), "--bundle_root", str(bundle),
                          "--datalist", f"['{scan}']", "--output_dir", str(tmp_path / "seg")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert not (tmp_path / "MARKER").exists()
    ours = np.asarray(nib.load(str(reference_seg)).dataobj)
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "seg" / "ct_crop_seg.nii.gz")).dataobj), ours)


# Every config string the exporter itself writes that MONAI parses ("$" expression, "@" reference), the
# foreground threshold's lambda (a number) and the components it names; nothing else in a bundle may be syntax.
OWN_SYNTAX = {
    "$import glob", "$import os", "$os.path.join(@bundle_root, 'models', 'model.pt')",
    "$os.path.join(@bundle_root, 'eval')", "$os.path.join(@bundle_root, 'data')",
    "$sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*')))",
    "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')", "$@network_def.to(@device).eval()",
    "$torch.float32", "$[{'image': i} for i in @datalist]", "@preprocessing", "@dataset",
    "$torch.no_grad()(lambda x: @inferer(x, @network))", "@output_dir", "$numpy.uint8",
    "$@network.load_state_dict(torch.load(@ckpt_path, map_location=@device, weights_only=True))",
    ("$[@postprocessing(item) for batch in @dataloader for item in monai.data.decollate_batch("
     "{**batch, 'pred': @predict(batch['image'].to(@device))})]"),
}
OWN_SELECT_FN = re.compile(r"\$lambda x: x > -?[0-9]+\.[0-9]+(e[+-][0-9]+)?")
OWN_TARGETS = {"SwinUNETR", "Compose", "LoadImaged", "EnsureChannelFirstd", "EnsureTyped", "Orientationd", "Spacingd",
               "CropForegroundd", "ScaleIntensityRanged", "NormalizeIntensityd", "Dataset", "DataLoader",
               "SlidingWindowInferer", "AsDiscreted", "Invertd", "SaveImaged"}


def foreign_syntax(doc: Any, own: set[str], targets: set[str], where: str = "") -> list[str]:
    """Where ``doc`` holds MONAI config syntax that is not in ``own`` / ``targets``: strings starting with
    ``$ @ %``, keys with ``$ @ % #`` or ``::``, ``_target_`` components."""
    found = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if not isinstance(k, str) or k.startswith(("$", "@", "%")) or "#" in k or "::" in k:
                found.append(f"{where} key {k!r}")
            if k == "_target_" and v not in targets:
                found.append(f"{where}._target_ {v!r}")
            found += foreign_syntax(v, own, targets, f"{where}.{k}")
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += foreign_syntax(v, own, targets, f"{where}[{i}]")
    elif (isinstance(doc, str) and doc.startswith(("$", "@", "%")) and doc not in own
          and not (own and OWN_SELECT_FN.fullmatch(doc))):
        found.append(f"{where} {doc!r}")
    return found


def _bundle_syntax(bundle: Path) -> list[str]:
    inference = json.loads((bundle / "configs/inference.json").read_text())
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    return foreign_syntax(inference, OWN_SYNTAX, OWN_TARGETS) + foreign_syntax(meta, set(), set(), "metadata")


def test_only_the_exporters_own_expressions_are_syntax(bundle, plain_text_bundle, hostile, tmp_path):
    """Without patching anything: in an honest bundle and one named with payload text, every "$"/"@" string and
    every _target_ of inference.json is one the exporter writes, and metadata.json holds none; a checkpoint with
    a payload in any field is refused or (were it exported) would have to meet the same rule."""
    assert _bundle_syntax(bundle) == [] and _bundle_syntax(plain_text_bundle[0]) == []
    steps = json.loads((bundle / "configs/inference.json").read_text())["preprocessing"]["transforms"]
    assert [t["select_fn"] for t in steps if "select_fn" in t] == ["$lambda x: x > -175.0"]
    for case, ckpt in hostile.items():
        try:
            out = export_bundle(ckpt, tmp_path / case.replace(" ", "_"))
        except ExportError:
            continue
        assert _bundle_syntax(out) == [], case


# ----------------------------------------------------------------------------------- the check itself


@pytest.mark.parametrize("value, kind, options, problem", [
    (float("nan"), "float", {}, "x must be a finite number, not nan"),
    (float("inf"), "float", {}, "x must be a finite number, not inf"),
    ([1.0, float("nan"), 2.0], "floats", {"length": 3}, "x[1] must be a finite number, not nan"),
    (True, "int", {}, "x must be a whole number, not the bool True"),
    (False, "float", {}, "x must be a number, not the bool False"),
    (64.0, "int", {}, "x must be a whole number, not the float 64.0"),
    ("64", "int", {}, "x must be a whole number, not the str '64'"),
    (torch.tensor(3), "int", {}, "x must be a whole number, not the Tensor tensor(3)"),
    (5, "int", {"low": 1, "high": 4}, "x is 5, outside [1, 4]"),
    ([64, 64, 32, 32], "ints", {"length": 3}, "x has 4 items, not 3"),
    ("abc", "ints", {"length": 3}, "x must be a list, not the str 'abc'"),
    (list(range(2000)), "plain", {}, "x has 2000 items (at most 1024)"),
    ({"a": [1, {"b": {"c": "$os.system('x')"}}]}, "plain", {}, "x.a[1].b.c holds '$'"),
    ({"a": {"$k": 1}}, "plain", {}, "x.a key holds '$'"),
    ({"_target_": "os.system"}, "plain", {}, "x key holds '_target_'"),
    ({"a": [float("nan")]}, "plain", {}, "x.a[0] must be a finite number, not nan"),
    ({1: "a"}, "plain", {}, "x key must be text, not the int 1"),
    ({"0": "bg", "$1": "a"}, "labels", {}, "x key must be a class id (0, 1, ...), not the str '$1'"),
    ({"0": "bg", True: "a"}, "labels", {}, "x key must be a class id (0, 1, ...), not the bool True"),
    ({0: "bg", 2: "a"}, "labels", {}, "x key 2 is out of order"),
    ({"1": "a", 1: "b"}, "labels", {}, "x key 1 is out of order"),
    ({0: "bg", 1: "@network"}, "labels", {}, "x[1] holds '@'"),
    ("$x", "name", {}, "x holds '$'"),
    ("@network_def", "name", {}, "x holds '@'"),
    ("%configs/x.json", "name", {}, "x holds '%'"),
    ("net#0", "name", {}, "x holds '#'"),
    ("a::b", "name", {}, "x holds '::'"),
    ("my _target_", "name", {}, "x holds '_target_'"),
    ("two\nlines", "name", {}, "x holds the control or unassigned character U+000A"),
    ("right\u202eleft", "name", {}, "x holds the control or unassigned character U+202E"),
    ("<b>spleen</b>", "name", {}, "x holds '<'"),
    ("`code`", "name", {}, "x holds '`'"),
    ("[link](http://x)", "name", {}, "x holds '['"),
    ("", "name", {}, "x is empty"),
    ("s" * 129, "name", {}, "x is 129 characters long (at most 128)"),
    (b"spleen", "name", {}, "x must be text, not the bytes b'spleen'"),
    ("XR", "name", {"choices": ("CT", "MR")}, "x is 'XR', not one of CT, MR"),
    (None, "float", {}, "x must be a number, not the NoneType None"),
])
def test_bundle_safe_value_refuses(value, kind, options, problem):
    with pytest.raises(BundleValueError) as err:
        bundle_safe_value("x", value, kind, **options)
    assert str(err.value).startswith(problem) and "\n" not in str(err.value)


def test_bundle_safe_value_normalises_what_it_accepts():
    assert bundle_safe_value("x", 3, "float") == 3.0 and type(bundle_safe_value("x", 3, "float")) is float
    assert bundle_safe_value("x", (4, 4.5, 3), "floats", length=3) == [4.0, 4.5, 3.0]
    assert bundle_safe_value("x", None, "floats", length=3, optional=True) is None
    assert bundle_safe_value("x", {"1": "kidney_right", 0: "background"}, "labels") == {0: "background",
                                                                                        1: "kidney_right"}
    for name in ("Task09_Spleen", "T1-like", "non-enhancing tumour", "Milz (ü)", "portal and splenic veins",
                 "__import__('os').system('x')"):  # plain text: never evaluated (no leading "$")
        assert bundle_safe_value("x", name, "name") == name
    doc = {"a": [1, 2.5, None, True, {"b": ""}], "c": "0: background, 1: spleen"}
    assert bundle_safe_value("x", doc, "plain") == doc
    with pytest.raises(ValueError, match="unknown kind"):
        bundle_safe_value("x", 1, "number")


def test_every_preset_passes_the_check_unchanged():
    """The check covers every TaskPreset field, and each shipped preset goes through it as it is."""
    assert set(PRESET_FIELDS) == {f for f in TaskPreset.__dataclass_fields__}
    for name in preset_names():
        preset = get_preset(name)
        assert checked_preset(preset.to_dict()) == preset, name


def test_bundle_values_name_the_file_and_field(tmp_path):
    preset = get_preset("demo_mr").to_dict()
    meta = {"in_channels": 2, "out_channels": 4, "feature_size": 12, "preset": preset}
    values = bundle_values(tmp_path / "model.pt", meta, {"best_mean_dice": 0.25, "step": 7})
    assert (values.preset, values.best_mean_dice, values.step, values.source_name) == (
        get_preset("demo_mr"), 0.25, 7, "model.pt")
    bad = {**meta, "preset": {**preset, "channel_names": ["T1-like"]}}
    with pytest.raises(BundleValueError, match=re.escape(f"{tmp_path / 'model.pt'}: preset.channel_names has 1 items, "
                                                         "not 2")):
        bundle_values(tmp_path / "model.pt", bad, {})
    bad = {**meta, "preset": {**preset, "window": [1.0, 1.0]}}
    with pytest.raises(BundleValueError, match=re.escape("preset.window [1.0, 1.0] must rise")):
        bundle_values(tmp_path / "model.pt", bad, {}, meta_file=tmp_path / "finetune_meta.json")
    with pytest.raises(BundleValueError, match=re.escape(f"{tmp_path / 'model.pt'}: best_mean_dice must be a finite "
                                                         "number, not nan")):
        bundle_values(tmp_path / "model.pt", meta, {"best_mean_dice": math.nan})
