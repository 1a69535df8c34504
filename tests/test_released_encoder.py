"""#25 item 5: the released encoder through the dense probe on the two labeled real CTs. The real file cannot be
downloaded here: a checkpoint in the official layout is made in the test, "downloaded" from a file:// address
into the cache, checked, and probed at tiny sizes."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from swinunetr_lib.data.example_data import sha256_of
from swinunetr_lib.data.registry import released_weights
from swinunetr_lib.experiments import released_encoder as rel
from swinunetr_lib.models.swin_unetr import build_swinunetr
from swinunetr_lib.pretrain.model import export_encoder


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A feature-12 encoder exported in the official layout (module.* keys, mlp.fc1/fc2), as model_swinvit.pt."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("release") / "model_swinvit.pt"
    export_encoder(build_swinunetr(1, 14, feature_size=12), path)
    raw = torch.load(path, weights_only=True)["state_dict"]
    assert "module.patch_embed.proj.weight" in raw and "module.layers1.0.blocks.0.mlp.fc1.weight" in raw
    return path


def test_the_registry_names_the_released_encoder_and_says_its_checksum_is_not_pinned():
    info = released_weights("model_swinvit")
    assert info.url.endswith("/releases/download/0.8.1/model_swinvit.pt") and info.file == "model_swinvit.pt"
    assert info.feature_size == 48 and info.input_hu_window == (-1000, 1000)
    assert info.pretraining_spacing_mm == (1.5, 1.5, 2.0)
    assert info.sha256 is None and "not pinned" in info.sha256_note  # nobody here could download it
    with pytest.raises(KeyError, match="no released weights 'nope'"):
        released_weights("nope")


def test_download_once_into_the_cache_checked_against_a_pinned_checksum(official, tmp_path):
    lines = []
    pinned = dataclasses.replace(released_weights(), sha256=sha256_of(official))
    cache = tmp_path / "cache"
    got = rel.get_released_encoder(info=pinned, url=official.as_uri(), cache=cache, say=lines.append)
    assert got == cache / "model_swinvit.pt" and sha256_of(got) == pinned.sha256
    assert lines[0].startswith(f"downloading {official.as_uri()}") and "(matches the registry)" in lines[-1]
    # the second time it reads the cache: an address that cannot work is not tried
    assert rel.get_released_encoder(info=pinned, url="file:///no/such/file", cache=cache, say=lines.append) == got
    # a file that differs from the pinned checksum: refused, and nothing is kept in the cache
    other = dataclasses.replace(pinned, sha256="0" * 64)
    with pytest.raises(rel.ReleasedEncoderError, match="differs from the registry's 0000"):
        rel.get_released_encoder(info=other, url=official.as_uri(), cache=tmp_path / "c2", say=lines.append)
    assert not list((tmp_path / "c2").glob("*"))
    with pytest.raises(rel.ReleasedEncoderError, match=r"cannot download file:///no/such/file .*--pretrained"):
        rel.get_released_encoder(info=pinned, url="file:///no/such/file", cache=tmp_path / "c3", say=lines.append)
    assert not list((tmp_path / "c3").glob("*"))


@pytest.mark.slow
def test_the_command_probes_the_encoder_on_both_real_cts_each_labeled_in_turn(official, tmp_path, capsys):
    out = tmp_path / "out"
    code = rel.main(["--pretrained", str(official), "--out", str(out), "--spacing", "[9, 9, 9]", "--n-seeds", "2",
                     "--per-class", "40", "--max-iter", "5"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "no checksum pinned in the registry" in printed and rel.DEMONSTRATION in printed
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.labeled_patient) == ["example_ct_sm", "example_ct_dicom"]  # both ways round
    for col in ("ssl", "random_min", "random_max", "atlas", "intensity", "intensity+coords",
                "gain_ssl_minus_random_mean"):
        assert summary[col].between(-1, 1).all(), col
    table = pd.read_csv(out / "dense_probe.csv")
    means = table[(table.organ == "mean") & (table.held_out_case == "mean")]
    assert set(means.encoder) == {"ssl", "random", "intensity", "intensity+coords", "atlas"}
    assert sorted(means[means.encoder == "random"].seed.unique()) == [0, 1]
    # each patient is scored only when the other one is labeled
    held = table[table.held_out_case != "mean"].groupby("labeled_patient").held_out_case.unique()
    assert {k: list(v) for k, v in held.items()} == {"example_ct_sm": ["example_ct_dicom"],
                                                     "example_ct_dicom": ["example_ct_sm"]}
    verdict = (out / "verdict.txt").read_text()
    assert "(feature size 12) vs 2 random seeds of that size" in verdict
    assert "not detected" in verdict or "help" in verdict
    assert "has feature size 12, the released encoder 48: not the paper's file" in printed
    assert rel.DEMONSTRATION in verdict
    assert sorted(p.name for p in (out / "cases").iterdir()) == [
        "example_ct_dicom_image.nii.gz", "example_ct_dicom_label.nii.gz", "example_ct_sm_image.nii.gz",
        "example_ct_sm_label.nii.gz"]


def test_a_missing_or_unsafe_file_is_one_line_naming_it(tmp_path, capsys, booby_trap):
    code = rel.main(["--pretrained", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"{tmp_path / 'nope.pt'}: no such file" in err
    trap = tmp_path / "model_swinvit.pt"
    marker = booby_trap(trap)
    code = rel.main(["--pretrained", str(trap), "--out", str(tmp_path / "o"), "--spacing", "[9, 9, 9]"])
    err = capsys.readouterr().err
    assert code == 2 and str(trap) in err and not marker.exists()


def test_cases_are_padded_to_one_grid_centred_with_air_and_background():
    a = (np.zeros((4, 2, 3), np.float32), np.ones((4, 2, 3), np.int64))
    b = (np.zeros((2, 6, 3), np.float32), np.full((2, 6, 3), 2, np.int64))
    (ia, la), (ib, lb) = rel.pad_to_common_grid([a, b])
    assert ia.shape == la.shape == ib.shape == lb.shape == (4, 6, 3)
    assert (la[:, 2:4] == 1).all() and (la[:, :2] == 0).all() and (ia[:, :2] == -1024).all()
    assert (lb[1:3] == 2).all() and (lb[0] == 0).all() and (lb[3] == 0).all()
