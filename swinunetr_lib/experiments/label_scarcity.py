"""E0, the label-scarcity check (issue #25): are labels scarce on a phantom family, so that features could help?

On phantoms ``seed .. seed + n_labeled - 1`` ("labeled") and the next ``n_held_out`` ("held out"), all drawn by
``make_abdomen_phantom(seed, spacing=(6, 6, 6), variability=v)`` on the same grid (64 x 48 x 36 at 6 mm), Dice of
the 13 BTCV organs (mean over the organs present in each held-out case, then over held-out cases) of:

- ``atlas_single``: one labeled case's label map copied onto each held-out case (no learning), mean over the
  labeled cases;
- ``atlas_majority``: the voxel-wise majority vote of all labeled cases, copied likewise;
- ``readout_1`` / ``readout_all``: the dense probe's logistic readout (:mod:`.dense_readout`) on frozen
  random-init Swin UNETR features (``feature_seed``; swinViT hidden states as its decoder reads them, source
  ``encoder``) trained on one labeled case (mean over the choices) / on all labeled cases.

Labels are **scarce** (``scarce = True``) when ``atlas_majority - atlas_single >= MIN_STEP`` and
``readout_all - readout_1 >= MIN_STEP``: more labeled cases then buy a clear gain, so a label-free pretraining
has something to give. Fixed before the runs: ``MIN_STEP = 0.05`` Dice.

    python -m swinunetr_lib.experiments.label_scarcity --variabilities "[0, 0.5, 1]" --csv e0.csv

Over a grid of its fields (one folder per run; its numbers in the sweep's results.csv: :func:`run_for_sweep`)::

    python -m swinunetr_lib.notebooks sweep swinunetr_lib.experiments.label_scarcity --grid e0.yml --out runs/e0
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..config import Config
from ..data.phantom import make_abdomen_phantom
from ..paths import absolute_from_cwd
from ..utils.cli import run_cli
from ..utils.files import atomic_write_text
from .dense_features import dense_features, random_encoder, to_grid
from .dense_readout import atlas_dice, fit_readout, majority_vote, mean_dice, organ_dice

MIN_STEP = 0.05  # Dice: what "clearly" means in the scarcity rule (fixed before any run)


Case = tuple[np.ndarray, np.ndarray]  # (image, label)


def phantom_family(variability: float, n_labeled: int = 4, n_held_out: int = 3, seed: int = 0,
                   spacing: float = 6.0) -> tuple[list[Case], list[Case]]:
    """(labeled, held_out) lists of (image HU (X, Y, Z) float32, label (X, Y, Z) uint8) on one grid, seeds
    ``seed ..`` in order (the same seeds ``build_demo_cohort`` uses for its labeled and validation phantoms)."""
    cases = [make_abdomen_phantom(seed + k, spacing=(spacing,) * 3, variability=variability)
             for k in range(n_labeled + n_held_out)]
    pairs = [(c.image, c.label) for c in cases]
    return pairs[:n_labeled], pairs[n_labeled:]


def _mean_over(truths: Sequence[np.ndarray], preds: Sequence[np.ndarray]) -> float:
    return float(np.mean([mean_dice(organ_dice(p, t)) for p, t in zip(preds, truths, strict=True)]))


def label_scarcity(labeled: Sequence[Case], held_out: Sequence[Case],
                   feature_seed: int = 0, feature_size: int = 12, per_class: int = 1000,
                   max_iter: int = 100) -> dict[str, float | bool]:
    """E0 on given cases (see the module docstring): ``atlas_single``, ``atlas_majority``, ``readout_1``,
    ``readout_all`` (mean Dice), the two steps and ``scarce``. ``feature_size=0`` skips the readout (atlas only)."""
    truths = [lab for _, lab in held_out]
    single = [np.mean([mean_dice(d) for d in atlas_dice(lab, truths)]) for _, lab in labeled]
    out: dict[str, float | bool] = {
        "atlas_single": float(np.mean(single)),
        "atlas_majority": float(np.mean([mean_dice(d) for d in atlas_dice(majority_vote([lab for _, lab in labeled]),
                                                                          truths)]))}
    if feature_size:
        enc = random_encoder(feature_seed, feature_size)
        feats = [to_grid(dense_features(enc, img), img.shape) for img, _ in list(labeled) + list(held_out)]
        f_lab, f_held = feats[:len(labeled)], feats[len(labeled):]
        one = []
        for f, (_, lab) in zip(f_lab, labeled, strict=True):
            ro = fit_readout([f], [lab], per_class=per_class, max_iter=max_iter)
            one.append(_mean_over(truths, [ro.predict(g) for g in f_held]))
        ro = fit_readout(f_lab, [lab for _, lab in labeled], per_class=per_class, max_iter=max_iter)
        out.update(readout_1=float(np.mean(one)), readout_all=_mean_over(truths, [ro.predict(g) for g in f_held]))
    out["atlas_step"] = out["atlas_majority"] - out["atlas_single"]  # type: ignore[operator]
    if "readout_all" in out:
        out["readout_step"] = out["readout_all"] - out["readout_1"]  # type: ignore[operator]
        out["scarce"] = bool(out["atlas_step"] >= MIN_STEP and out["readout_step"] >= MIN_STEP)  # type: ignore[operator]
    return out


@dataclass
class LabelScarcityConfig(Config):
    variabilities: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])  # phantom variability settings
                                  # to check (0..1)
    n_labeled: int = 4            # labeled phantoms (seeds seed .. seed + n_labeled - 1), as make experiment's cohort
    n_held_out: int = 3           # held-out phantoms (the next seeds)
    seed: int = 0                 # first phantom seed
    spacing: float = 6.0          # phantom voxel size in mm (6 mm: 64 x 48 x 36 voxels)
    feature_seed: int = 0         # seed of the random-init Swin UNETR whose features the readout reads
    feature_size: int = 12        # its feature size (0: atlas only)
    csv: str = ""                 # also write the table to this CSV ("" = print only)


def check_config(cfg: LabelScarcityConfig) -> LabelScarcityConfig:
    """``cfg`` with its values in range, else ValueError (one line)."""
    if cfg.n_labeled < 2 or cfg.n_held_out < 1 or cfg.feature_size < 0 or not cfg.variabilities:
        raise ValueError(f"need n_labeled >= 2, n_held_out >= 1, feature_size >= 0 and a variability; got "
                         f"{cfg.n_labeled}, {cfg.n_held_out}, {cfg.feature_size}, {cfg.variabilities}")
    return cfg


def run(cfg: LabelScarcityConfig, say=print) -> pd.DataFrame:
    """E0 as configured: one row per variability (written to ``cfg.csv`` where given)."""
    check_config(cfg)
    rows = []
    for v in cfg.variabilities:
        labeled, held = phantom_family(v, cfg.n_labeled, cfg.n_held_out, cfg.seed, cfg.spacing)
        rows.append({"variability": v, **label_scarcity(labeled, held, cfg.feature_seed, cfg.feature_size)})
        say(pd.DataFrame(rows[-1:]).round(3).to_string(index=False))
    table = pd.DataFrame(rows)
    if cfg.csv:
        atomic_write_text(table.round(4).to_csv(index=False), cfg.csv)
    return table


# The sweep verb (python -m swinunetr_lib.notebooks sweep swinunetr_lib.experiments.label_scarcity --grid ...)
SWEEP_CONFIG = LabelScarcityConfig
SWEEP_OUTPUTS = {"csv": "label_scarcity.csv"}  # in each run's folder


def sweep_config(params: dict) -> LabelScarcityConfig:
    """One sweep point's config, its values checked."""
    return check_config(LabelScarcityConfig.from_dict(params))


def run_for_sweep(params: dict) -> dict[str, float | bool]:
    """One run of a sweep: :func:`run`'s numbers (atlas_single, atlas_majority, readout_1, readout_all, the two
    steps, scarce); with several variabilities each name ends in ``_v<variability>``."""
    table = run(sweep_config(params), say=lambda m: print(m, flush=True))
    one = len(table) == 1
    return {(k if one else f"{k}_v{row['variability']:g}"): (bool(v) if isinstance(v, (bool, np.bool_)) else float(v))
            for row in table.to_dict("records") for k, v in row.items() if k != "variability"}


def main(argv: Sequence[str] | None = None) -> int:
    prog = "python -m swinunetr_lib.experiments.label_scarcity"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    LabelScarcityConfig.add_arguments(parser)
    args = absolute_from_cwd(parser.parse_args(argv), "csv")

    def body() -> int:
        table = run(LabelScarcityConfig.from_args(args), say=lambda m: print(m, flush=True))
        print(table.round(3).to_string(index=False))
        return 0

    return run_cli(prog, body)


if __name__ == "__main__":
    raise SystemExit(main())
