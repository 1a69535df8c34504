"""Probes of what pretraining learned (swinunetr_lib.experiments.probe) and the reconstruction decoder's kinds."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from swinunetr_lib.data.phantom import make_abdomen_phantom
from swinunetr_lib.experiments.probe import (
    crop_at,
    encoder_features,
    logistic_probe,
    organ_crops,
    random_like,
    rotation_accuracy,
)
from swinunetr_lib.pretrain.model import ReconstructionDecoder, SSLModel, load_ssl_model
from swinunetr_lib.pretrain.transforms import rotate_axial


def test_crop_at_centres_and_zero_pads():
    vol = np.arange(10 * 10 * 10, dtype=np.float32).reshape(10, 10, 10) + 1
    c = crop_at(vol, (5, 5, 5), 4)
    assert c.shape == (4, 4, 4) and c[2, 2, 2] == vol[5, 5, 5] and np.array_equal(c, vol[3:7, 3:7, 3:7])
    edge = crop_at(vol, (0, 9, 5), 4)  # leaves the volume on two axes: zeros there, the volume elsewhere
    assert edge[2, 2, 2] == vol[0, 9, 5]
    assert (edge[:2] == 0).all() and (edge[:, 3:] == 0).all() and (edge[2:, :3] > 0).all()


def test_organ_crops_are_centred_on_their_organ():
    ph = make_abdomen_phantom(3, spacing=(6.0, 6.0, 6.0))
    image, label = ph.image.astype(np.float32), ph.label.astype(np.int64)
    crops, ys, cases = organ_crops([(image, label), (image, label)], organs=[1, 6, 8], size=16, per_organ=3)
    assert crops.shape == (2 * 3 * 3, 1, 16, 16, 16) and sorted(set(ys.tolist())) == [1, 6, 8]
    assert cases.tolist() == [0] * 9 + [1] * 9
    label_crops, _, _ = organ_crops([(label.astype(np.float32), label)], organs=[1, 6, 8], size=16, per_organ=3)
    assert torch.equal(label_crops[:, 0, 8, 8, 8].long(), ys[:9])  # the crop's centre voxel is that organ
    with pytest.raises(ValueError, match="no organ"):
        organ_crops([(image, np.zeros_like(label))], organs=[1])


def test_logistic_probe_separates_separable_features_and_not_noise():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat(40)
    centers = torch.randn(3, 8, generator=g) * 4
    x = centers[y] + torch.randn(len(y), 8, generator=g)
    assert logistic_probe(x[:60], y[:60], x[60:], y[60:]) > 0.95
    noise = torch.randn(len(y), 8, generator=g)
    assert logistic_probe(noise[:60], y[:60], noise[60:], y[60:]) < 0.6  # chance is 1/3


def test_rotation_logits_equal_the_full_forward():
    model = SSLModel(feature_size=12).eval()
    x = torch.rand(2, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.rotation_logits(x), model(x)["rotation"])


def test_contrastive_embedding_equals_the_full_forward():
    model = SSLModel(feature_size=12).eval()
    x = torch.rand(2, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.contrastive_embedding(x), model(x)["contrastive"])


class _Fingerprint(nn.Module):
    """Embeds a view by the median of its voxels, which neither rotation nor a cutout of under half the voxels
    changes much (constant: every view the same embedding)."""

    def __init__(self, constant: bool = False) -> None:
        super().__init__()
        self.constant, self.w = constant, nn.Parameter(torch.zeros(1))

    def contrastive_embedding(self, x: torch.Tensor) -> torch.Tensor:
        if self.constant:
            return torch.ones(len(x), 4)
        m = x.flatten(1).median(dim=1).values[:, None]
        return torch.cat([torch.cos(6 * m), torch.sin(6 * m)], dim=1)  # distinct medians -> distinct directions


def test_contrastive_retrieval_is_one_for_a_fingerprint_and_chance_for_a_constant():
    from swinunetr_lib.experiments.probe import contrastive_retrieval

    crops = torch.linspace(0.05, 0.95, 10)[:, None, None, None, None] * torch.ones(10, 1, 16, 16, 16)
    crops = crops + 0.002 * torch.randn(crops.shape, generator=torch.Generator().manual_seed(0))
    good, flat = contrastive_retrieval(_Fingerprint(), crops), contrastive_retrieval(_Fingerprint(True), crops)
    assert good.top1 == 1.0 and good.chance == flat.chance == 1 / 19
    assert good.loss < flat.loss and flat.loss == pytest.approx(np.log(19)) == flat.loss_chance
    assert flat.top1 <= 2 / 20  # ties: the first other view wins, the partner of at most one or two views


def test_encoder_features_pool_every_stage():
    model = SSLModel(feature_size=12).eval()
    feats = encoder_features(model.swinViT, torch.rand(3, 1, 32, 32, 32), batch_size=2)
    assert feats.shape == (3, 12 * (1 + 2 + 4 + 8 + 16)) and torch.isfinite(feats).all()


class _Oracle(nn.Module):
    """Names the rotation of a rotated copy of ``ref`` by matching it to the four rotations (for the test)."""

    def __init__(self, ref: torch.Tensor, constant: bool = False) -> None:
        super().__init__()
        self.ref, self.constant, self.w = ref, constant, nn.Parameter(torch.zeros(1))

    def rotation_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.constant:
            return torch.tensor([[1.0, 0, 0, 0]]).repeat(len(x), 1)
        rots = torch.stack([rotate_axial(self.ref[None], torch.tensor([k]))[0] for k in range(4)])  # (4, C, X, Y, Z)
        return -((x[:, None] - rots[None]) ** 2).flatten(2).sum(-1)  # (B, 4)


def test_rotation_accuracy_is_one_for_an_oracle_and_chance_for_a_constant():
    ref = torch.rand(1, 8, 8, 4)
    crops = ref[None].repeat(5, 1, 1, 1, 1)
    assert rotation_accuracy(_Oracle(ref), crops) == 1.0
    assert rotation_accuracy(_Oracle(ref, constant=True), crops) == 0.25


def test_load_ssl_model_round_trip_and_refusals(tmp_path):
    model = SSLModel(feature_size=12)
    torch.save({"model": model.state_dict(), "step": 3}, tmp_path / "last.pt")
    back = load_ssl_model(tmp_path / "last.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values(), strict=True))
    twin = random_like(back, seed=1)
    assert not torch.equal(twin.swinViT.patch_embed.proj.weight, back.swinViT.patch_embed.proj.weight)
    old = SSLModel(feature_size=12, decoder="transposed")  # checkpoints from before the upsample default
    torch.save({"model": old.state_dict()}, tmp_path / "old.pt")
    assert isinstance(load_ssl_model(tmp_path / "old.pt").decoder.net[0], nn.ConvTranspose3d)
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not an SSL pretraining checkpoint"):
        load_ssl_model(tmp_path / "other.pt")


@pytest.mark.parametrize("kind", ["upsample", "transposed"])
def test_decoder_kinds_restore_the_input_size_and_train_at_32(kind):
    dec = ReconstructionDecoder(48, 1, num_upsamples=5, kind=kind).train()
    out = dec(torch.rand(2, 48, 1, 1, 1))  # a 32^3 sub-volume's last stage: one voxel
    assert out.shape == (2, 1, 32, 32, 32)
    out.mean().backward()
    with pytest.raises(ValueError, match="decoder kind"):
        ReconstructionDecoder(48, kind="pixelshuffle")


def test_upsample_decoder_has_no_checkerboard_from_a_constant_input():
    """A stride-2 transposed convolution paints one 2x2x2 pattern into every cell of a constant input; the
    resize-convolution gives a smooth output whose interior is constant."""
    torch.manual_seed(0)
    x = torch.ones(1, 24, 4, 4, 4)
    for kind, periodic in (("transposed", True), ("upsample", False)):
        out = ReconstructionDecoder(24, 1, num_upsamples=1, kind=kind).eval()(x)[0, 0, 2:-2, 2:-2, 2:-2]
        assert (out.std() > 1e-3) == periodic, kind


def test_probe_command_refuses_missing_files_in_one_line(tmp_path, capsys):
    from swinunetr_lib.experiments.probe import main

    assert main(["--checkpoint", str(tmp_path / "nope.pt"), "--manifest", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.pt" in err and "not found" in err
    assert main(["--manifest", str(tmp_path / "m.json")]) == 2
    assert "--checkpoint is required" in capsys.readouterr().err
    if not torch.cuda.is_available():  # an explicit device that is not here is an error, before any file is read
        for name in ("last.pt", "m.json"):
            (tmp_path / name).write_text("{}")
        assert main(["--checkpoint", str(tmp_path / "last.pt"), "--manifest", str(tmp_path / "m.json"),
                     "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "device='cuda'" in err, err


def test_run_probes_on_a_generated_cohort(tmp_path):
    """End to end on phantoms in the demo cohort's layout, through the command: both encoders probed, every number
    within its range, the inpainting columns and the figure written; a figure without inpainting is refused."""
    import pandas as pd

    from swinunetr_lib.data.cohort import build_demo_cohort
    from swinunetr_lib.experiments.probe import main

    cohort = build_demo_cohort(tmp_path / "cohort", n_phantoms=3, n_validation=1, n_unlabeled=0, n_msd=2,
                               spacing=(9.0, 9.0, 9.0), include_real=False)
    torch.manual_seed(0)
    torch.save({"model": SSLModel(feature_size=12).state_dict()}, tmp_path / "last.pt")
    assert main(["--checkpoint", str(tmp_path / "last.pt"), "--manifest", str(cohort.finetune_manifest),
                 "--per-organ", "1", "--csv", str(tmp_path / "probe.csv"), "--inpainting-size", "64",
                 "--figure", str(tmp_path / "rec.png")]) == 0
    table = pd.read_csv(tmp_path / "probe.csv")
    assert table["encoder"].tolist() == ["ssl", "random init"]
    assert list(table.columns[:2]) == ["encoder", "organ_accuracy"]
    for column in ("organ_accuracy", "organ_accuracy_last_stage"):
        assert table[column].between(0, 1).all(), column
    assert table["rotation_chance"].eq(0.25).all() and table["n_test"].gt(0).all()
    assert table["contrastive_top1"].between(0, 1).all()
    assert (table["contrastive_chance"] == 1 / (2 * table["n_test"] - 1)).all()
    assert np.allclose(table["contrastive_loss_chance"], np.log(2 * table["n_test"] - 1))
    assert 1 / 14 <= table["organ_chance"].iloc[0] <= 1 / 2  # one over the organs present in the training crops
    assert table["inpainting_l1"].between(0, 1).all() and table["trivial_fill_l1"].between(0, 1).all()
    assert table["trivial_fill_l1"].nunique() == 1  # the same seeded views for both encoders
    assert (tmp_path / "rec.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["--checkpoint", str(tmp_path / "last.pt"), "--manifest", str(cohort.finetune_manifest),
                 "--figure", str(tmp_path / "x.png")]) == 2 and not (tmp_path / "x.png").exists()


def test_the_probe_runs_monai_attention_in_the_fused_kernel_with_the_same_features():
    """The probes swap in the fused window attention: the frozen features and the rotation logits stay MONAI's."""
    from swinunetr_lib.experiments.probe import encoder_features, random_like
    from swinunetr_lib.models.window_attention import SDPAWindowAttention, use_sdpa_window_attention

    torch.manual_seed(0)
    monai_model = SSLModel(feature_size=12).eval()
    fused = SSLModel(feature_size=12).eval()
    fused.load_state_dict(monai_model.state_dict())
    assert use_sdpa_window_attention(fused) > 0
    x = torch.rand(2, 1, 32, 32, 32)
    assert torch.allclose(encoder_features(fused.swinViT, x), encoder_features(monai_model.swinViT, x), atol=1e-4)
    with torch.no_grad():
        assert torch.allclose(fused.rotation_logits(x), monai_model.rotation_logits(x), atol=1e-4)
    assert any(isinstance(m, SDPAWindowAttention) for m in random_like(fused).modules())
    assert not any(isinstance(m, SDPAWindowAttention) for m in random_like(monai_model).modules())


class _Copy(nn.Module):
    """Returns its (corrupted) input as the reconstruction: errors only inside the boxes."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"reconstruction": x + self.w}


def test_inpainting_probe_scores_only_the_boxes_against_the_trivial_fill():
    from swinunetr_lib.experiments.probe import centred_volumes, inpainting_probe

    ph = make_abdomen_phantom(0, spacing=(6.0, 6.0, 6.0))
    vols = centred_volumes([np.clip((ph.image.astype(np.float32) + 1000) / 2000, 0, 1)] * 2, 64)
    assert vols.shape == (2, 1, 64, 64, 64) and vols[..., :10].max() == 0  # 36 slices centred in 64: air around
    p = inpainting_probe(_Copy(), vols, seed=3)
    frac = float(p.view.mask.float().mean())
    assert 0 < frac < 0.5 and p.l1_inside > 0 and p.trivial_fill_l1_all < p.constant_l1_all
    assert p.l1_all == pytest.approx(p.l1_inside * frac, rel=1e-4)  # copying is exact outside the boxes
    again = inpainting_probe(_Copy(), vols, seed=3)
    assert torch.equal(again.view.mask, p.view.mask) and again.trivial_fill_l1 == p.trivial_fill_l1
