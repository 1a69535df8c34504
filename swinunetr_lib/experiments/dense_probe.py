"""E1, the dense probe (issue #25): do SSL-pretrained swinViT weights give better per-voxel features than random ones?

Frozen encoders (:mod:`.dense_features`: what is pretrained, what is random) give features at every voxel (stage-1
resolution, five stages upsampled and concatenated, source ``encoder`` or ``swinvit``); a multinomial logistic
readout (:func:`.dense_readout.fit_readout`) is trained on ONE labeled case and predicts all 14 classes at every
voxel of each held-out case; Dice per organ and the mean over the organs present. Replicates: each labeled case
in turn. Every result holds, beside the SSL encoder: random initialisation at ``n_seeds`` seeds (the band: min,
max, mean), the intensity baseline (scaled image smoothed at 5 scales), intensity + voxel coordinates, the atlas
of the same labeled case (its label map copied, no learning) and, where given, fine-tuned Swin UNETRs (the
positive control: a probe that cannot tell them from the random band cannot see anything).

The SSL arm uses the random encoder blocks of each seed (identical to the random arm's), so with source
``encoder`` it is run at every seed and its score per labeled case is the mean over seeds; with ``swinvit`` it
does not depend on the seed. Default source ``encoder``: where Swin UNETR's decoder reads the encoder (measured
before, issue #25: a fine-tuned model reads no better than random from the swinViT stages, 0.32, but far better
after the encoder blocks, 0.61 vs 0.47).

**Decision rule (fixed before any run).** Per labeled case c: gain_c = SSL_c - mean over seeds of random_c.
"SSL features help" only if (1) SSL_c beats every random seed for every labeled case, (2) the 95 % t interval of
the mean gain over labeled cases (Student t, n - 1 degrees of freedom; the labeled cases are the replicates)
excludes 0, and (3) the mean gain is >= ``MIN_GAIN`` = 0.02 Dice. Otherwise: "not detected at this scale (95 % CI
[lo, hi])". The positive control passes when every supervised encoder beats the random band's max on every
labeled case.

    python -m swinunetr_lib.experiments.dense_probe --manifest runs/exp/cohort_v05/finetune.json \
        --ssl-checkpoint runs/exp/ssl_a/checkpoints/last.pt --supervised "[runs/exp/ft_v05/model.pt]" \
        --csv dense_probe.csv --summary dense_probe_summary.csv

Over a grid of its fields (one folder per run, its tidy table and summary in it; the verdict's gain, CI, and each
encoder's mean Dice in the sweep's results.csv: :func:`sweep_results`)::

    python -m swinunetr_lib.notebooks sweep swinunetr_lib.experiments.dense_probe --grid e1.yml --out runs/e1
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.transforms import Compose, EnsureChannelFirstd, Orientationd

from ..config import Config
from ..data.labels import BTCV_LABELS
from ..data.loading import LoadImageNamed
from ..data.manifest import resolve_entries
from ..models.swin_unetr import read_encoder_checkpoint
from ..paths import absolute_from_cwd, resolve_path
from ..utils.cli import run_cli
from ..utils.files import atomic_write_text
from .dense_features import (
    FrozenEncoder,
    coordinate_features,
    dense_features_by_source,
    features_from_hidden,
    intensity_features,
    random_encoder,
    ssl_encoder,
    supervised_encoder,
    swinvit_hidden,
    to_grid,
)
from .dense_readout import ORGANS, fit_readout, mean_dice, organ_dice
from .intervals import mean_interval

MIN_GAIN = 0.02  # Dice: the smallest mean gain called "help" (fixed before any run)
Case = tuple[np.ndarray, np.ndarray]  # (image HU (X, Y, Z) float32, label (X, Y, Z) ids)


@dataclasses.dataclass
class Verdict:
    helps: bool
    gain: float                  # mean over labeled cases of SSL - mean(random band)
    ci: tuple[float, float]      # its 95 % t interval
    beats_every_seed: bool
    text: str


def decide(ssl: Sequence[float], random: Sequence[Sequence[float]], min_gain: float = MIN_GAIN,
           level: float = 0.95) -> Verdict:
    """The decision rule of the module docstring. ``ssl`` (n_cases,) mean Dice per labeled case; ``random``
    (n_cases, n_seeds) the random band's Dice per labeled case and seed."""
    s, r = np.asarray(ssl, float), np.asarray(random, float)
    if r.ndim != 2 or len(s) != len(r) or len(s) == 0:
        raise ValueError(f"need ssl (n_cases,) and random (n_cases, n_seeds); got {s.shape} and {r.shape}")
    interval = mean_interval(s - r.mean(1), level)  # the paired t interval over labeled cases
    gain = interval.mean
    ci = (interval.low, interval.high) if interval.n > 1 else (-math.inf, math.inf)
    beats = bool((s[:, None] > r).all())
    helps = beats and ci[0] > 0 and gain >= min_gain
    pct = f"{level * 100:g} %"
    text = (f"SSL features help: gain {gain:+.3f} Dice ({pct} CI [{ci[0]:+.3f}, {ci[1]:+.3f}])" if helps else
            f"not detected at this scale (gain {gain:+.3f} Dice, {pct} CI [{ci[0]:+.3f}, {ci[1]:+.3f}], "
            f"SSL above every random seed on every labeled case: {'yes' if beats else 'no'})")
    return Verdict(helps, gain, ci, beats, text)


def _rows(encoder: str, seed: int, labeled: int, held_names: Sequence[str],
          scores: Sequence[dict[int, float]], source: str = "") -> list[dict]:
    """Tidy rows: per held-out case each organ and the mean, then the mean over held-out cases."""
    key = {"encoder": encoder, "source": source, "seed": seed, "labeled_case": labeled}
    rows = []
    for name, sc in zip(held_names, scores, strict=True):
        rows += [{**key, "held_out_case": name, "organ": BTCV_LABELS[k], "dice": v} for k, v in sc.items()]
        rows.append({**key, "held_out_case": name, "organ": "mean", "dice": mean_dice(sc)})
    rows.append({**key, "held_out_case": "mean", "organ": "mean",
                 "dice": float(np.mean([mean_dice(sc) for sc in scores]))})
    return rows


Pairs = list[tuple[int, list[int]]]  # (index of the labeled case, indices of the cases it is scored on)


def readout_rows(encoder: str, seed: int, feats: Sequence[torch.Tensor], cases: Sequence[Case], pairs: Pairs,
                 names: Sequence[str], per_class: int = 1000, max_iter: int = 100, source: str = "") -> list[dict]:
    """For each (labeled, scored) pair: a readout trained on ``feats[labeled]`` (features (C, X, Y, Z) on the case's
    label grid, one per case of ``cases``), scored on each scored case: :func:`_rows` for each."""
    rows = []
    for i, scored in pairs:
        ro = fit_readout([feats[i]], [cases[i][1]], per_class=per_class, seed=max(seed, 0), max_iter=max_iter)
        scores = [organ_dice(ro.predict(feats[j]), cases[j][1]) for j in scored]
        rows += _rows(encoder, seed, i, [names[j] for j in scored], scores, source)
    return rows


def _run_name(path: str | os.PathLike[str]) -> str:
    """The run folder of a fine-tuned checkpoint: ``<run>/model.pt`` or ``<run>/checkpoints/last.pt`` -> ``<run>``."""
    p = Path(path).absolute()
    return (p.parent.parent if p.parent.name == "checkpoints" else p.parent).name


def run_dense_probe(labeled: Sequence[Case], held_out: Sequence[Case] | None, *,
                    ssl_checkpoint: str | os.PathLike[str] = "", supervised: Sequence[str | os.PathLike[str]] = (),
                    n_seeds: int = 5, source: str = "encoder", also_sources: Sequence[str] = (),
                    feature_size: int = 12, per_class: int = 1000, max_iter: int = 100,
                    held_names: Sequence[str] | None = None,
                    say=print) -> tuple[pd.DataFrame, pd.DataFrame, Verdict | None]:
    """E1 on given cases. Returns (tidy table: encoder, source, seed, labeled_case, held_out_case, organ, dice;
    summary: per source and labeled case every encoder's mean Dice, the random band and the paired gain;
    the :class:`Verdict` for ``source``, or None without an SSL checkpoint). ``also_sources`` are read from the
    same forward passes and reported beside ``source`` (baselines have source "").
    ``held_out=None``: leave one out, each of ``labeled`` trained on in turn and scored on the others
    (``held_names`` then names the labeled cases). Encoders are loaded before any feature is computed
    (a bad checkpoint fails fast); features are computed once per encoder and case, and the SSL swinViT's hidden
    states once per case (each seed's SSL arm applies its own random encoder blocks to them)."""
    cases = list(labeled) + list(held_out or [])
    n = len(labeled)
    if held_out is None:
        if n < 2:
            raise ValueError(f"leave-one-out needs at least 2 labeled cases, got {n}")
        names = list(held_names or [f"case_{i}" for i in range(n)])
        pairs: Pairs = [(i, [j for j in range(n) if j != i]) for i in range(n)]
    else:
        names = [f"labeled_{i}" for i in range(n)] + list(held_names or [f"held_out_{i}" for i in range(len(held_out))])
        pairs = [(i, list(range(n, len(cases)))) for i in range(n)]
    if len(names) != len(cases):
        raise ValueError(f"{len(names)} names for {len(cases)} cases")
    srcs = tuple(dict.fromkeys((source, *also_sources)))
    ssl_seeds = range(n_seeds) if "encoder" in srcs else range(1)
    encoders: list[FrozenEncoder] = [supervised_encoder(p, f"supervised {_run_name(p)}") for p in supervised]
    if ssl_checkpoint:
        loaded = read_encoder_checkpoint(ssl_checkpoint)  # once, for every seed's SSL arm
        encoders += [ssl_encoder(ssl_checkpoint, s, loaded=loaded) for s in ssl_seeds]
    size = encoders[-1].model.swinViT.patch_embed.proj.out_channels if ssl_checkpoint else feature_size
    encoders += [random_encoder(s, size) for s in range(n_seeds)]
    rows: list[dict] = []
    ssl_hidden = None
    for enc in encoders:
        t0 = time.time()
        if enc.kind == "ssl":  # the pretrained swinViT is the same at every seed: run it once per case
            ssl_hidden = ssl_hidden or [swinvit_hidden(enc, img) for img, _ in cases]
            by_src = [features_from_hidden(enc.model, h, low, img.shape, srcs)
                      for (h, low), (img, _) in zip(ssl_hidden, cases, strict=True)]
        else:
            by_src = [dense_features_by_source(enc, img, srcs) for img, _ in cases]
        name = enc.kind if enc.kind != "supervised" else enc.name
        for src in srcs:
            feats = [to_grid(f[src], img.shape) for f, (img, _) in zip(by_src, cases, strict=True)]
            rows += readout_rows(name, enc.seed, feats, cases, pairs, names, per_class, max_iter, src)
        say(f"{enc.name} (seed {enc.seed}): {time.time() - t0:.0f} s")
    inten = [intensity_features(img) for img, _ in cases]
    rows += readout_rows("intensity", -1, inten, cases, pairs, names, per_class, max_iter)
    coords = [torch.cat([f, coordinate_features(img.shape)]) for f, (img, _) in zip(inten, cases, strict=True)]
    rows += readout_rows("intensity+coords", -1, coords, cases, pairs, names, per_class, max_iter)
    for i, scored in pairs:
        rows += _rows("atlas", -1, i, [names[j] for j in scored],
                      [organ_dice(np.asarray(cases[i][1]), cases[j][1], ORGANS) for j in scored])
    table = pd.DataFrame(rows)
    parts = [summarize(table, src) for src in srcs]
    return table, pd.concat([p for p, _ in parts], ignore_index=True), parts[0][1]


def summarize(table: pd.DataFrame, source: str = "encoder") -> tuple[pd.DataFrame, Verdict | None]:
    """Per labeled case, for the encoders read at ``source`` and the baselines: mean Dice of each encoder (SSL
    averaged over its seeds), the random band (min, max, mean), the paired gain SSL - mean(band), and whether each
    supervised encoder is above the band's max."""
    m = table[(table.held_out_case == "mean") & (table.organ == "mean") & table.source.isin([source, ""])]
    per = m.groupby(["encoder", "labeled_case"]).dice.mean().unstack(0)
    band = m[m.encoder == "random"].pivot_table(index="labeled_case", columns="seed", values="dice")
    summary = per.drop(columns=["random"], errors="ignore").copy()
    summary["random_min"], summary["random_max"] = band.min(axis=1), band.max(axis=1)
    summary["random_mean"] = band.mean(axis=1)
    verdict = None
    if "ssl" in per:
        summary["gain_ssl_minus_random_mean"] = per["ssl"] - band.mean(axis=1)
        verdict = decide(per["ssl"].to_numpy(), band.to_numpy())
    for col in [c for c in per if c.startswith("supervised")]:
        summary[f"{col} above band max"] = per[col] > band.max(axis=1)
    summary = summary.reset_index()
    summary.insert(0, "source", source)
    return summary, verdict


def load_cases(manifest: str | os.PathLike[str]) -> tuple[list[Case], list[Case], list[str], list[str]]:
    """(labeled = the manifest's "training", held_out = its "validation", their image names), each case
    (image HU (X, Y, Z) float32, label (X, Y, Z) int64) in RAS, unscaled. Errors name the file."""
    steps = Compose([LoadImageNamed(keys=["image", "label"], image_only=True),
                     EnsureChannelFirstd(keys=["image", "label"]),
                     Orientationd(keys=["image", "label"], axcodes="RAS")])
    out = []
    for split in ("training", "validation"):
        cases, names = [], []
        for e in resolve_entries(manifest, key=split):
            d = steps({"image": str(e["image"]), "label": str(e["label"])})
            img, lab = np.asarray(d["image"][0], np.float32), np.rint(np.asarray(d["label"][0])).astype(np.int64)
            if img.shape != lab.shape:
                raise ValueError(f"{e['label']}: label grid {lab.shape} differs from its image's {img.shape}")
            cases.append((img, lab))
            names.append(Path(e["image"]).name.split(".")[0])
        out += [cases, names]
    return out[0], out[2], out[1], out[3]


@dataclasses.dataclass
class DenseProbeConfig(Config):
    manifest: str = ""            # labeled decathlon JSON: readouts trained on each "training" case, scored on
                                  # "validation" (required)
    ssl_checkpoint: str = ""      # SSL encoder: pretraining's checkpoints/last.pt or an exported model_swinvit.pt
                                  # ("" = controls only)
    supervised: list[str] = dataclasses.field(default_factory=list)  # fine-tuned model.pt files: the positive control
    n_seeds: int = 5              # random-init seeds 0..n-1 (the band); the SSL arm shares each seed's random blocks
    source: str = "encoder"       # encoder (after Swin UNETR's encoder blocks, as its decoder reads them) | swinvit
    also_sources: list[str] = dataclasses.field(default_factory=list)  # more sources to report beside it (no verdict)
    feature_size: int = 12        # feature size of the random encoders when no SSL checkpoint sets it
    per_class: int = 1000         # training voxels per class (class-balanced subsample of the labeled case)
    max_iter: int = 100           # L-BFGS iterations of each readout
    csv: str = ""                 # write the tidy table here ("" = do not write)
    summary: str = ""             # write the per-labeled-case summary here ("" = print only)
    verdict: str = ""             # write the rule's verdict here as JSON (helps, gain, ci, beats_every_seed, text)


def check_config(cfg: DenseProbeConfig) -> DenseProbeConfig:
    """``cfg`` with its input files present and its values in range, else ValueError / FileNotFoundError (one line
    naming the file or value)."""
    if not cfg.manifest:
        raise ValueError("--manifest is required")
    for what, path in [("manifest", cfg.manifest), ("ssl-checkpoint", cfg.ssl_checkpoint)] + \
            [("supervised", p) for p in cfg.supervised]:
        if path and not Path(path).is_file():
            raise FileNotFoundError(f"{path}: --{what} file not found")
    if not {cfg.source, *cfg.also_sources} <= {"encoder", "swinvit"} or cfg.n_seeds < 2 or cfg.per_class < 1:
        raise ValueError(f"source={cfg.source!r} must be encoder or swinvit, n_seeds={cfg.n_seeds} >= 2, "
                         f"per_class={cfg.per_class} >= 1")
    return cfg


def run(cfg: DenseProbeConfig, say=print) -> tuple[pd.DataFrame, pd.DataFrame, Verdict | None]:
    """E1 as configured: checked (:func:`check_config`), run on the manifest's cases, the tidy table written to
    ``cfg.csv``, the summary to ``cfg.summary`` and the verdict (JSON) to ``cfg.verdict`` where given."""
    check_config(cfg)
    labeled, held, _, held_names = load_cases(cfg.manifest)
    table, summary, verdict = run_dense_probe(
        labeled, held, ssl_checkpoint=cfg.ssl_checkpoint,
        supervised=[str(Path(p).absolute()) for p in cfg.supervised], n_seeds=cfg.n_seeds, source=cfg.source,
        also_sources=cfg.also_sources, feature_size=cfg.feature_size, per_class=cfg.per_class,
        max_iter=cfg.max_iter, held_names=held_names, say=say)
    if cfg.csv:
        atomic_write_text(table.round(4).to_csv(index=False), cfg.csv)
    if cfg.summary:
        atomic_write_text(summary.round(4).to_csv(index=False), cfg.summary)
    if cfg.verdict and verdict is not None:
        atomic_write_text(json.dumps(dataclasses.asdict(verdict), indent=2), cfg.verdict)
    return table, summary, verdict


# The sweep verb (python -m swinunetr_lib.notebooks sweep swinunetr_lib.experiments.dense_probe --grid ... --out ...)
SWEEP_CONFIG = DenseProbeConfig
SWEEP_OUTPUTS = {"csv": "dense_probe.csv", "summary": "dense_probe_summary.csv",  # in each run's folder
                 "verdict": "dense_probe_verdict.json"}


def sweep_config(params: dict) -> DenseProbeConfig:
    """One sweep point's config: paths relative to the repository root (as a notebook's), values checked."""
    cfg = DenseProbeConfig.from_dict(params)
    cfg.manifest, cfg.ssl_checkpoint = (str(resolve_path(p)) if p else "" for p in (cfg.manifest, cfg.ssl_checkpoint))
    cfg.supervised = [str(resolve_path(p)) for p in cfg.supervised]
    return check_config(cfg)


def sweep_results(table: pd.DataFrame, verdict: Verdict | None, source: str) -> dict[str, float | bool]:
    """The scalars a sweep records: the verdict's gain, its 95 % CI, whether SSL beats every seed and helps, and
    each encoder's mean Dice over labeled and held-out cases at ``source`` (``mean_dice_<encoder>``)."""
    m = table[(table.held_out_case == "mean") & (table.organ == "mean") & table.source.isin([source, ""])]
    out: dict[str, float | bool] = {}
    if verdict is not None:
        out.update(gain=verdict.gain, ci_low=verdict.ci[0], ci_high=verdict.ci[1],
                   beats_every_seed=verdict.beats_every_seed, helps=verdict.helps)
    for encoder, dice in m.groupby("encoder", sort=False).dice.mean().items():
        out["mean_dice_" + re.sub(r"[^\w+]+", "_", str(encoder))] = float(dice)
    return out


def run_for_sweep(params: dict) -> dict[str, float | bool]:
    """One run of a sweep: :func:`run` on the point's parameters, its scalars (:func:`sweep_results`) returned."""
    cfg = sweep_config(params)
    table, _, verdict = run(cfg, say=lambda m: print(m, flush=True))
    return sweep_results(table, verdict, cfg.source)


def main(argv: Sequence[str] | None = None) -> int:
    prog = "python -m swinunetr_lib.experiments.dense_probe"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    DenseProbeConfig.add_arguments(parser)
    args = absolute_from_cwd(parser.parse_args(argv), "manifest", "ssl_checkpoint", "csv", "summary", "verdict")

    def body() -> int:
        _, summary, verdict = run(DenseProbeConfig.from_args(args), say=lambda m: print(m, flush=True))
        print(summary.round(3).to_string(index=False))
        if verdict is not None:
            print(verdict.text)
        return 0

    return run_cli(prog, body)


if __name__ == "__main__":
    raise SystemExit(main())
