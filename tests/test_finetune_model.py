"""Encoder initialisation: scratch, official layout, our SSL layout, and loud failures."""
from __future__ import annotations

import pytest
import torch

from swinunetr_lib.models.swin_unetr import EncoderLoadError, build_finetune_model, build_swinunetr, load_encoder
from swinunetr_lib.pretrain.model import export_encoder

FS = 12


def _encoder(model):
    return {k: v for k, v in model.state_dict().items() if k.startswith("swinViT.")}


def test_scratch_builds_and_runs():
    model, report = build_finetune_model(1, 3, feature_size=FS)
    assert report is None
    out = model(torch.zeros(1, 1, 64, 64, 64))
    assert out.shape == (1, 3, 64, 64, 64)


def test_official_layout_loads_every_encoder_tensor(tmp_path):
    torch.manual_seed(0)
    source = build_swinunetr(1, 14, feature_size=FS)
    path = export_encoder(source, tmp_path / "model_swinvit.pt")
    raw = torch.load(path)["state_dict"]
    assert "module.patch_embed.proj.weight" in raw and "module.layers1.0.blocks.0.mlp.fc1.weight" in raw

    torch.manual_seed(1)
    model, report = build_finetune_model(1, 5, feature_size=FS, pretrained=path)
    assert report is not None and report.layout == "official"
    assert report.loaded == report.total > 100 and not report.missing and not report.mismatched
    for k, v in _encoder(source).items():
        assert torch.equal(model.state_dict()[k], v), k
    # the decoder keeps its own (random) initialisation: only the encoder came from the checkpoint
    key = "out.conv.conv.weight"
    assert not torch.equal(model.state_dict()[key][:1], source.state_dict()[key][:1])


def test_our_full_ssl_checkpoint_with_heads_loads(tmp_path):
    source = build_swinunetr(1, 2, feature_size=FS)
    state = {f"_orig_mod.{k}": v for k, v in _encoder(source).items()}
    state["_orig_mod.rotation_head.weight"] = torch.zeros(4, 8)
    torch.save({"model": state, "step": 3}, tmp_path / "ssl.pt")
    model = build_swinunetr(1, 2, feature_size=FS)
    report = load_encoder(model, tmp_path / "ssl.pt")
    assert report.layout == "swinunetr" and report.loaded == report.total
    assert report.unexpected == ["_orig_mod.rotation_head.weight"]
    assert torch.equal(model.swinViT.layers4[0].blocks[1].mlp.linear2.weight,
                       source.swinViT.layers4[0].blocks[1].mlp.linear2.weight)


def test_other_feature_size_fails_loudly(tmp_path):
    path = export_encoder(build_swinunetr(1, 2, feature_size=24), tmp_path / "fs24.pt")
    model = build_swinunetr(1, 2, feature_size=FS)
    before = _encoder(model)
    with pytest.raises(EncoderLoadError, match=r"shape-mismatched [1-9].*feature_size \(12\)"):
        load_encoder(model, path)
    assert all(torch.equal(before[k], v) for k, v in _encoder(model).items())  # nothing half-loaded


def test_random_keys_fail_even_with_allow_partial(tmp_path):
    torch.save({"state_dict": {"foo.weight": torch.zeros(3), "bar": torch.ones(2)}}, tmp_path / "junk.pt")
    model = build_swinunetr(1, 2, feature_size=FS)
    with pytest.raises(EncoderLoadError, match="missing"):
        load_encoder(model, tmp_path / "junk.pt")
    with pytest.raises(EncoderLoadError, match="nothing to load"):
        load_encoder(model, tmp_path / "junk.pt", allow_partial=True)


def test_partial_load_needs_the_flag(tmp_path):
    source = build_swinunetr(1, 2, feature_size=FS)
    enc = {k: v for k, v in _encoder(source).items() if "layers4" not in k}
    torch.save(enc, tmp_path / "partial.pt")
    with pytest.raises(EncoderLoadError, match="allow_partial"):
        load_encoder(build_swinunetr(1, 2, feature_size=FS), tmp_path / "partial.pt")
    report = load_encoder(build_swinunetr(1, 2, feature_size=FS), tmp_path / "partial.pt", allow_partial=True)
    assert 0 < report.loaded < report.total and all("layers4" in k for k in report.missing)


def test_single_channel_weights_adapt_to_four_channels(tmp_path):
    source = build_swinunetr(1, 2, feature_size=FS)
    path = export_encoder(source, tmp_path / "ct.pt")
    model = build_swinunetr(4, 4, feature_size=FS)
    report = load_encoder(model, path)
    assert report.adapted == ["swinViT.patch_embed.proj.weight"] and report.loaded == report.total
    x = torch.randn(1, 1, 2, 2, 2)
    # a 4-channel copy of a 1-channel image gives the same patch embedding as the CT model
    a = source.swinViT.patch_embed.proj(x)
    b = model.swinViT.patch_embed.proj(x.repeat(1, 4, 1, 1, 1))
    assert torch.allclose(a, b, atol=1e-6)


def test_missing_or_unreadable_file(tmp_path):
    model = build_swinunetr(1, 2, feature_size=FS)
    with pytest.raises(EncoderLoadError, match="not found"):
        load_encoder(model, tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    with pytest.raises(EncoderLoadError, match="bad.pt"):
        load_encoder(model, tmp_path / "bad.pt")


def test_a_booby_trapped_checkpoint_is_refused_without_running_it(tmp_path, booby_trap):
    marker = booby_trap(tmp_path / "evil.pt")
    with pytest.raises(EncoderLoadError,
                       match=r"evil.pt: refused to load: the file holds Python objects \(posix.system\)"):
        load_encoder(build_swinunetr(1, 2, feature_size=FS), tmp_path / "evil.pt")
    assert not marker.exists()
