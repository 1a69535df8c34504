"""The sweep verb with an experiment module as its target (issue #28 item 4): E1 (dense probe) and E0 (label
scarcity) over a grid, typed by their Config, run through ``python -m swinunetr_lib.notebooks sweep``, resumed."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from swinunetr_lib.experiments.dense_features import random_encoder
from swinunetr_lib.notebooks import sweep as sw

E1 = "swinunetr_lib.experiments.dense_probe"
E0 = "swinunetr_lib.experiments.label_scarcity"


@pytest.fixture(scope="module")
def e1_inputs(tmp_path_factory):
    """Three tiny phantoms (2 labeled, 1 held out: 16 mm voxels) and an SSL-like checkpoint."""
    from swinunetr_lib.data.phantom import make_abdomen_phantom, write_phantom

    root = tmp_path_factory.mktemp("e1")
    entries = []
    for s in range(3):
        write_phantom(root / f"img{s}.nii.gz", root / f"lab{s}.nii.gz",
                      make_abdomen_phantom(s, spacing=(16.0, 16.0, 16.0), variability=0.5))
        entries.append({"image": f"img{s}.nii.gz", "label": f"lab{s}.nii.gz"})
    (root / "m.json").write_text(json.dumps({"training": entries[:2], "validation": entries[2:]}))
    state = {k: v for k, v in random_encoder(7, 12).model.state_dict().items() if k.startswith("swinViT.")}
    torch.save({"state_dict": state}, root / "ssl.pt")
    return root / "m.json", root / "ssl.pt"


def write_grid(tmp_path, text: str):
    (tmp_path / "grid.yml").write_text(text)
    return tmp_path / "grid.yml"


@pytest.mark.parametrize("target, grid, problem", [
    (E1, "grid:\n  n_seed: [2, 3]\n", "unknown parameter 'n_seed' (did you mean 'n_seeds'?)"),
    (E1, "grid:\n  n_seeds: [2, two]\n", "parameter 'n_seeds' = 'two' is a str, DenseProbeConfig declares "
                                         "n_seeds: int = 5"),
    (E1, "base: {csv: e1.csv}\ngrid:\n  n_seeds: [2]\n", "parameter 'csv' is written by the sweep into each run's "
                                                          "folder (dense_probe.csv); leave it out"),
    (E1, "grid:\n  manifest: [nowhere/m.json]\n", "run manifest=nowhere_m.json: "),
    (E1, "runner: a.b:c\ngrid:\n  n_seeds: [2]\n", "runner: is for notebooks"),
    (E0, "grid:\n  n_labeled: [1, 2]\n", "run n_labeled=1: need n_labeled >= 2"),
    (E0, "grid:\n  variabilities: [0.5]\n", "parameter 'variabilities' = 0.5 is a float, LabelScarcityConfig "
                                            "declares variabilities: list[float]"),
    ("swinunetr_lib.experiments.nope", "grid:\n  a: [1]\n", "swinunetr_lib.experiments.nope: cannot import"),
    ("swinunetr_lib.experiments.baselines", "grid:\n  a: [1]\n", "not a sweepable experiment module"),
])
def test_a_bad_grid_for_an_experiment_module_is_one_line_and_nothing_runs(tmp_path, capsys, target, grid, problem):
    grid_file = write_grid(tmp_path, grid)
    code = sw.main([target, "--grid", str(grid_file), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("python -m swinunetr_lib.notebooks sweep: error: ") and problem in err, err
    if "import" not in problem and "sweepable" not in problem:
        assert str(grid_file) in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # two E1 runs, each in its own process (torch and MONAI imported): ~1 min on a busy machine
def test_e1_over_a_grid_records_the_verdict_and_dice_per_encoder_and_a_rerun_skips(e1_inputs, tmp_path, capsys):
    manifest, ssl = e1_inputs
    grid = write_grid(tmp_path, f"base: {{manifest: {manifest}, ssl_checkpoint: {ssl}, n_seeds: 2, per_class: 50, "
                                f"max_iter: 5}}\ngrid:\n  source: [encoder, swinvit]\n")
    out = tmp_path / "out"
    assert sw.main([E1, "--grid", str(grid), "--out", str(out), "--workers", "1", "--threads", "1"]) == 0
    table = pd.read_csv(out / "results.csv")
    assert table["run"].tolist() == ["source=encoder", "source=swinvit"] and (table["status"] == "ok").all()
    for _, row in table.iterrows():
        # the gain is paired per labeled case over balanced seeds: the difference of the encoders' mean Dice
        assert row["gain"] == pytest.approx(row["mean_dice_ssl"] - row["mean_dice_random"], abs=1e-9)
        assert row["ci_low"] <= row["gain"] <= row["ci_high"] and row["beats_every_seed"] in (True, False)
        run = out / "runs" / row["run"]
        assert {"params.yml", "results.json", "run.json", "dense_probe.csv", "dense_probe_summary.csv",
                "dense_probe_verdict.json"} <= {p.name for p in run.iterdir()}
        assert json.loads((run / "dense_probe_verdict.json").read_text())["gain"] == pytest.approx(row["gain"])
        tidy = pd.read_csv(run / "dense_probe.csv")
        atlas = tidy[(tidy.encoder == "atlas") & (tidy.held_out_case == "mean") & (tidy.organ == "mean")].dice
        assert row["mean_dice_atlas"] == pytest.approx(atlas.mean(), abs=1e-4)  # the file holds 4 decimals
        assert set(tidy.source.dropna()) == {row["source"]}
        for name in ("intensity", "intensity+coords"):
            assert 0 <= row[f"mean_dice_{name}"] <= 1
    assert table.loc[0, "gain"] != table.loc[1, "gain"]  # two sources, two readouts
    capsys.readouterr()
    assert sw.main([E1, "--grid", str(grid), "--out", str(out), "--workers", "1"]) == 0
    assert "2 runs: 2 finished (skipped), 0 to run" in capsys.readouterr().out
    ssl.write_bytes(ssl.read_bytes())  # same bytes: same fingerprint
    assert sw.load_grid(grid, sw.resolve_target(E1)).points[0].fingerprint == \
        json.loads((out / "runs" / "source=encoder" / "run.json").read_text())["fingerprint"]


@pytest.mark.slow  # two E0 runs, each in its own process: ~1 min on a busy machine
def test_e0_over_a_grid_at_the_smallest_size_and_a_rerun_skips(tmp_path, capsys):
    grid = write_grid(tmp_path, "base: {variabilities: [0.5], n_labeled: 2, n_held_out: 1, spacing: 16}\n"
                                "grid:\n  feature_size: [0, 12]\n")
    out = tmp_path / "out"
    assert sw.main([E0, "--grid", str(grid), "--out", str(out), "--workers", "1", "--threads", "1"]) == 0
    table = pd.read_csv(out / "results.csv").set_index("feature_size")
    assert (table["status"] == "ok").all() and list(table.index) == [0, 12]
    assert table["atlas_step"].to_numpy() == pytest.approx((table["atlas_majority"] - table["atlas_single"]).to_numpy())
    assert table.loc[0, "atlas_single"] == table.loc[12, "atlas_single"]  # the atlas does not read features
    assert np.isnan(table.loc[0, "readout_1"]) and 0 <= table.loc[12, "readout_1"] <= 1  # feature_size 0: atlas only
    written = pd.read_csv(out / "runs" / "feature_size=12" / "label_scarcity.csv")
    assert written["readout_all"].iloc[0] == pytest.approx(table.loc[12, "readout_all"], abs=1e-4)
    capsys.readouterr()
    assert sw.main([E0, "--grid", str(grid), "--out", str(out), "--workers", "1"]) == 0
    assert "2 runs: 2 finished (skipped), 0 to run" in capsys.readouterr().out
