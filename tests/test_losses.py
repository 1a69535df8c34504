"""Each SSL loss against a direct formula on small tensors."""
import math

import pytest
import torch

from swinunetr_lib.pretrain.losses import ContrastiveLoss, ReconstructionLoss, RotationLoss, SSLLoss


def nt_xent_direct(z1, z2, t):
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n2, n = z.shape[0], z1.shape[0]
    total = 0.0
    for i in range(n2):
        p = (i + n) % n2
        denom = sum(math.exp(float(z[i] @ z[j]) / t) for j in range(n2) if j != i)
        total += -math.log(math.exp(float(z[i] @ z[p]) / t) / denom)
    return total / n2


def test_rotation_loss_is_cross_entropy():
    logits, labels = torch.randn(5, 4), torch.tensor([0, 3, 1, 2, 3])
    direct = -sum(logits[i, labels[i]] - torch.logsumexp(logits[i], 0) for i in range(5)) / 5
    assert RotationLoss()(logits, labels).item() == pytest.approx(direct.item(), rel=1e-5)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_contrastive_loss_matches_nt_xent(n):
    torch.manual_seed(n)
    z1, z2 = torch.randn(n, 7), torch.randn(n, 7)
    got = ContrastiveLoss(temperature=0.5)(z1, z2).item()
    assert got == pytest.approx(nt_xent_direct(z1, z2, 0.5), rel=1e-5, abs=1e-6)
    if n == 1:
        assert got == pytest.approx(0.0, abs=1e-6)  # no negatives


def test_contrastive_loss_low_for_identical_views_and_rejects_bad_shapes():
    z = torch.eye(4) * 10
    assert ContrastiveLoss(0.5)(z, z).item() < ContrastiveLoss(0.5)(z, torch.roll(z, 1, 0)).item()
    with pytest.raises(ValueError, match="equal shape"):
        ContrastiveLoss()(torch.randn(2, 3), torch.randn(3, 3))


def test_reconstruction_loss_is_mean_absolute_error():
    a, b = torch.randn(2, 1, 4, 4, 4), torch.randn(2, 1, 4, 4, 4)
    assert ReconstructionLoss()(a, b).item() == pytest.approx((a - b).abs().mean().item(), rel=1e-6)


def test_ssl_loss_is_weighted_sum():
    torch.manual_seed(0)
    logits, labels = torch.randn(4, 4), torch.randint(0, 4, (4,))
    z1, z2 = torch.randn(2, 8), torch.randn(2, 8)
    rec, tgt = torch.rand(4, 1, 4, 4, 4), torch.rand(4, 1, 4, 4, 4)
    out = SSLLoss(2.0, 3.0, 0.5)(logits, labels, z1, z2, rec, tgt)
    rot, con, recon = RotationLoss()(logits, labels), ContrastiveLoss(0.5)(z1, z2), ReconstructionLoss()(rec, tgt)
    assert out["rotation"].item() == pytest.approx(rot.item())
    assert out["loss"].item() == pytest.approx(2 * rot.item() + 3 * con.item() + 0.5 * recon.item(), rel=1e-6)
    default = SSLLoss()(logits, labels, z1, z2, rec, tgt)
    assert default["loss"].item() == pytest.approx(rot.item() + con.item() + recon.item(), rel=1e-6)


def test_contrastive_loss_stays_fp32_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(4, 512, generator=g)
    z2 = z1 + 0.05 * torch.randn(4, 512, generator=g)  # near-positive pairs: where bf16 similarities err most
    z1, z2 = z1.bfloat16(), z2.bfloat16()  # as the heads return them under autocast
    reference = ContrastiveLoss(0.5, gather_distributed=False)(z1.float(), z2.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = ContrastiveLoss(0.5, gather_distributed=False)(z1, z2)
    assert amp.dtype == torch.float32
    assert abs(amp.item() - reference.item()) < 1e-5 * reference.item()  # bf16 similarities would be ~1e-3 off
