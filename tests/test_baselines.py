"""Baselines: each chance level equals the library's loss on inputs that carry no information."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from swinunetr_lib.experiments.baselines import (
    add_baselines,
    all_background_dice,
    contrastive_chance,
    rotation_chance,
    ssl_batch_subvolumes,
    trivial_fill,
    trivial_fill_l1,
)
from swinunetr_lib.pretrain.losses import ContrastiveLoss, RotationLoss
from swinunetr_lib.pretrain.transforms import InnerCutout, SSLViewTransform, make_generator
from swinunetr_lib.viz.curves import plot_learning_curves


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8])
def test_contrastive_chance_is_the_loss_of_identical_embeddings(n):
    z = torch.randn(1, 16).expand(n, 16)
    loss = ContrastiveLoss(0.5, gather_distributed=False)(z, z.clone())
    assert contrastive_chance(n) == pytest.approx(float(loss), abs=1e-6)
    assert contrastive_chance(n) == pytest.approx(math.log(2 * n - 1))


def test_contrastive_chance_matches_random_embeddings_and_any_temperature():
    torch.manual_seed(0)
    n = 4
    losses = [float(ContrastiveLoss(0.5, gather_distributed=False)(torch.randn(n, 4096), torch.randn(n, 4096)))
              for _ in range(20)]
    assert np.mean(losses) == pytest.approx(contrastive_chance(n), abs=0.03)
    z = torch.randn(1, 8).expand(n, 8)
    assert float(ContrastiveLoss(0.1, gather_distributed=False)(z, z)) == pytest.approx(contrastive_chance(n), abs=1e-5)


def test_rotation_chance_is_uniform_cross_entropy_and_no_fixed_guess_beats_it():
    labels = torch.arange(4)
    assert float(RotationLoss()(torch.zeros(4, 4), labels)) == pytest.approx(rotation_chance())
    assert rotation_chance() == pytest.approx(math.log(4))
    torch.manual_seed(1)
    for _ in range(10):  # one fixed prediction, scored over uniformly distributed labels (Gibbs' inequality)
        logits = torch.randn(1, 4).expand(4, 4)
        assert float(RotationLoss()(logits, labels)) >= rotation_chance() - 1e-6


def test_ssl_batch_subvolumes_counts_the_contrasted_batch():
    assert ssl_batch_subvolumes(1, 2) == 2
    assert ssl_batch_subvolumes(2, 2, world_size=4) == 16
    assert ssl_batch_subvolumes(2, 2, world_size=4, contrastive_negatives="per_gpu") == 4
    with pytest.raises(ValueError, match="num_samples=0"):
        ssl_batch_subvolumes(1, 0)
    with pytest.raises(ValueError, match="contrastive_negatives"):
        ssl_batch_subvolumes(1, 2, contrastive_negatives="local")


def test_trivial_fill_by_hand():
    target = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]).view(1, 1, 2, 2, 2)
    mask = torch.zeros(1, 1, 2, 2, 2, dtype=torch.bool)
    mask.view(-1)[[1, 6]] = True                                   # cut out the voxels holding 1 and 6
    visible_mean = (0 + 2 + 3 + 4 + 5 + 7) / 6
    filled = trivial_fill(target, mask)
    assert torch.equal(filled[~mask], target[~mask])
    assert torch.allclose(filled[mask], torch.full((2,), visible_mean))
    inside = (abs(1 - visible_mean) + abs(6 - visible_mean)) / 2
    assert trivial_fill_l1(target, mask) == pytest.approx(inside)
    assert trivial_fill_l1(target, mask, region="all") == pytest.approx(inside * 2 / 8)
    constant = trivial_fill(target, mask, copy_visible=False)
    assert torch.allclose(constant, torch.full_like(target, visible_mean))
    assert trivial_fill_l1(target, mask, region="all", copy_visible=False) == pytest.approx(
        float((target - visible_mean).abs().mean()))


def test_trivial_fill_on_real_views_per_sample():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 32, 32, 32) * torch.tensor([0.2, 0.5, 1.0]).view(3, 1, 1, 1, 1)
    view = SSLViewTransform(cutout=InnerCutout(max_fraction=0.3))(x, make_generator("cpu", 0))
    filled = trivial_fill(view.target, view.mask)
    for b in range(3):  # each sample is filled with its own visible mean
        m = view.mask[b].expand_as(view.target[b])
        assert torch.allclose(filled[b][m], view.target[b][~m].mean().expand(int(m.sum())), atol=1e-6)
    # outside the boxes the error is 0, so the whole-volume L1 is the inside L1 times the cut-out fraction
    assert trivial_fill_l1(view.target, view.mask, region="all") == pytest.approx(
        float((filled - view.target).abs()[view.mask.expand_as(filled)].sum()) / filled.numel(), rel=1e-5)
    assert 0 < trivial_fill_l1(view.target, view.mask, region="all") < trivial_fill_l1(view.target, view.mask)
    with pytest.raises(ValueError, match="cuts out no voxel"):
        trivial_fill_l1(view.target, torch.zeros_like(view.mask))
    with pytest.raises(ValueError, match="expected image"):
        trivial_fill(view.target[0], view.mask[0])


def test_all_background_dice_is_zero_for_present_organs_and_nan_for_absent():
    label = np.zeros((8, 8, 8), dtype=np.int64)
    label[1:3, 1:3, 1:3] = 1
    label[5:7, 5:7, 5:7] = 3
    dice = all_background_dice(label, num_classes=4)
    assert dice.shape == (1, 3)
    assert dice[0, 0] == 0 and np.isnan(dice[0, 1]) and dice[0, 2] == 0
    with pytest.raises(ValueError, match="label must be"):
        all_background_dice(label[0], num_classes=4)


def test_add_baselines_draws_on_the_named_panel():
    hist = pd.DataFrame({"step": [1, 2, 3], "rotation": [1.6, 1.5, 1.4], "contrastive": [1.1, 1.0, 0.9]})
    fig = add_baselines(plot_learning_curves(hist, columns=["rotation", "contrastive"]),
                        {"rotation": {"chance ln 4": rotation_chance()}})
    ax = next(a for a in fig.axes if a.get_title() == "rotation")
    assert any(np.allclose(line.get_ydata(), rotation_chance()) for line in ax.get_lines())
    other = next(a for a in fig.axes if a.get_title() == "contrastive")
    assert not any(np.allclose(line.get_ydata(), rotation_chance()) for line in other.get_lines())
    with pytest.raises(KeyError, match="reconstruction"):
        add_baselines(fig, {"reconstruction": {"trivial fill": 0.1}})
