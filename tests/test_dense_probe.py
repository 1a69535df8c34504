"""E1, the dense probe: features, readout, Dice, the decision rule and the command's refusals (tiny volumes)."""
import json
import pickle

import numpy as np
import pytest
import torch

from swinunetr_lib.experiments.dense_features import (
    dense_features_by_source,
    random_encoder,
    ssl_encoder,
    supervised_encoder,
    to_grid,
)
from swinunetr_lib.experiments.dense_probe import MIN_GAIN, decide, main, run_dense_probe
from swinunetr_lib.experiments.dense_readout import fit_readout, mean_dice, organ_dice


def blobs(seed: int, shape=(16, 14, 12), n=6) -> np.ndarray:
    """A label map of ``n`` random boxes (ids 1..n) on background."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int64)
    for k in range(1, n + 1):
        lo = [int(rng.integers(0, s - 4)) for s in shape]
        lab[lo[0]:lo[0] + 4, lo[1]:lo[1] + 4, lo[2]:lo[2] + 4] = k
    return lab


def test_readout_recovers_labels_that_the_features_encode():
    train, test = blobs(0), blobs(1)

    def onehot(lab: np.ndarray) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.from_numpy(lab), 14).permute(3, 0, 1, 2).float()

    ro = fit_readout([onehot(train)], [train], per_class=200, max_iter=30)
    scores = organ_dice(ro.predict(onehot(test)), test)
    assert mean_dice(scores) == 1.0
    assert np.isnan(scores[13])  # absent from the truth: not counted


def test_readout_on_noise_is_at_chance():
    train, test = blobs(0), blobs(1)
    g = torch.Generator().manual_seed(0)

    def noise(lab: np.ndarray) -> torch.Tensor:
        return torch.randn((16, *lab.shape), generator=g)

    ro = fit_readout([noise(train)], [train], per_class=200, max_iter=30)
    assert mean_dice(organ_dice(ro.predict(noise(test)), test)) < 0.2


def test_organ_dice_counts_a_missed_organ_as_zero():
    truth = blobs(2)
    pred = np.where(truth == 1, 0, truth)
    scores = organ_dice(pred, truth)
    assert scores[1] == 0.0 and scores[2] == 1.0 and mean_dice(scores) == pytest.approx(5 / 6)


def test_decision_rule_on_made_up_numbers():
    rnd = [[0.40, 0.42, 0.41], [0.50, 0.52, 0.49], [0.30, 0.31, 0.32], [0.45, 0.44, 0.46]]
    ssl = [0.46, 0.56, 0.36, 0.50]
    helps = decide(ssl, rnd)
    assert helps.helps and helps.gain == pytest.approx(np.mean(np.array(ssl) - np.mean(rnd, 1)))
    assert helps.ci[0] > 0 and "help" in helps.text
    below_one_seed = decide([0.46, 0.51, 0.36, 0.50], rnd)  # case 1 under its best random seed
    assert not below_one_seed.helps and not below_one_seed.beats_every_seed
    small = decide([0.425, 0.52, 0.325, 0.465], rnd)  # beats every seed, but gain < MIN_GAIN
    assert small.gain < MIN_GAIN and not small.helps and small.text.startswith("not detected at this scale (")
    spread = decide([0.43, 0.40, 0.33, 0.60], rnd)  # gains +0.02, -0.10, +0.02, +0.15: the CI includes 0
    assert spread.ci[0] < 0 < spread.ci[1] and not spread.helps and "95 % CI [" in spread.text
    with pytest.raises(ValueError):
        decide([0.5], [0.4, 0.3])


def ssl_state(seed: int, feature_size: int = 12) -> dict:
    """An SSL-like encoder checkpoint: the swinViT of a random model of ``seed`` under swinViT.* keys."""
    enc = random_encoder(seed, feature_size)
    return {"state_dict": {k: v for k, v in enc.model.state_dict().items() if k.startswith("swinViT.")}}


def test_ssl_arm_shares_the_random_blocks_of_its_seed_and_features_have_stage1_size(tmp_path):
    torch.save(ssl_state(7), tmp_path / "ssl.pt")
    ssl, rnd = ssl_encoder(tmp_path / "ssl.pt", seed=0), random_encoder(0, 12)
    s, r = ssl.model.state_dict(), rnd.model.state_dict()
    assert all(torch.equal(s[k], r[k]) for k in s if not k.startswith("swinViT."))  # blocks, decoder: seed 0's
    assert not torch.equal(s["swinViT.patch_embed.proj.weight"], r["swinViT.patch_embed.proj.weight"])
    image = np.random.default_rng(0).normal(0, 300, (20, 14, 10)).astype(np.float32)
    feats = dense_features_by_source(rnd, image)
    assert set(feats) == {"encoder", "swinvit"}
    assert all(f.shape == (31 * 12, 10, 7, 5) for f in feats.values())
    assert to_grid(feats["encoder"], image.shape).shape == (372, 20, 14, 10)


def finetuned_model(path, feature_size=12):
    from swinunetr_lib.finetune.task_presets import get_preset

    model = random_encoder(1, feature_size).model
    meta = {"task": "btcv", "in_channels": 1, "out_channels": 14, "feature_size": feature_size,
            "preset": get_preset("btcv").to_dict()}
    torch.save({"state_dict": model.state_dict(), "finetune": meta}, path)


def test_supervised_encoder_reads_its_window(tmp_path):
    finetuned_model(tmp_path / "model.pt")
    enc = supervised_encoder(tmp_path / "model.pt")
    assert enc.kind == "supervised" and enc.hu_range == (-175.0, 250.0)


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory):
    from swinunetr_lib.data.phantom import make_abdomen_phantom, write_phantom

    root = tmp_path_factory.mktemp("cohort")
    entries = []
    for s in range(3):
        write_phantom(root / f"img{s}.nii.gz", root / f"lab{s}.nii.gz",
                      make_abdomen_phantom(s, spacing=(16.0, 16.0, 16.0), variability=0.5))
        entries.append({"image": f"img{s}.nii.gz", "label": f"lab{s}.nii.gz"})
    (root / "m.json").write_text(json.dumps({"training": entries[:2], "validation": entries[2:]}))
    return root / "m.json"


class NotWeights:
    pass


@pytest.mark.parametrize("problem", ["missing", "wrong_size", "pickle"])
def test_command_refuses_bad_checkpoints_in_one_line(problem, tiny_manifest, tmp_path, capsys):
    path = tmp_path / "ssl.pt"
    if problem == "wrong_size":  # a feature-12 patch embedding on a feature-24 encoder
        state = ssl_state(0, 24)
        state["state_dict"]["swinViT.patch_embed.proj.weight"] = torch.zeros(12, 1, 2, 2, 2)
        torch.save(state, path)
    elif problem == "pickle":
        torch.save({"state_dict": ssl_state(0)["state_dict"], "extra": NotWeights()}, path, pickle_module=pickle)
    assert main(["--manifest", str(tiny_manifest), "--ssl-checkpoint", str(path), "--n-seeds", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ssl.pt" in err and err.startswith("python -m"), err
    expected = {"missing": "not found", "wrong_size": "encoder tensors", "pickle": "refused"}[problem]
    assert expected in err


def test_command_refuses_a_bad_supervised_model_and_source(tiny_manifest, tmp_path, capsys):
    finetuned_model(tmp_path / "model.pt", feature_size=24)
    sd = torch.load(tmp_path / "model.pt", weights_only=True)
    sd["finetune"]["feature_size"] = 12  # metadata says 12, weights are 24
    torch.save(sd, tmp_path / "model.pt")
    assert main(["--manifest", str(tiny_manifest), "--supervised", f"[{tmp_path / 'model.pt'}]"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.pt" in err and "feature_size" in err, err
    assert main(["--manifest", str(tiny_manifest), "--source", "decoder"]) == 2
    assert "source" in capsys.readouterr().err


@pytest.mark.slow  # ~30 s alone, minutes on a busy machine
def test_run_dense_probe_end_to_end_on_tiny_phantoms(tiny_manifest, tmp_path):
    from swinunetr_lib.experiments.dense_probe import load_cases

    torch.save(ssl_state(7), tmp_path / "ssl.pt")
    finetuned_model(tmp_path / "model.pt")
    labeled, held, _, names = load_cases(tiny_manifest)
    table, summary, verdict = run_dense_probe(labeled, held, ssl_checkpoint=tmp_path / "ssl.pt",
                                              supervised=[tmp_path / "model.pt"], n_seeds=2, per_class=100, max_iter=10,
                                              held_names=names, say=lambda *_: None)
    assert list(table.columns) == ["encoder", "source", "seed", "labeled_case", "held_out_case", "organ", "dice"]
    assert set(table.encoder) == {"ssl", "random", "intensity", "intensity+coords", "atlas",
                                  f"supervised {tmp_path.name}"}
    assert len(summary) == 2 and {"random_min", "random_max", "gain_ssl_minus_random_mean"} <= set(summary.columns)
    assert table.dice.dropna().between(0, 1).all() and verdict is not None
    atlas = table[(table.encoder == "atlas") & (table.held_out_case == "mean")].dice.to_numpy()
    assert np.all(atlas < 1.0)  # different cases
