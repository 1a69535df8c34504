"""The dense probe's readout and scores: a multinomial logistic regression on frozen per-voxel features, Dice per
organ, the atlas and the majority-vote atlas (no learning). Used by :mod:`.dense_probe` and :mod:`.label_scarcity`.

Arrays: features (C, X, Y, Z) torch float32 on the label's grid; labels (X, Y, Z) integer class ids 0..13.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

ORGANS = tuple(range(1, 14))  # the 13 BTCV organs (labels.BTCV_LABELS); 0 is background
N_CLASSES = 14


@dataclasses.dataclass
class Readout:
    """A fitted linear readout: standardisation, weights, and the log-prior shift that undoes class balancing."""

    linear: nn.Linear            # (C -> K), float32
    mean: torch.Tensor           # (C,) feature means over the training voxels
    std: torch.Tensor            # (C,) their standard deviations (>= 1e-6)
    prior_shift: torch.Tensor    # (K,) log(class frequency in the labeled cases) - log(frequency among the samples)

    @torch.no_grad()
    def predict(self, features: torch.Tensor, chunk: int = 65536) -> np.ndarray:
        """Class ids (X, Y, Z) int64 for features (C, X, Y, Z): argmax of the prior-corrected logits."""
        c, *shape = features.shape
        flat = features.reshape(c, -1).T
        out = []
        for part in flat.split(chunk):
            x = (part - self.mean) / self.std
            out.append((self.linear(x) + self.prior_shift).argmax(1))
        return torch.cat(out).reshape(shape).numpy()


def balanced_sample(labels: Sequence[np.ndarray], per_class: int, seed: int = 0) -> list[np.ndarray]:
    """Flat voxel indices per case: up to ``per_class`` voxels of every class present in each case (all of a
    class with fewer), drawn without replacement by ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    picks = []
    for lab in labels:
        flat = np.asarray(lab).ravel()
        idx = []
        for k in np.unique(flat):
            where = np.flatnonzero(flat == k)
            idx.append(where if len(where) <= per_class else rng.choice(where, per_class, replace=False))
        picks.append(np.sort(np.concatenate(idx)))
    return picks


def fit_readout(features: Sequence[torch.Tensor], labels: Sequence[np.ndarray], per_class: int = 1000,
                weight_decay: float = 1e-3, max_iter: int = 100, seed: int = 0,
                n_classes: int = N_CLASSES) -> Readout:
    """Multinomial logistic regression on a class-balanced subsample of the voxels of the labeled cases.

    ``features[i]`` (C, X, Y, Z) on the grid of ``labels[i]`` (X, Y, Z). Up to ``per_class`` voxels per class and
    case (:func:`balanced_sample`); features standardised on them; full-batch L-BFGS (strong Wolfe, ``max_iter``),
    cross-entropy + ``weight_decay`` * |W|^2. Balancing lets small organs be learned at all; the logits are then
    shifted by log(true / sampled class frequency), so the prediction follows the labeled cases' class priors.
    Classes absent from every labeled case are never predicted."""
    if len(features) != len(labels) or not labels:
        raise ValueError(f"need one label map per feature volume, got {len(features)} and {len(labels)}")
    xs, ys = [], []
    counts = np.zeros(n_classes)
    for f, lab, idx in zip(features, labels, balanced_sample(labels, per_class, seed), strict=True):
        if tuple(f.shape[1:]) != tuple(np.shape(lab)):
            raise ValueError(f"features {tuple(f.shape)} are not on the label grid {np.shape(lab)}")
        xs.append(f.reshape(f.shape[0], -1)[:, torch.from_numpy(idx)].T)
        y = np.asarray(lab).ravel()
        ys.append(torch.from_numpy(y[idx].astype(np.int64)))
        counts += np.bincount(y.astype(np.int64), minlength=n_classes)[:n_classes]
    x, y = torch.cat(xs).float(), torch.cat(ys)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mean) / std
    torch.manual_seed(seed)
    linear = nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(linear(x), y) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    sampled = np.bincount(y.numpy(), minlength=n_classes).astype(float)
    with np.errstate(divide="ignore"):
        shift = np.log(counts / counts.sum()) - np.log(np.maximum(sampled, 1) / sampled.sum())
    shift[counts == 0] = -np.inf  # a class no labeled case has is never predicted
    return Readout(linear.eval(), mean, std, torch.from_numpy(shift).float())


def organ_dice(pred: np.ndarray, truth: np.ndarray, organs: Sequence[int] = ORGANS) -> dict[int, float]:
    """Dice of each organ id between two label maps (X, Y, Z); NaN where the organ is absent from ``truth``
    (a present organ that is not predicted scores 0)."""
    if np.shape(pred) != np.shape(truth):
        raise ValueError(f"prediction {np.shape(pred)} and truth {np.shape(truth)} are on different grids")
    out = {}
    for k in organs:
        t, p = truth == k, pred == k
        n = int(t.sum())
        out[int(k)] = float("nan") if n == 0 else 2.0 * float((t & p).sum()) / (n + float(p.sum()))
    return out


def mean_dice(scores: dict[int, float]) -> float:
    """Mean over the organs present (NaN entries skipped); NaN when none is present."""
    vals = [v for v in scores.values() if not np.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def majority_vote(labels: Sequence[np.ndarray], n_classes: int = N_CLASSES) -> np.ndarray:
    """The voxel-wise most frequent id among label maps (X, Y, Z) on one grid (ties: the lowest id), int64."""
    stack = np.stack([np.asarray(lab, dtype=np.int64) for lab in labels])
    votes = np.stack([(stack == k).sum(0) for k in range(n_classes)])
    return votes.argmax(0)


def atlas_dice(atlas: np.ndarray, truths: Sequence[np.ndarray],
               organs: Sequence[int] = ORGANS) -> list[dict[int, float]]:
    """Organ Dice of one label map (a labeled case's, or :func:`majority_vote`) copied onto each held-out case."""
    return [organ_dice(np.asarray(atlas), np.asarray(t), organs) for t in truths]
