"""Cheap probes of what self-supervised pretraining taught the encoder, free of fine-tuning noise.

Three measurements, each beside its baseline:

- **Organ probe** (linear probe): cubes centred on a random voxel of each organ of the labeled cases are fed
  through the *frozen* encoder; the globally pooled features of its five stages are concatenated and a
  multinomial logistic regression, fitted on the crops of some cases, names the organ in the crops of held-out
  cases. The same probe on the same architecture at random initialisation is the baseline (random
  convolutional / transformer features are already far from useless), and ``1 / n_organs`` is chance.
- **Rotation accuracy** on held-out crops: every crop is shown at the four axial rotations and the SSL
  model's rotation head must name each one; chance is 25 %.
- **Contrastive retrieval** on held-out crops: two pretraining views of every crop (each rotated and cut out on
  its own) are embedded by the contrastive head, and each view's most similar other view must be its partner;
  chance is ``1 / (2N - 1)`` for N crops (many of them overlap: crops of one case at neighbouring organs).
- **Inpainting** (optional, ``--inpainting-size 64``): the held-out images, whole, are rotated and cut out as in
  pretraining and reconstructed; the L1 inside the boxes is read against the trivial fill (each view's visible
  mean), and ``--figure`` draws the reconstructions.

All are forward passes only: about a minute on 2 CPU cores for a few hundred 32^3 crops. Used by notebooks 02
and 06, and a command::

    python -m swinunetr_lib.experiments.probe --checkpoint runs/notebooks/ssl_pretraining/checkpoints/last.pt \
        --manifest data/demo_cohort/finetune.json [--inpainting-size 64 --figure reconstructions.png]
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.networks.nets.swin_unetr import SwinTransformer
from monai.transforms import Compose, EnsureChannelFirstd, Orientationd, ScaleIntensityRanged
from torch import nn

from ..config import Config
from ..data.loading import LoadImageNamed
from ..data.manifest import resolve_entries
from ..data.prepared_volumes import PRETRAIN_HU_WINDOW
from ..models.window_attention import SDPAWindowAttention, use_sdpa_window_attention
from ..paths import absolute_from_cwd
from ..pretrain.losses import ContrastiveLoss
from ..pretrain.model import SSLModel, load_ssl_model
from ..pretrain.transforms import (
    InnerCutout,
    SSLView,
    SSLViewTransform,
    TwoViewTransform,
    make_generator,
    rotate_axial,
)
from ..utils.cli import run_cli
from ..utils.device import resolve_device
from ..utils.files import atomic_path, atomic_write_text
from ..viz.figures import SCALED_SOFT_TISSUE, plot_ssl_panels
from .baselines import contrastive_chance, trivial_fill_l1

HU_RANGE = PRETRAIN_HU_WINDOW  # the pretraining intensity scaling (paper: HU [-1000, 1000] -> [0, 1])


def load_case(image: str | os.PathLike[str], label: str | os.PathLike[str] | None = None,
              hu_range: tuple[float, float] = HU_RANGE) -> tuple[np.ndarray, np.ndarray | None]:
    """One CT as the pretraining pipeline sees it: RAS, HU clipped to ``hu_range`` and scaled to [0, 1].

    Returns ``image`` (X, Y, Z) float32 and ``label`` (X, Y, Z) int64 or None. Errors name the file.
    """
    keys = ["image"] + (["label"] if label is not None else [])
    steps = Compose([LoadImageNamed(keys=keys, image_only=True), EnsureChannelFirstd(keys=keys),
                     Orientationd(keys=keys, axcodes="RAS"),
                     ScaleIntensityRanged(keys="image", a_min=hu_range[0], a_max=hu_range[1], b_min=0.0, b_max=1.0,
                                          clip=True)])
    data = steps({"image": str(image), **({"label": str(label)} if label is not None else {})})
    img = np.asarray(data["image"][0], dtype=np.float32)
    lab = np.rint(np.asarray(data["label"][0])).astype(np.int64) if label is not None else None
    if lab is not None and lab.shape != img.shape:
        raise ValueError(f"{label}: label grid {lab.shape} differs from its image's {img.shape}")
    return img, lab


def crop_at(volume: np.ndarray, center: Sequence[int], size: int) -> np.ndarray:
    """The ``size``^3 cube of (X, Y, Z) ``volume`` centred at ``center``, zero-padded where it leaves the volume."""
    out = np.zeros((size,) * 3, dtype=volume.dtype)
    lo = [int(c) - size // 2 for c in center]
    src = tuple(slice(max(low, 0), min(low + size, n)) for low, n in zip(lo, volume.shape, strict=True))
    dst = tuple(slice(s.start - low, s.stop - low) for s, low in zip(src, lo, strict=True))
    out[dst] = volume[src]
    return out


def organ_crops(cases: Sequence[tuple[np.ndarray, np.ndarray]], organs: Sequence[int], size: int = 32,
                per_organ: int = 2, min_voxels: int = 4,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cubes centred on random voxels of each organ: (N, 1, size, size, size), organ ids (N,), case index (N,).

    An organ with fewer than ``min_voxels`` voxels in a case is skipped there.
    """
    rng = np.random.default_rng(seed)
    crops, ys, case_ids = [], [], []
    for c, (image, label) in enumerate(cases):
        for organ in organs:
            where = np.argwhere(label == organ)
            if len(where) < min_voxels:
                continue
            for i in rng.choice(len(where), size=per_organ, replace=len(where) < per_organ):
                crops.append(crop_at(image, where[i], size))
                ys.append(organ)
                case_ids.append(c)
    if not crops:
        raise ValueError(f"no organ of {list(organs)} has >= {min_voxels} voxels in the {len(cases)} case(s)")
    return (torch.from_numpy(np.stack(crops))[:, None], torch.tensor(ys), torch.tensor(case_ids))


@torch.no_grad()
@torch.no_grad()
def encoder_features(encoder: SwinTransformer, x: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Frozen features: each of the encoder's five stage outputs, layer-normalised and averaged over space,
    concatenated. (N, 1, D, H, W) -> (N, 31 F) for feature size F."""
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    out = []
    for chunk in x.split(batch_size):
        stages = encoder(chunk.to(device), normalize=True)  # [(B, F, D/2..), (B, 2F, D/4..), ..., (B, 16F, D/32..)]
        out.append(torch.cat([s.float().mean(dim=(2, 3, 4)) for s in stages], dim=1).cpu())
    encoder.train(was_training)
    return torch.cat(out)


def logistic_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                   weight_decay: float = 1e-2, max_iter: int = 200) -> float:
    """Multinomial logistic regression on standardised features (L-BFGS, L2 ``weight_decay``); test accuracy."""
    classes = torch.unique(train_y)
    to_index = {int(c): i for i, c in enumerate(classes)}
    ytr = torch.tensor([to_index[int(v)] for v in train_y])
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xtr, xte = (train_x - mean) / std, (test_x - mean) / std
    torch.manual_seed(0)
    linear = nn.Linear(xtr.shape[1], len(classes)).double()
    xtr, xte = xtr.double(), xte.double()
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(linear(xtr), ytr) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = classes[linear(xte).argmax(1)]
    return float((pred == test_y).double().mean())


@dataclass
class OrganProbe:
    accuracy: float         # held-out accuracy of the logistic regression on the frozen features of all stages
    accuracy_last_stage: float  # the same on the deepest stage alone (16 F features, 1/32 of the crop's side)
    chance: float           # 1 / number of organs
    n_train: int            # crops the regression was fitted on
    n_test: int             # held-out crops it was scored on


def organ_probe(encoder: SwinTransformer, train: tuple[torch.Tensor, torch.Tensor],
                test: tuple[torch.Tensor, torch.Tensor]) -> OrganProbe:
    """Fit on ``train = (crops, organ ids)``, score on ``test``; crops (N, 1, D, H, W).

    Also probes the deepest stage alone: the pooled early stages carry intensity statistics that random weights
    pass on as well, so the last stage is where learned (contextual) features can show."""
    ftr, fte = encoder_features(encoder, train[0]), encoder_features(encoder, test[0])
    last = 16 * encoder.embed_dim  # the five stages have F, 2F, 4F, 8F, 16F channels (31 F in all)
    acc = logistic_probe(ftr, train[1], fte, test[1])
    acc_last = logistic_probe(ftr[:, -last:], train[1], fte[:, -last:], test[1])
    return OrganProbe(acc, acc_last, 1.0 / len(torch.unique(train[1])), len(train[1]), len(test[1]))


@torch.no_grad()
def rotation_accuracy(model: SSLModel, crops: torch.Tensor, batch_size: int = 16) -> float:
    """Accuracy of the rotation head over every crop (N, 1, X, Y, Z) at each of the 4 axial rotations (chance 0.25).

    Uses ``model.rotation_logits`` (encoder and rotation head only; the decoder is not run)."""
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    for chunk in crops.split(max(1, batch_size // 4)):
        k = torch.arange(4).repeat_interleave(len(chunk))
        x = rotate_axial(chunk.repeat(4, 1, 1, 1, 1), k).to(device)
        pred = model.rotation_logits(x).argmax(1).cpu()
        correct += int((pred == k).sum())
        total += len(k)
    return correct / total


@dataclass
class ContrastiveProbe:
    top1: float             # fraction of the 2N views whose most cosine-similar other view is their partner
    chance: float           # 1 / (2N - 1): a random pick among the other views
    loss: float             # the NT-Xent loss over these 2N views (temperature 0.5)
    loss_chance: float      # ln(2N - 1): the same loss for embeddings that carry nothing (all equal)


@torch.no_grad()
def contrastive_retrieval(model: SSLModel, crops: torch.Tensor, seed: int = 0, temperature: float = 0.5,
                          batch_size: int = 16) -> ContrastiveProbe:
    """Two seeded pretraining views (rotation and cutout) of every crop (N, 1, X, Y, Z), embedded by the contrastive
    head (``model.contrastive_embedding``; the decoder is not run); is each view's nearest other view its partner?"""
    model.eval()
    device = next(model.parameters()).device
    v1, v2 = TwoViewTransform()(crops.to(device), make_generator(device, seed))
    z = torch.cat([model.contrastive_embedding(chunk).float()
                   for chunk in torch.cat([v1.image, v2.image]).split(batch_size)])  # (2N, 512)
    n = len(crops)
    u = nn.functional.normalize(z, dim=1)
    sim = u @ u.T
    sim.fill_diagonal_(-float("inf"))
    partner = (torch.arange(2 * n, device=z.device) + n) % (2 * n)
    loss = ContrastiveLoss(temperature, gather_distributed=False)(z[:n], z[n:])
    return ContrastiveProbe(float((sim.argmax(1) == partner).double().mean()), 1.0 / (2 * n - 1), float(loss),
                            contrastive_chance(n))


@dataclass
class InpaintingProbe:
    l1_inside: float        # mean |reconstruction - original| over the cut-out voxels (the part that needs anatomy)
    trivial_fill_l1: float  # the same for a fill with each view's visible mean (what copying alone reaches)
    l1_all: float           # over every voxel (what the training loss averages)
    trivial_fill_l1_all: float  # the trivial fill over every voxel (the training loss's copying baseline)
    constant_l1_all: float  # every voxel at the view's visible mean (the training loss's chance level)
    original: torch.Tensor  # (N * draws, 1, S, S, S) the volumes before rotation and cutout, view by view
    view: SSLView           # the corrupted held-out views (image, target, rotation, mask), for pictures
    reconstruction: torch.Tensor  # (N, 1, S, S, S) the model's output clamped to [0, 1]


@torch.no_grad()
def inpainting_probe(model: SSLModel, volumes: torch.Tensor, seed: int = 0, draws: int = 1,
                     cutout: InnerCutout | None = None) -> InpaintingProbe:
    """Rotate and cut out held-out ``volumes`` (N, 1, S, S, S) as pretraining does (seeded; ``draws`` views of each,
    N * draws in all, volume by volume in turn), reconstruct them, and score the reconstruction inside the boxes
    against the trivial fill (:func:`swinunetr_lib.experiments.baselines.trivial_fill_l1`)."""
    model.eval()
    device = next(model.parameters()).device
    volumes = volumes.repeat(draws, 1, 1, 1, 1)
    view = SSLViewTransform(cutout=cutout)(volumes.to(device), make_generator(device, seed))
    rec = model(view.image)["reconstruction"].float().clamp(0, 1)
    err, inside = (rec - view.target).abs(), view.mask.expand_as(rec)
    fill = {c: trivial_fill_l1(view.target, view.mask, region="all", copy_visible=c) for c in (True, False)}
    return InpaintingProbe(float(err[inside].mean()), trivial_fill_l1(view.target, view.mask), float(err.mean()),
                           fill[True], fill[False], volumes, view, rec)


def centred_volumes(images: Sequence[np.ndarray], size: int = 64) -> torch.Tensor:
    """Whole (X, Y, Z) volumes centre-cropped or zero-padded (air, after scaling) to ``size``^3: (N, 1, S, S, S)."""
    return torch.from_numpy(np.stack([crop_at(i, [n // 2 for n in i.shape], size) for i in images]))[:, None]


def random_like(model: SSLModel, seed: int = 0) -> SSLModel:
    """The same architecture at a fresh random initialisation (the probe's baseline)."""
    torch.manual_seed(seed)
    w = model.swinViT.patch_embed.proj.weight
    twin = SSLModel(in_channels=w.shape[1], feature_size=w.shape[0], decoder=model.decoder_kind)
    if any(isinstance(m, SDPAWindowAttention) for m in model.modules()):
        use_sdpa_window_attention(twin)  # the same attention kernel as the model it is the twin of
    return twin.to(w.device).eval()


def run_probes(checkpoint: str | os.PathLike[str], manifest: str | os.PathLike[str], size: int = 32,
               per_organ: int = 4, seed: int = 0, organs: Sequence[int] = tuple(range(1, 14)),
               inpainting_size: int = 0, figure: str | os.PathLike[str] = "",
               device: str | torch.device = "cpu") -> pd.DataFrame:
    """The probes for the SSL model in ``checkpoint`` and for its random twin, on a fine-tuning manifest.

    The organ probe is fitted on crops of the manifest's ``training`` cases and scored on its ``validation``
    cases; rotation accuracy is measured on the validation crops. One row per encoder
    (``ssl``, ``random init``) with ``organ_accuracy`` (all stages), ``organ_accuracy_last_stage``,
    ``organ_chance``, ``rotation_accuracy``, ``rotation_chance``, ``contrastive_top1``, ``contrastive_chance``,
    ``contrastive_loss``, ``contrastive_loss_chance`` (:func:`contrastive_retrieval` on the validation crops),
    ``n_train``, ``n_test``. With ``inpainting_size`` (a multiple of 32) the whole validation images, centred in
    cubes of that side, are also rotated, cut out and reconstructed (:func:`inpainting_probe`):
    columns ``inpainting_l1`` (inside the boxes), ``trivial_fill_l1``, and over every voxel ``inpainting_l1_all``,
    ``trivial_fill_l1_all``, ``constant_l1_all`` (the loss's baselines); ``figure`` then saves the SSL model's
    reconstructions as a PNG. ``device``: where the models run (``"auto"``: CUDA if present, else the CPU).
    Both models compute MONAI's window attention in one fused kernel (the same function; see
    :mod:`swinunetr_lib.models.window_attention`).
    """
    device = resolve_device(device)  # an explicit device that is not here fails before anything is read
    train_entries, val_entries = (resolve_entries(manifest, key=split) for split in ("training", "validation"))

    def load(entries: list[dict]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        return [load_case(e["image"], e["label"]) for e in entries]

    held_out = load(val_entries)
    train = organ_crops(load(train_entries), organs, size, per_organ, seed=seed)
    test = organ_crops(held_out, organs, size, per_organ, seed=seed + 1)
    volumes = centred_volumes([image for image, _ in held_out], inpainting_size) if inpainting_size else None
    ssl = load_ssl_model(checkpoint, device)
    use_sdpa_window_attention(ssl)  # the same function in one fused kernel: ~4x faster inference on a CPU
    rows = []
    for name, model in (("ssl", ssl), ("random init", random_like(ssl, seed))):
        probe = organ_probe(model.swinViT, train[:2], test[:2])
        contrastive = contrastive_retrieval(model, test[0], seed)
        rows.append({"encoder": name, "organ_accuracy": probe.accuracy,
                     "organ_accuracy_last_stage": probe.accuracy_last_stage, "organ_chance": probe.chance,
                     "rotation_accuracy": rotation_accuracy(model, test[0]), "rotation_chance": 0.25,
                     "contrastive_top1": contrastive.top1, "contrastive_chance": contrastive.chance,
                     "contrastive_loss": contrastive.loss, "contrastive_loss_chance": contrastive.loss_chance,
                     "n_train": probe.n_train, "n_test": probe.n_test})
        if volumes is not None:
            painted = inpainting_probe(model, volumes, seed, draws=4)
            rows[-1].update(inpainting_l1=painted.l1_inside, trivial_fill_l1=painted.trivial_fill_l1,
                            inpainting_l1_all=painted.l1_all, trivial_fill_l1_all=painted.trivial_fill_l1_all,
                            constant_l1_all=painted.constant_l1_all)
            if figure and name == "ssl":
                save_reconstructions(painted, figure)
    return pd.DataFrame(rows)


def save_reconstructions(painted: InpaintingProbe, path: str | os.PathLike[str]) -> Path:
    """The held-out views of :func:`inpainting_probe` as :func:`swinunetr_lib.viz.figures.plot_ssl_panels` draws
    them (the slice the boxes hide most of, boxes outlined, soft-tissue window), written atomically to the PNG
    ``path``."""
    v = painted.view
    fig = plot_ssl_panels(painted.original, v.target, v.image, painted.reconstruction,
                          rotation_labels=v.rotation.tolist(), mask=v.mask, window_preset=SCALED_SOFT_TISSUE)
    fig.suptitle(f"held-out: L1 inside the boxes {painted.l1_inside:.3f} "
                 f"(trivial fill {painted.trivial_fill_l1:.3f})", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    return Path(path)


@dataclass
class ProbeConfig(Config):
    checkpoint: str = ""                 # SSL pretraining checkpoint with its heads (fit's checkpoints/last.pt)
                                         # (required)
    manifest: str = ""                   # labeled decathlon JSON: the probe is fitted on "training", scored on
                                         # "validation" (required)
    size: int = 32                       # side of the organ-centred crops in voxels, a multiple of 32
    per_organ: int = 4                   # crops per organ and case
    seed: int = 0                        # seed of the crop positions, the cutouts and of the random-init twin
    inpainting_size: int = 0             # also inpaint the whole validation images centred in cubes of this side
                                         # (a multiple of 32, >= 64 for decoder=unet); 0 = skip
    figure: str = ""                     # with inpainting_size: save the SSL model's reconstructions to this PNG
    csv: str = ""                        # also write the table to this CSV file ("" = print only)
    device: str = "cpu"                  # cpu | cuda | cuda:N | auto (CUDA if present, else the CPU, and says so)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swinunetr_lib.experiments.probe",
                                     description=__doc__.split("\n\n")[0])
    ProbeConfig.add_arguments(parser)
    args = absolute_from_cwd(parser.parse_args(argv), "checkpoint", "manifest", "csv", "figure")

    def body() -> int:
        cfg = ProbeConfig.from_args(args)
        for name in ("checkpoint", "manifest"):
            if not getattr(cfg, name):
                raise ValueError(f"--{name} is required")
            if not Path(getattr(cfg, name)).is_file():
                raise FileNotFoundError(f"{getattr(cfg, name)}: --{name} file not found")
        if cfg.size < 32 or cfg.size % 32 or cfg.per_organ < 1:
            raise ValueError(f"size={cfg.size} must be a multiple of 32 and per_organ={cfg.per_organ} >= 1")
        if cfg.inpainting_size < 0 or cfg.inpainting_size % 32:
            raise ValueError(f"inpainting_size={cfg.inpainting_size} must be a multiple of 32 (0: no inpainting probe)")
        if cfg.figure and not cfg.inpainting_size:
            raise ValueError(f"--figure {cfg.figure} draws the inpainting probe: give --inpainting-size too")
        table = run_probes(cfg.checkpoint, cfg.manifest, cfg.size, cfg.per_organ, cfg.seed,
                           inpainting_size=cfg.inpainting_size, figure=cfg.figure, device=cfg.device)
        print(table.round(3).to_string(index=False))
        if cfg.csv:
            atomic_write_text(table.to_csv(index=False), cfg.csv)
        return 0

    return run_cli("python -m swinunetr_lib.experiments.probe", body)


if __name__ == "__main__":
    raise SystemExit(main())
