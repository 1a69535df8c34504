"""Pretraining command: its data and settings are checked before a step runs; untrusted or foreign checkpoints
are refused on resume (issue #12). The loop itself is tested in test_train.py."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from swinunetr_lib.pretrain.run import main

PROG = "python -m swinunetr_lib.pretrain"


def _volume(path, nan: int = 0) -> str:
    """A small CT-like volume (40^3, 4 mm) with ``nan`` NaN voxels (-1: all of them)."""
    data = np.full((40, 40, 40), -1000.0, dtype=np.float32)
    data[8:32, 8:32, 8:32] = 40.0
    if nan < 0:
        data[:] = np.nan
    else:
        data.reshape(-1)[:nan] = np.nan
    nib.save(nib.Nifti1Image(data, np.diag([4.0, 4.0, 4.0, 1.0])), path)
    return path.name


def _manifest(tmp_path, *images: str):
    path = tmp_path / "pretrain.json"
    path.write_text(json.dumps({"training": [{"image": i} for i in images]}))
    return path


@pytest.fixture
def run(capsys, monkeypatch):
    """Run the command; return (exit status, stdout, stderr); an error must be one line without a traceback."""
    monkeypatch.delenv("SWINUNETR_TRACEBACK", raising=False)

    def call(*argv):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        if code != 0:
            assert err.startswith(f"{PROG}: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
        return code, out, err

    return call


def _args(manifest, run_dir, *extra):
    return ["--data-manifest", manifest, "--run-dir", run_dir, "--roi-size", "32", "--feature-size", "12",
            "--max-steps", "1", "--warmup-steps", "1", "--device", "cpu", "--progress", "false", *extra]


def test_volumes_with_nan_voxels_are_refused_naming_the_file(tmp_path, run):
    good = _volume(tmp_path / "good.nii.gz")
    for name, nan, expected in (("all_nan.nii.gz", -1, "64000 of 64000 voxels are not finite (64000 NaN, 0 Inf)"),
                                ("some_nan.nii.gz", 5, "5 of 64000 voxels are not finite (5 NaN, 0 Inf)")):
        bad = tmp_path / name
        _volume(bad, nan)
        run_dir = tmp_path / f"run_{name}"
        code, _, err = run(*_args(_manifest(tmp_path, good, bad.name), run_dir))
        assert code == 2 and f"{bad}: {expected}" in err, err
        assert not run_dir.exists() or not any(run_dir.rglob("*"))


def test_bad_settings_fail_before_the_manifest_is_read(tmp_path, run):
    missing = tmp_path / "no_manifest.json"  # never looked at: the settings are checked first
    cases = [(["--log-every", "0"], "log_every=0 must be >= 1"),
             (["--cache-rate", "5"], "cache_rate=5.0 must be between 0 and 1"),
             (["--spacing", "[0,0,0]"], "spacing=[0.0, 0.0, 0.0]: need 3 positive voxel sizes"),
             (["--batch-size", "1", "--num-samples", "1"], "gives one sub-volume per step: the contrastive loss "
                                                            "needs at least 2 (it would be exactly 0)"),
             (["--decoder", "unet"], "roi_size=32 with decoder=unet: Swin UNETR's decoder needs sub-volumes of at "
                                     "least 64^3"),
             (["--decoder", "pixelshuffle"],
              "decoder='pixelshuffle' must be one of ['upsample', 'transposed', 'unet']")]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "device='cuda': "))
    for extra, expected in cases:
        code, _, err = run(*_args(missing, tmp_path / "run", *extra))
        assert code == 2 and expected in err, (extra, err)
    assert not (tmp_path / "run").exists()


def test_a_manifest_path_leaving_the_data_root_is_refused(tmp_path, run):
    (tmp_path / "data").mkdir()
    _volume(tmp_path / "secret.nii.gz")
    manifest = tmp_path / "data" / "pretrain.json"
    manifest.write_text(json.dumps({"training": [{"image": "../secret.nii.gz"}]}))
    code, _, err = run(*_args(manifest, tmp_path / "run"))
    assert code == 2 and f"{manifest}: training[0] image '../secret.nii.gz' leaves the data root" in err


def test_resume_refuses_a_booby_trap_and_a_checkpoint_of_other_run_settings(tmp_path, run, booby_trap):
    manifest = _manifest(tmp_path, _volume(tmp_path / "a.nii.gz"), _volume(tmp_path / "b.nii.gz"))
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.pt"
    last.parent.mkdir(parents=True)
    torch.save({"model": {}, "step": 5, "config": {"max_steps": 10}, "run": {"feature_size": 24, "roi_size": 32}}, last)
    code, _, err = run(*_args(manifest, run_dir, "--max-steps", "10"))
    assert code == 2 and f"{last}: cannot resume with other settings that define the run: feature_size was 24, " \
                         "now 12; restore them" in err

    marker = booby_trap(last, lambda trap: {"model": {}, "step": 3, "config": trap})
    code, _, err = run(*_args(manifest, run_dir, "--max-steps", "4"))
    assert code == 2 and f"{last}: cannot resume from this checkpoint (refused to load: the file holds Python " \
                         "objects (posix.system)" in err
    assert not marker.exists()


def test_python_dash_m_exits_cleanly_when_every_volume_is_bad(tmp_path):
    """Two damaged volumes: one line and exit status 2, not an abort at exit from a caching thread left running."""
    import os
    import subprocess
    import sys

    import swinunetr_lib

    names = [_volume(tmp_path / f"bad{i}.nii.gz", nan=5) for i in range(2)]
    env = {k: v for k, v in os.environ.items() if k != "SWINUNETR_TRACEBACK"}
    env["PYTHONPATH"] = str(Path(swinunetr_lib.__file__).parents[1])
    res = subprocess.run([sys.executable, "-m", "swinunetr_lib.pretrain",
                          *map(str, _args(_manifest(tmp_path, *names), tmp_path / "run"))],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2, res.stderr
    assert res.stderr == (f"{PROG}: error: {tmp_path / 'bad0.nii.gz'}: "
                          "5 of 64000 voxels are not finite (5 NaN, 0 Inf): "
                          "the scan is damaged or was written wrongly; repair or leave out this file\n")


def test_the_unet_decoder_setting_reaches_the_model_and_the_checkpoint(tmp_path, run):
    from swinunetr_lib.pretrain.model import load_ssl_model

    manifest = _manifest(tmp_path, _volume(tmp_path / "a.nii.gz"), _volume(tmp_path / "b.nii.gz"))
    code, out, err = run(*_args(manifest, tmp_path / "run", "--roi-size", "64", "--decoder", "unet",
                                "--batch-size", "2", "--num-samples", "1"))
    assert code == 0, err
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert torch.load(last, weights_only=True)["run"]["decoder"] == "unet"
    assert load_ssl_model(last).decoder_kind == "unet"
    code, _, err = run(*_args(manifest, tmp_path / "run", "--roi-size", "64", "--batch-size", "2",
                              "--num-samples", "1", "--max-steps", "2", "--resume"))
    assert code == 2 and "decoder was 'unet', now 'upsample'" in err


def test_the_recorded_longer_runs_are_complete_and_beat_their_baselines(tmp_path):
    """The runs notebook 02 draws (issue #14, item 0): settings, every step's losses and the probe of the encoder on
    held-out phantoms; what the README and the notebook claim of each is checked against its own baselines."""
    import math
    import shutil

    from swinunetr_lib.experiments.baselines import contrastive_chance, ssl_batch_subvolumes
    from swinunetr_lib.experiments.recorded_pretraining import RECORDED, RECORDED_RUNS, load_recorded

    runs = {folder.name: load_recorded(folder) for folder in RECORDED_RUNS.values()}
    assert sorted(runs) == ["paper_decoder_32", "progressive_32_to_64", "unet_decoder_64"]
    for rec in runs.values():
        assert rec.metrics["step"].tolist() == list(range(1, rec.config.max_steps + 1))
        assert rec.figure.read_bytes()[:4] == b"\x89PNG"
        ssl, rnd = (rec.probe.set_index("encoder").loc[k] for k in ("ssl", "random init"))
        assert ssl["inpainting_l1"] < ssl["trivial_fill_l1"] < rnd["inpainting_l1"]
    paper, unet = runs["paper_decoder_32"], runs["unet_decoder_64"]
    assert paper.config.decoder == "upsample" and unet.config.decoder == "unet" and unet.config.roi_size == 64
    ssl = paper.probe.set_index("encoder").loc["ssl"]
    assert ssl["rotation_accuracy"] > 0.5 and paper.metrics["rotation"].tail(20).mean() < 0.5 * math.log(4)
    n = ssl_batch_subvolumes(paper.config.batch_size, paper.config.num_samples)
    assert paper.metrics["contrastive"].tail(20).mean() < contrastive_chance(n) - 0.5
    ssl = unet.probe.set_index("encoder").loc["ssl"]
    assert ssl["inpainting_l1"] < 0.5 * ssl["trivial_fill_l1"]  # the boxes are filled, not only averaged
    staged = runs["progressive_32_to_64"]  # the 32^3 run continued at 64^3: rotation learns there too
    assert staged.config.init_from == "runs/exp/ssl_a/checkpoints/last.pt" and staged.config.decoder == "unet"
    assert staged.metrics["rotation"].tail(20).mean() < 0.5 * math.log(4) < unet.metrics["rotation"].tail(20).mean()
    ssl, rnd = (staged.probe.set_index("encoder").loc[k] for k in ("ssl", "random init"))
    assert ssl["rotation_accuracy"] > 0.3 > rnd["rotation_accuracy"]
    assert ssl["inpainting_l1"] < 0.5 * ssl["trivial_fill_l1"]
    assert "python -m swinunetr_lib.pretrain" in (RECORDED / "README.md").read_text()

    shutil.copytree(RECORDED_RUNS["Swin UNETR's decoder, 64³"], tmp_path / "rec")
    (tmp_path / "rec" / "probe.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"rec/probe.csv: missing from the recorded pretraining run"):
        load_recorded(tmp_path / "rec")


def test_init_from_warm_starts_encoder_and_heads_and_refuses_foreign_or_unsafe_files(tmp_path, run, booby_trap):
    """Progressive resizing: a 32^3 run with the paper's decoder continued at 64^3 with Swin UNETR's decoder. The
    encoder and both heads come from the first run (seen in the second run's first checkpoint), the decoder is new;
    another feature size, an unsafe file or a missing one stops before a step, naming the file."""
    from swinunetr_lib.pretrain.model import SSLModel

    manifest = _manifest(tmp_path, _volume(tmp_path / "a.nii.gz"), _volume(tmp_path / "b.nii.gz"))
    code, _, err = run(*_args(manifest, tmp_path / "small", "--batch-size", "2", "--num-samples", "1"))
    assert code == 0, err
    first = tmp_path / "small" / "checkpoints" / "last.pt"
    code, out, err = run(*_args(manifest, tmp_path / "big", "--roi-size", "64", "--decoder", "unet", "--batch-size",
                                "2", "--num-samples", "1", "--lr", "1e-12", "--init-from", first))
    assert code == 0, err
    assert f"{first}: loaded 118/118 encoder tensors" in out and "loaded rotation_head, contrastive_head; fresh: " \
                                                               "decoder" in out
    old = torch.load(first, weights_only=True)["model"]
    new = torch.load(tmp_path / "big" / "checkpoints" / "last.pt", weights_only=True)
    assert new["run"]["init_from"] == str(first)
    heads = [k for k in old if k.startswith(("rotation_head.", "contrastive_head."))]
    for name in ["swinViT.layers4.0.blocks.1.attn.qkv.weight", *heads]:
        torch.testing.assert_close(new["model"][name], old[name])  # lr 1e-12: the step moved nothing measurably
    fresh = SSLModel(feature_size=12, decoder="unet").state_dict()
    assert set(new["model"]) == set(fresh) and not any(k.startswith("decoder.") and k in old for k in new["model"])

    exported = tmp_path / "small" / "model_swinvit.pt"   # encoder only: both heads start fresh
    code, out, err = run(*_args(manifest, tmp_path / "enc", "--batch-size", "2", "--num-samples", "1",
                                "--init-from", exported))
    assert code == 0 and "(official layout)" in out and "loaded no head; fresh: rotation_head, contrastive_head, " \
                                                         "decoder" in out, err

    code, _, err = run(*_args(manifest, tmp_path / "wide", "--feature-size", "24", "--init-from", first))
    assert code == 2 and err.count(str(first)) == 1, err
    assert "is the checkpoint for this feature_size (24)" in err.lower(), err
    assert not (tmp_path / "wide" / "checkpoints").exists()
    code, _, err = run(*_args(manifest, tmp_path / "none", "--init-from", tmp_path / "missing.pt"))
    assert code == 2 and str(tmp_path / "missing.pt") in err, err
    trap = tmp_path / "trap.pt"
    marker = booby_trap(trap)
    code, _, err = run(*_args(manifest, tmp_path / "trapped", "--init-from", trap))
    assert code == 2 and str(trap) in err and "refused to load" in err and not marker.exists(), err


def test_the_first_step_by_hand_matches_the_first_logged_row_and_another_seed_does_not(tmp_path):
    """Issue #26: notebook 02 writes step 1 out (two views, three losses, their sum, backward); the library's
    rebuild of that step's model, batch and draws gives the numbers ``pretrain`` logged, to float precision."""
    from swinunetr_lib.pretrain.first_step import compare_with_logged, first_step_inputs, ssl_step_by_hand
    from swinunetr_lib.pretrain.run import PretrainConfig, pretrain

    manifest = _manifest(tmp_path, _volume(tmp_path / "a.nii.gz"), _volume(tmp_path / "b.nii.gz"))
    cfg = PretrainConfig(data_manifest=str(manifest), run_dir=str(tmp_path / "run"), roi_size=32, feature_size=12,
                         batch_size=1, num_samples=2, max_steps=1, warmup_steps=1, device="cpu", progress=False,
                         export=False, seed=3)
    logged = pretrain(cfg).fit.history[0]
    by_hand = ssl_step_by_hand(first_step_inputs(cfg))
    rows = compare_with_logged(by_hand, logged)
    assert [r["term"] for r in rows] == ["loss", "rotation", "contrastive", "reconstruction", "grad_norm"]
    assert by_hand["loss"] == pytest.approx(by_hand["rotation"] + by_hand["contrastive"] + by_hand["reconstruction"])
    other = ssl_step_by_hand(first_step_inputs(PretrainConfig.from_dict({**cfg.to_dict(), "seed": 4})))
    with pytest.raises(AssertionError, match="by hand .* logged by pretrain"):
        compare_with_logged(other, logged)
    with pytest.raises(ValueError, match="init_from"):
        first_step_inputs(PretrainConfig.from_dict({**cfg.to_dict(), "init_from": str(tmp_path / "x.pt")}))
