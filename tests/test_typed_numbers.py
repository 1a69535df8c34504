"""Numbers typed into the documentation agree with the files they come from.

Each row of :data:`TYPED` names a file, a phrase in it with ``{}`` where numbers are typed, and where those numbers
come from: a committed results file (``docs/results/...``: a run's ``metrics.csv``, a probe's ``probe.csv``, a sweep's
``results.csv``), a computation (a chance level, a parameter count), or, for numbers of the instructor's ``make demo``
run (its files are not committed), the *Measured numbers* table (docs/measured.md), so that the guide and the answer
key cannot drift from it. A typed number must be its source rounded to the digits typed (or within the row's
tolerance, for "~" numbers). A phrase that is no longer found fails too: the text changed, so its row must be
checked again.

Prose in the notebooks that reports recorded results is rendered from the same files (f-strings into ``Markdown``),
so it has no row here; :data:`RETIRED` lists phrases that contradicted the files once and must not come back.
"""
from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd
import pytest
import scipy.stats

from swinunetr_lib.experiments.label_efficiency import load_recorded, paired_gain, summarize_runs
from swinunetr_lib.notebooks.workshop import check_model

ROOT = Path(__file__).resolve().parents[1]
SSL = ROOT / "docs" / "results" / "ssl_pretraining_phantoms"
LE = ROOT / "docs" / "results" / "label_efficiency_phantoms"
MEASURED, GUIDE, ANSWERS = "docs/measured.md", "docs/workshop.md", "docs/workshop_answers.md"
SSL_README = "docs/results/ssl_pretraining_phantoms/README.md"
LE_README = "docs/results/label_efficiency_phantoms/README.md"
P32, U64, PROG = "paper_decoder_32", "unet_decoder_64", "progressive_32_to_64"
NUMBER = r"([+\-−]?\d[\d,]*(?:\.\d+)?)"


@dataclass(frozen=True)
class Typed:
    file: str                                  # relative to the repository root
    phrase: str                                # the text around the numbers, "{}" for each number
    source: Callable[[], Sequence[float]]      # the numbers, in order, from the files they come from
    tol: float | None = None                   # None: half a unit of the last digit typed


# ------------------------------------------------------------------------------------------------ sources
@cache
def metrics(run: str) -> pd.DataFrame:
    return pd.read_csv(SSL / run / "metrics.csv")


def first20(run: str, col: str) -> float:
    return float(metrics(run)[col].head(20).mean())


def last20(run: str, col: str) -> float:
    return float(metrics(run)[col].tail(20).mean())


def minutes(run: str) -> float:
    return float(metrics(run)["sec_per_step"].sum() / 60)


def median_step(run: str) -> float:
    return float(metrics(run)["sec_per_step"].median())


@cache
def probe_table(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "probe.csv").set_index("encoder")


def probe(run: str, col: str, encoder: str = "ssl") -> float:
    return float(probe_table(SSL / run).loc[encoder, col])


def le_probe(col: str, encoder: str = "ssl") -> float:
    return float(probe_table(LE).loc[encoder, col])


@cache
def gain() -> pd.DataFrame:
    return paired_gain(load_recorded().results).set_index("setting")


@cache
def le_summary() -> pd.DataFrame:
    return summarize_runs(load_recorded().results).set_index(["init", "labeled_fraction"])


def le_mean(init: str, fraction: float) -> float:
    return float(le_summary().loc[(init, fraction), "mean"])


def gain_row(setting: str) -> list[float]:
    g = gain().loc[setting]
    return [g["mean"], g["ci_low"], g["ci_high"]]


def typed_in(file: str, phrase: str) -> Callable[[], list[float]]:
    """The numbers typed in another document (for the demo run, whose files are not committed: docs/measured.md's
    table)."""
    return lambda: [float(n) for n in find_numbers(file, phrase)[1]]


def pick(values: Sequence[float], *index: int) -> list[float]:
    return [values[i] for i in index]


def demo_btcv() -> list[float]:
    """docs/measured.md's row of the demo's notebook 03 run: mean Dice, the 13 organs' Dice, HD95."""
    return typed_in(MEASURED, "**mean Dice {}** on the original grid of the 3 held-out phantoms (" + _DEMO_BTCV)()


def encoder_parameters(feature_size: int) -> int:
    from monai.networks.nets import SwinUNETR  # noqa: PLC0415 — only this row builds a model

    return sum(p.numel() for p in SwinUNETR(in_channels=1, out_channels=14, feature_size=feature_size)
               .swinViT.parameters())


def per_run(col: str, runs: Sequence[str] = (P32, U64, PROG), encoder: str = "ssl") -> list[float]:
    return [probe(r, col, encoder) for r in runs]


def first_last(col: str, runs: Sequence[str] = (P32, U64, PROG)) -> list[float]:
    return [v for r in runs for v in (first20(r, col), last20(r, col))]


# ------------------------------------------------------------------------------------------------ the table
_DEMO_BTCV = ("liver {}, kidneys {} / {}, stomach {}, aorta {}, spleen {}, gallbladder {}, IVC {}, adrenals {} / {}, "
              "pancreas {}, portal vein {}, esophagus {} — missed in all 3 cases), HD95 {} mm")
TYPED: list[Typed] = [
    # docs/results/ssl_pretraining_phantoms/README.md: the three recorded pretraining runs
    Typed(SSL_README, "| steps, time (from `metrics.csv`) | 300 steps, {} s/step (median), {} min | 450 steps, {} "
          "s/step (median), {} min",
          lambda: [median_step(P32), minutes(P32), median_step(U64), minutes(U64)]),
    Typed(SSL_README, "150 steps, {} s/step (median), {} min ({} + {} min with its first stage)",
          lambda: [median_step(PROG), minutes(PROG), minutes(P32), minutes(PROG)]),
    Typed(SSL_README, "| rotation loss, mean of the first → last 20 steps | {} → {} | {} → {} | **{} → {}** | "
          "chance ln 4 = {} |", lambda: [*first_last("rotation"), math.log(4)]),
    Typed(SSL_README, "| contrastive loss, mean of the first → last 20 steps | {} → {} | {} → {} | {} → {} | "
          "chance ln 15 = {} / ln 3 = {} |", lambda: [*first_last("contrastive"), math.log(15), math.log(3)]),
    Typed(SSL_README, "| reconstruction L1 (all voxels), mean of the first → last 20 steps | {} → {} | {} → {} | "
          "{} → {} | trivial fill {} / {}, constant {} / {} |",
          lambda: [*first_last("reconstruction"), *per_run("trivial_fill_l1_all", (P32, U64)),
                   *per_run("constant_l1_all", (P32, U64))]),
    Typed(SSL_README, "| rotation accuracy, held-out organ crops (32³ / 64³) | {} | {} | {} | chance {}; random init "
          "{} / {} |", lambda: [*per_run("rotation_accuracy"), 0.25,
                                *per_run("rotation_accuracy", (P32, U64), "random init")]),
    Typed(SSL_README, "| contrastive loss, held-out organ crops, 2 views each | {} | {} (= chance: collapsed) | {} | "
          "chance ln(2N − 1) = {} / {}; random init {} / {} |",
          lambda: [*per_run("contrastive_loss"), *per_run("contrastive_loss_chance", (P32, U64)),
                   *per_run("contrastive_loss", (P32, U64), "random init")]),
    Typed(SSL_README, "| contrastive retrieval: partner ranked first | {} | {} | {} | chance 1/(2N − 1) = {} / {}; "
          "random init {} / {} |", lambda: [*per_run("contrastive_top1"), *per_run("contrastive_chance", (P32, U64)),
                                            *per_run("contrastive_top1", (P32, U64), "random init")]),
    Typed(SSL_README, "| L1 inside the cut-out boxes, held-out views | {} | **{}** | {} | trivial fill {} / {}; "
          "random init {} / {} |", lambda: [*per_run("inpainting_l1"), *per_run("trivial_fill_l1", (P32, U64)),
                                            *per_run("inpainting_l1", (P32, U64), "random init")]),
    Typed(SSL_README, "| organ probe, all stages (deepest alone) | {} ({}) | {} ({}) | {} ({}) | random init {} ({}) / "
          "{} ({}); chance {} |",
          lambda: [v for r in (P32, U64, PROG) for v in (probe(r, "organ_accuracy"),
                                                         probe(r, "organ_accuracy_last_stage"))]
          + [v for r in (P32, U64) for v in (probe(r, "organ_accuracy", "random init"),
                                             probe(r, "organ_accuracy_last_stage", "random init"))]
          + [probe(P32, "organ_chance")]),
    Typed(SSL_README, "the rotation head names {} of the held-out crops' rotations (chance {} %) and the contrastive "
          "loss ends {} below its chance level", lambda: [probe(P32, "rotation_accuracy"), 25,
                                                         math.log(15) - last20(P32, "contrastive")]),
    Typed(SSL_README, "L1 inside the boxes {} against {} for the trivial fill, and over the whole (centred 32³) "
          "held-out view {}, far above the {}",
          lambda: [probe(P32, "inpainting_l1"), probe(P32, "trivial_fill_l1"), probe(P32, "inpainting_l1_all"),
                   probe(P32, "trivial_fill_l1_all")]),
    Typed(SSL_README, "(whole-volume L1 {} on held-out views, below the {} of copying them",
          lambda: [probe(U64, "inpainting_l1_all"), probe(U64, "trivial_fill_l1_all")]),
    Typed(SSL_README, "inside the boxes the L1 is {}, {} × lower than the trivial fill's {}",
          lambda: [probe(U64, "inpainting_l1"), probe(U64, "trivial_fill_l1") / probe(U64, "inpainting_l1"),
                   probe(U64, "trivial_fill_l1")]),
    Typed(SSL_README, "Here the rotation loss ends at {}, the rotation head answers one class ({} on held-out crops)",
          lambda: [last20(U64, "rotation"), probe(U64, "rotation_accuracy")]),
    Typed(SSL_README, "(loss {} over the first 20 steps", lambda: [first20(PROG, "rotation")]),
    Typed(SSL_README, "({} over steps 60–69), to {} over the last 20",
          lambda: [float(metrics(PROG).set_index("step").loc[60:69, "rotation"].mean()), last20(PROG, "rotation")]),
    Typed(SSL_README, "it names {} of the rotations (chance {})", lambda: [probe(PROG, "rotation_accuracy"), 0.25]),
    Typed(SSL_README, "L1 inside the boxes {} against {} for the trivial fill (the run from random weights: {} after",
          lambda: [probe(PROG, "inpainting_l1"), probe(PROG, "trivial_fill_l1"), probe(U64, "inpainting_l1")]),
    Typed(SSL_README, "the loss of `paper_decoder_32`'s embeddings is {} against {} for embeddings that carry nothing "
          "(random init {}), so its views of one crop are pulled together. Yet its partner is ranked first for {} of "
          "the views, below the {} of the random encoder",
          lambda: [probe(P32, "contrastive_loss"), probe(P32, "contrastive_loss_chance"),
                   probe(P32, "contrastive_loss", "random init"), probe(P32, "contrastive_top1"),
                   probe(P32, "contrastive_top1", "random init")]),
    Typed(SSL_README, "random features already name {}–{} % of the organs",
          lambda: [100 * min(per_run("organ_accuracy", encoder="random init")),
                   100 * max(per_run("organ_accuracy", encoder="random init"))]),
    # docs/measured.md (the README's "Measured numbers" until #30): the same runs
    Typed(MEASURED, "median {} s/step, {} min in all (its `metrics.csv`); means of the first → last 20 logged steps: "
          "rotation loss {} → {} (chance ln 4 = {}), contrastive {} → {} (chance ln 15 = {}; flat for",
          lambda: [median_step(P32), minutes(P32), first20(P32, "rotation"), last20(P32, "rotation"), math.log(4),
                   first20(P32, "contrastive"), last20(P32, "contrastive"), math.log(15)]),
    Typed(MEASURED, "(chance ln 15 = 2.708; flat for ~{} steps)",  # until the loss first drops below 2.6
          lambda: [float(metrics(P32).loc[metrics(P32)["contrastive"] < 2.6, "step"].iloc[0])], tol=10),
    Typed(MEASURED, "reconstruction L1 {} → {}; inside the cut-out boxes of held-out phantoms L1 {} vs {} for the "
          "trivial fill", lambda: [first20(P32, "reconstruction"), last20(P32, "reconstruction"),
                                   probe(P32, "inpainting_l1"), probe(P32, "trivial_fill_l1")]),
    Typed(MEASURED, "{} s/step (median; ~79 min alone, {} min as run); means of the first → last 20 logged steps: "
          "rotation loss {} → {} and contrastive at ln 3 throughout: **both at chance** (4 views per step); "
          "reconstruction L1 {} → {}. On held-out phantoms: L1 inside the boxes **{} vs {} for the trivial fill** "
          "(random init {}), all voxels {} vs {}",
          lambda: [median_step(U64), minutes(U64), first20(U64, "rotation"), last20(U64, "rotation"),
                   first20(U64, "reconstruction"), last20(U64, "reconstruction"), probe(U64, "inpainting_l1"),
                   probe(U64, "trivial_fill_l1"), probe(U64, "inpainting_l1", "random init"),
                   probe(U64, "inpainting_l1_all"), probe(U64, "trivial_fill_l1_all")]),
    Typed(MEASURED, "organ probe at 64³ {} vs {} at random init; contrastive loss on held-out crops {} = chance",
          lambda: [probe(U64, "organ_accuracy"), probe(U64, "organ_accuracy", "random init"),
                   probe(U64, "contrastive_loss")]),
    Typed(MEASURED, "{} s/step (median; {} min); means of the first → last 20 logged steps: rotation loss {} → **{}**",
          lambda: [median_step(PROG), minutes(PROG), first20(PROG, "rotation"), last20(PROG, "rotation")]),
    Typed(MEASURED, "contrastive {} → {} (chance ln 3 = {}), reconstruction L1 {} → {}. On held-out phantoms: rotation "
          "accuracy on 64³ organ crops **{}** (chance {}), L1 inside the boxes **{} vs {} for the trivial fill**",
          lambda: [first20(PROG, "contrastive"), last20(PROG, "contrastive"), math.log(3),
                   first20(PROG, "reconstruction"), last20(PROG, "reconstruction"), probe(PROG, "rotation_accuracy"),
                   0.25, probe(PROG, "inpainting_l1"), probe(PROG, "trivial_fill_l1")]),
    Typed(MEASURED, "organ probe {} vs {} at random init. Probe", lambda: [probe(PROG, "organ_accuracy"),
                                                                        probe(PROG, "organ_accuracy", "random init")]),
    Typed(MEASURED, "SSL {}, same encoder at random init {} —", lambda: [le_probe("organ_accuracy"),
                                                                      le_probe("organ_accuracy", "random init")]),
    Typed(MEASURED, "(deepest stage alone: {} vs {}), chance {}; rotation accuracy on held-out crops: SSL **{}**, "
          "random {}, chance {}.",
          lambda: [le_probe("organ_accuracy_last_stage"), le_probe("organ_accuracy_last_stage", "random init"),
                   le_probe("organ_chance"), le_probe("rotation_accuracy"),
                   le_probe("rotation_accuracy", "random init"), 0.25]),
    Typed(MEASURED, "scratch means {} / {} / {}, SSL {} / {} / {} (3 seeds each); **SSL − scratch paired by seed {} "
          "(95 % CI {} to {}) / {} ({} to {}) / {} ({} to {}); smallest detectable effect {} / {} / {}",
          lambda: [*(le_mean(i, f) for i in ("scratch", "ssl") for f in (0.25, 0.5, 1.0)),
                   *gain_row("25 % labels"), *gain_row("50 % labels"), *gain_row("100 % labels"),
                   *gain()["smallest_detectable"].iloc[:3]]),
    # docs/results/label_efficiency_phantoms/README.md
    Typed(LE_README, "**Pretraining** ({} min, median {} s/step)", lambda: [minutes(P32), median_step(P32)]),
    Typed(LE_README, "rotation loss {} → {} (chance {}), contrastive {} → {} (chance {}), reconstruction L1 {} → {}.",
          lambda: [first20(P32, "rotation"), last20(P32, "rotation"), math.log(4), first20(P32, "contrastive"),
                   last20(P32, "contrastive"), math.log(15), first20(P32, "reconstruction"),
                   last20(P32, "reconstruction")]),
    *(Typed(LE_README, f"| {n} ({int(100 * f)} %) | {{}} | {{}} | {{}} ({{}} to {{}}) | {{}} |",
            lambda f=f: [le_mean("scratch", f), le_mean("ssl", f), *gain_row(f"{int(100 * f)} % labels"),
                         gain().loc[f"{int(100 * f)} % labels", "smallest_detectable"]])
      for n, f in ((1, 0.25), (2, 0.5), (4, 1.0))),
    Typed(LE_README, "| pooled (9 pairs; the fractions share seeds) | | | {} ({} to {}) | {} |",
          lambda: [*gain_row("pooled"), gain().loc["pooled", "smallest_detectable"]]),
    Typed(LE_README, "| organ, all five stages | {} | {} | {} |",
          lambda: [le_probe("organ_accuracy"), le_probe("organ_accuracy", "random init"), le_probe("organ_chance")]),
    Typed(LE_README, "| organ, deepest stage alone | {} | {} | {} |",
          lambda: [le_probe("organ_accuracy_last_stage"), le_probe("organ_accuracy_last_stage", "random init"),
                   le_probe("organ_chance")]),
    Typed(LE_README, "| rotation accuracy | {} | {} | {} |",
          lambda: [le_probe("rotation_accuracy"), le_probe("rotation_accuracy", "random init"), 0.25]),
    # docs/workshop_answers.md
    Typed(ANSWERS, "is **{} → {}, a ratio of {}**",
          lambda: [encoder_parameters(12), encoder_parameters(48), encoder_parameters(48) / encoder_parameters(12)]),
    Typed(ANSWERS, "(48/12)² = **{}×**", lambda: [16]),
    Typed(ANSWERS, "chance **ln 3 = {}**", lambda: [math.log(3)]),
    Typed(ANSWERS, "N = 4, **ln 7 = {}**", lambda: [math.log(7)]),
    Typed(ANSWERS, "the random encoder's probe reached {} against a chance of {}",
          lambda: [le_probe("organ_accuracy", "random init"), le_probe("organ_chance")]),
    Typed(ANSWERS, "the SSL encoder scored {} with all five stages and {} with the deepest stage alone (random: {}). "
          "One held-out crop is {} points, and another draw of crops moves either number by about {} points",
          lambda: [le_probe("organ_accuracy"), le_probe("organ_accuracy_last_stage"),
                   le_probe("organ_accuracy_last_stage", "random init"), 100 / probe_table(LE)["n_test"].iloc[0],
                   100 * math.sqrt(0.78 * 0.22 / probe_table(LE)["n_test"].iloc[0])]),
    Typed(ANSWERS, "so a gap of {} points is not yet a finding. The rotation head, by contrast, learned: {} % on "
          "held-out crops, against {} %",
          lambda: [100 * (le_probe("organ_accuracy") - le_probe("organ_accuracy", "random init")),
                   100 * le_probe("rotation_accuracy"), 25]),
    Typed(ANSWERS, "SSL − scratch paired by seed is {} (95 % CI {} to {}) with one labeled phantom, {} ({} to {}) with "
          "two and {} ({} to {}) with four",
          lambda: [*gain_row("25 % labels"), *gain_row("50 % labels"), *gain_row("100 % labels")]),
    Typed(ANSWERS, "the spread between seeds (std {}–{})",
          lambda: [le_summary()["std"].min(), le_summary()["std"].max()]),
    Typed(ANSWERS, "| ln 4 = {} |", lambda: [math.log(4)]),
    Typed(ANSWERS, "ln(2N − 1): {} (N = 2), {} (N = 4)", lambda: [math.log(3), math.log(7)]),
    Typed(ANSWERS, "(360 steps; README *Measured*, and the instructor's precomputed run): liver {}, kidneys {}/{}, "
          "stomach {} … pancreas {}, portal vein {}, adrenals {}/{}",
          lambda: pick(demo_btcv(), 1, 2, 3, 4, 11, 12, 9, 10)),
    # docs/workshop.md: the demo run's numbers, as docs/measured.md's table records them
    Typed(GUIDE, "total loss {} → ~{}; reconstruction L1 over the whole sub-volume {} → {}",
          typed_in(MEASURED, "80 steps: total loss {} → ~{}, reconstruction L1 {} → {}")),
    Typed(GUIDE, "mean Dice {} on the original grid (liver {}, kidneys {}/{}, …, esophagus {}), HD95 {} mm",
          lambda: pick(demo_btcv(), 0, 1, 2, 3, 13, 14)),
    Typed(GUIDE, "| the 360-step run, mean Dice {} |",
          lambda: typed_in(MEASURED, "**mean Dice {}** on the original grid of the 3 held-out phantoms (liver")()),
    Typed(GUIDE, "held-out Dice {}, HD95 {} mm", typed_in(MEASURED, "held-out Dice {}, HD95 {} mm")),
    Typed(GUIDE, "mean Dice {} (liver {}, kidney {}, spleen {}), HD95 {} mm",
          typed_in(MEASURED, "mean Dice {} (liver {}, kidney {}, spleen {}), HD95 {} mm")),
    Typed(GUIDE, "2 tasks × 300 steps, Dice {} / {} |",
          lambda: [typed_in(MEASURED, "held-out Dice {}, HD95")()[0],
                   typed_in(MEASURED, "mean Dice {} (liver {}, kidney")()[0]]),
    Typed(GUIDE, "mean Dice ~{}–{} for all four",
          lambda: (lambda v: [min(v), max(v)])(typed_in(MEASURED, "mean Dice (original grid) scratch {} / {}, SSL {} / "
                                                                "{} in")())),
    # notebooks: prose that states a recorded number (the rest is rendered from the files)
    Typed("notebooks/06_label_efficiency.py", "against {} for SSL and {}", lambda: [le_probe("organ_accuracy"),
                                                                                  le_probe("organ_accuracy",
                                                                                           "random init")]),
    Typed("notebooks/06_label_efficiency.py", "the 95 % interval is the mean ± {} standard errors",
          lambda: [float(scipy.stats.t.ppf(0.975, 2))]),
    # docs/glossary.md
    Typed("docs/glossary.md", "(t = {} for 3 seeds)", lambda: [float(scipy.stats.t.ppf(0.975, 2))]),
    # the library
    Typed("swinunetr_lib/notebooks/workshop.py", "backward pass of Swin UNETR (feature size {}, a {}×{}×{} input)",
          lambda: [inspect.signature(check_model).parameters["feature_size"].default,
                   *inspect.signature(check_model).parameters["roi_size"].default]),
]

# phrases that once contradicted their own data: (file, phrase, why)
RETIRED = [
    ("notebooks/03_finetune_btcv.py", "learns all 13 organs", "the demo run misses the esophagus (Dice 0.00)"),
    ("notebooks/04_finetune_msd.py", "nnU-Net's per-task median spacing",
     "the presets are MONAI's DynUNet task table (swinunetr_lib.finetune.task_presets)"),
    ("notebooks/02_ssl_pretraining.py", "roughly doubles", "the answer key: about 1.5–2×"),
    ("notebooks/02_ssl_pretraining.py", "model's whole-volume L1 grows too", "the answer key: hardly changes"),
    ("notebooks/02_ssl_pretraining.py", "0.78–0.82 for all", "random init scores 0.769"),
    ("notebooks/02_ssl_pretraining.py", "~0.9 below", "metrics.csv: 1.07 below chance over the last 20 steps"),
    ("docs/workshop.md", "inpainting L1 0.375", "that is the whole-volume reconstruction loss"),
    ("docs/workshop.md", "scratch vs SSL encoder", "notebook 03 trains one initialisation per run"),
]


def find_numbers(file: str, phrase: str) -> tuple[re.Match | None, list[str]]:
    """The numbers typed where ``phrase`` (``{}`` per number; any run of spaces may be a line break, with a ``#`` in
    a .py file) occurs in ``file``."""
    parts = [re.sub(r"\\\s+|\\ ", r"[\\s#]+", re.escape(p)) for p in phrase.split("{}")]
    pattern = NUMBER.join(parts)
    m = re.search(pattern, (ROOT / file).read_text())
    return m, [g.replace("−", "-").replace(",", "") for g in m.groups()] if m else []


def _id(t: Typed) -> str:
    return f"{t.file}:{t.phrase[:40]}"


@pytest.mark.parametrize("row", TYPED, ids=[_id(t) for t in TYPED])
def test_typed_number_matches_its_source(row):
    m, typed = find_numbers(row.file, row.phrase)
    assert m is not None, f"{row.file}: phrase not found (text changed? check its numbers again): {row.phrase!r}"
    want = list(row.source())
    assert len(typed) == len(want), f"{row.file}: {len(typed)} numbers typed, {len(want)} from the source"
    wrong = []
    for text, value in zip(typed, want, strict=True):
        digits = len(text.split(".")[1]) if "." in text else 0
        tol = row.tol if row.tol is not None else 0.5 * 10 ** -digits + 1e-9
        if not abs(float(text) - float(value)) <= tol:
            wrong.append(f"typed {text}, source {value:.4g}")
    assert not wrong, f"{row.file}, {row.phrase!r}: " + "; ".join(wrong)


@pytest.mark.parametrize(("file", "phrase", "why"), RETIRED, ids=[r[1] for r in RETIRED])
def test_retired_phrase_is_gone(file, phrase, why):
    assert phrase not in (ROOT / file).read_text(), f"{file}: {phrase!r} contradicts its data ({why})"


def test_the_checker_catches_a_drifted_number(tmp_path, monkeypatch):
    """The comparison itself: a number one digit off fails, its rounding passes, a vanished phrase fails."""
    (tmp_path / "doc.md").write_text("L1 inside 0.050 against\n0.075 here; ratio 4.4 ×")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    ok = Typed("doc.md", "L1 inside {} against {} here", lambda: [0.0503, 0.0747])
    off = Typed("doc.md", "L1 inside {} against {} here", lambda: [0.0503, 0.0686])
    gone = Typed("doc.md", "L1 outside {} against {} here", lambda: [0.0503, 0.0747])
    test_typed_number_matches_its_source(ok)
    for row in (off, gone):
        with pytest.raises(AssertionError):
            test_typed_number_matches_its_source(row)
