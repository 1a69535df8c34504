"""Self-supervised losses, one class each (Tang et al. 2022, Sec. 3, Eq. 1-4).

- :class:`RotationLoss`: cross-entropy over the 4 rotation classes.
- :class:`ContrastiveLoss`: NT-Xent (normalised temperature-scaled cross-entropy), temperature 0.5,
  any batch size; under DDP it gathers the embeddings of all ranks (with gradients) so every sample
  sees the global batch as negatives (default), or, with ``gather_distributed=False``, uses the local
  batch only, as the official code does ("per GPU" negatives).
- :class:`ReconstructionLoss`: L1 between the reconstruction and the uncorrupted (rotated) view.
- :class:`SSLLoss`: the weighted sum, weights 1/1/1 (paper: lambda_1 = lambda_2 = lambda_3 = 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.distributed import all_gather_with_grad


class RotationLoss(nn.Module):
    """Mean cross-entropy: logits (B, 4), labels (B,) long in 0..3 -> scalar."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels)


class ContrastiveLoss(nn.Module):
    """NT-Xent between two views: z1, z2 (B, D) -> scalar.

    With the 2N embeddings of the (global) batch, u = normalise(z), s_ij = u_i . u_j / t, the loss is
    mean_i -log( exp(s_{i,p(i)}) / sum_{j != i} exp(s_ij) ), where p(i) is the other view of sample i.
    Works for any N (N = 1 gives 0: no negatives). When ``gather_distributed`` and DDP is running,
    z1 and z2 are all-gathered from every rank first, so all ranks compute the same global loss.
    """

    def __init__(self, temperature: float = 0.5, gather_distributed: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature, self.gather_distributed = temperature, gather_distributed

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        if z1.shape != z2.shape or z1.ndim != 2:
            raise ValueError(f"expected two (B, D) embeddings of equal shape, "
                             f"got {tuple(z1.shape)} and {tuple(z2.shape)}")
        if self.gather_distributed:
            z1, z2 = all_gather_with_grad(z1), all_gather_with_grad(z2)
        n = z1.shape[0]
        with torch.autocast(z1.device.type, enabled=False):  # similarities in fp32, also under bf16/fp16 AMP
            u = F.normalize(torch.cat([z1, z2]).float(), dim=1)                   # (2N, D)
            sim = u @ u.T / self.temperature
            sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=sim.device), float("-inf"))
            positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(sim.device)
            return F.cross_entropy(sim, positives)


class ReconstructionLoss(nn.Module):
    """Mean absolute error between reconstruction and target, both (B, C, D, H, W)."""

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(reconstruction.float(), target.float())


class SSLLoss(nn.Module):
    """Weighted sum of the three proxy losses (paper Eq. 4; weights 1/1/1).

    Args of ``forward``: rotation logits (2B, 4) and labels (2B,) of both views, contrastive
    embeddings of view 1 and view 2 (B, D) each, reconstructions and targets (2B, C, D, H, W).
    ``gather_distributed``: contrastive negatives from the global batch across ranks (True, default) or
    from this rank's batch only (False, as the official code).
    Returns ``{"loss", "rotation", "contrastive", "reconstruction"}`` scalars.
    """

    def __init__(self, rotation_weight: float = 1.0, contrastive_weight: float = 1.0,
                 reconstruction_weight: float = 1.0, temperature: float = 0.5,
                 gather_distributed: bool = True) -> None:
        super().__init__()
        self.weights = (rotation_weight, contrastive_weight, reconstruction_weight)
        self.rotation = RotationLoss()
        self.contrastive = ContrastiveLoss(temperature, gather_distributed)
        self.reconstruction = ReconstructionLoss()

    def forward(self, rotation_logits: torch.Tensor, rotation_labels: torch.Tensor, z1: torch.Tensor,
                z2: torch.Tensor, reconstruction: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {"rotation": self.rotation(rotation_logits, rotation_labels),
                 "contrastive": self.contrastive(z1, z2),
                 "reconstruction": self.reconstruction(reconstruction, target)}
        total = sum(w * t for w, t in zip(self.weights, terms.values(), strict=True))
        return {"loss": total, **terms}  # type: ignore[dict-item]
