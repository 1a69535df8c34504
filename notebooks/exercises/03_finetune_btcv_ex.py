# %% [markdown]
# **Generated file, do not edit:** the exercise version of `notebooks/03_finetune_btcv.py`, written by `python -m swinunetr_lib.notebooks.exercises generate`.
# Edit `notebooks/03_finetune_btcv.py` (cells tagged `exercise` / `solution`) and regenerate. The worked solutions are in
# `notebooks/03_finetune_btcv.ipynb`, the answers for instructors in `docs/workshop_answers.md`.

# %% [markdown]
# # 03 · Fine-tuning Swin UNETR for 13-organ segmentation (BTCV labels) (exercises)
#
# **Goal.** Fine-tune MONAI's Swin UNETR on labeled abdominal CT with the 13 BTCV organs (Tang et al.,
# CVPR 2022, Sec. 4.1), starting either from scratch or from the encoder pretrained in notebook 02, and
# measure per-organ [Dice](../../docs/glossary.md#dice) and 95 % Hausdorff distance ([HD95](../../docs/glossary.md#hd95)) on
# held-out cases **on their [original voxel grid](../../docs/glossary.md#original-grid)**
# (the preprocessing is inverted). We first compute both metrics by hand on a small 2D example, and read
# every score against an all-background prediction. The data is the demo cohort: synthetic phantoms (not
# patient data) plus the real example CT whose TotalSegmentator labels were remapped to BTCV ids. Training
# uses the library's one loop (`swinunetr_lib.train.loop.fit`, via `swinunetr_lib.finetune.run.finetune`):
# [DiceCE](../../docs/glossary.md#dicece) loss on [label-balanced crops](../../docs/glossary.md#label-balanced-crops), AdamW
# with warm-up + cosine decay, [sliding-window](../../docs/glossary.md#sliding-window) validation (overlap 0.5,
# Gaussian) and the best
# checkpoint by mean Dice. Notebook 06 runs this notebook many times to measure label efficiency.
#
# **Kind:** tutorial, with three exercises (each starts with a written prediction; the workshop version without
# the solutions is `notebooks/exercises/03_finetune_btcv_ex.ipynb`). Terms: [glossary](../../docs/glossary.md).
# **Runtime:** the defaults below (feature size 48, 4.5 mm, 20 steps, fp32) ~4.5 min on 2 CPU cores (271 s measured on
# a 2-core AVX2 machine: ~7.5 s per step plus preprocessing, two validations and the evaluation; about half on a
# CPU with AVX512; more when the cores are shared), under 1 min on one GPU: enough to see the largest organs appear,
# not to segment them all. Smoke parameters ~1-2 min; demo parameters (360 steps) ~17 min on 2 CPU cores, ~1 min
# on one GPU. When the instructor's finished run is installed
# (`runs_dir()/precomputed/finetune_btcv/<run name>`), its curves, scores and picture are shown beside yours.
# With `precision = "bf16"` steps are ~27 % faster on CPUs with AMX or AVX512-BF16 (fit keeps the few
# convolutions that oneDNN's bf16 gets wrong on AVX512-BF16 CPUs in fp32; issue #10). The paper fine-tunes
# at 1.5 x 1.5 x 2 mm, ROI 96³, feature size 48 for far longer; the demo uses a coarse 4.5 mm grid and
# 64 x 64 x 32 crops so that a CPU finds most of the 13 organs in minutes; the thinnest, a few voxels across at
# 4.5 mm, may be missed altogether (the demo run misses the esophagus in every held-out case).

# %%
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from monai.metrics import DiceMetric, HausdorffDistanceMetric

from swinunetr_lib.experiments.baselines import add_baselines, all_background_dice
from swinunetr_lib.experiments.finetune_run import (
    init_feature_size_warning,
    notebook_config,
    results_record,
    sweep_results,
    write_results,
)
from swinunetr_lib.finetune.run import finetune, split_entries
from swinunetr_lib.infer.evaluation import evaluate, load_label, summarize
from swinunetr_lib.notebooks.precomputed import find_precomputed
from swinunetr_lib.notebooks.prediction import check_prediction
from swinunetr_lib.paths import resolve_path, runs_dir
from swinunetr_lib.utils.results import record
from swinunetr_lib.viz.curves import plot_learning_curves
from swinunetr_lib.viz.figures import new_figure, plot_prediction_vs_truth

# %% tags=["parameters"]
data_manifest: str = ""  # decathlon JSON ("training" + "validation" lists, or "fold" keys); empty means the demo
                         # cohort's
task: str = "demo_btcv"  # task preset (swinunetr_lib.finetune.task_presets): btcv, demo_btcv, an MSD task, ...
init: str = "scratch"  # scratch, ssl (notebook 02's encoder; the model takes its feature size), official, or auto (ssl
                       # if exported)
pretrained: str = ""  # encoder checkpoint for ssl/official; empty means runs_dir()/ssl_pretraining/model_swinvit.pt
labeled_fraction: float = 1.0  # fraction of the training list used (nested subsets; notebook 06 varies it)
spacing: list[float] = [4.5, 4.5, 4.5]  # target voxel spacing in mm (paper: 1.5 x 1.5 x 2.0)
roi_size: list[int] = [64, 64, 32]  # training crop / sliding window size, each divisible by 32 (paper: 96^3)
feature_size: int = 48  # Swin UNETR embedding size (paper: 48); divisible by 12; 12 learns several times slower
num_samples: int = 1  # label-balanced crops per volume per step (official: 4)
batch_size: int = 1  # volumes per step
max_steps: int = 20  # optimizer steps (the demo profile, ci/params/demo, trains 360)
val_interval: int = 10  # steps between sliding-window validations
lr: float = 1e-3  # AdamW learning rate (official BTCV fine-tuning: 1e-4, for far longer runs)
warmup_steps: int = 4  # linear warm-up steps before the cosine decay
seed: int = 0  # seed for the labeled subset, data order, augmentation and initialisation
device: str = "auto"  # "auto" (CUDA if present), "cpu" or "cuda"
precision: str = "auto"  # "auto" (bf16/fp16 on GPU, fp32 on CPU), "bf16" (fast on CPUs with AMX / AVX512-BF16), "fp32"
run_name: str = ""  # sub-folder of runs_dir()/finetune_btcv; empty means <init>_frac<fraction>_seed<seed>
results_json: str = ""  # where to write the final metrics as JSON; empty means <run_dir>/results.json
show_precomputed: bool = True  # also show the instructor's finished run from runs_dir()/precomputed/finetune_btcv/<run
                               # name> when it is there

# %% [markdown]
# ## Dice and HD95 on a small 2D example
# Two masks: the ground truth G, a disc, and a prediction P, the same disc moved 2 pixels to the right.
#
# - **Dice** = 2 |P ∩ G| / (|P| + |G|): the overlap, from 0 (disjoint) to 1 (identical). It counts voxels, so
#   a small organ loses much of its Dice to an error of one voxel along its border.
# - **HD95**: take the border pixels of each mask; for every border pixel of P the distance to the nearest
#   border pixel of G, and the other way round; the 95th percentile of each list, and the larger of the two.
#   It measures *how far* the borders are apart (in pixels here, in mm on a scan), ignoring the worst 5 %.
#
# Below, both by hand in plain torch and checked against MONAI's `DiceMetric` and
# `HausdorffDistanceMetric(percentile=95)`, the ones the evaluation uses. *Look at:* the two borders (blue
# and red) are 2 pixels apart on the left and right, and cross at the top and bottom.

# %%
def border(m: torch.Tensor) -> torch.Tensor:
    """Pixels of mask m (H, W) with a 4-neighbour outside it (MONAI's edges: m XOR eroded m)."""
    p = torch.nn.functional.pad(m, (1, 1, 1, 1))
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~inner


def dice_hd95(pred: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """Dice and HD95 (pixels) by hand, each checked against MONAI on the same masks (H, W) bool."""
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    bp, bt = border(pred).nonzero().float(), border(truth).nonzero().float()
    d = torch.cdist(bp, bt)                                      # (border of pred) x (border of truth)
    hd95 = torch.maximum(d.min(dim=1).values.quantile(0.95), d.min(dim=0).values.quantile(0.95))
    p1, t1 = (torch.stack([~m, m])[None].float() for m in (pred, truth))   # one-hot (1, 2, H, W)
    torch.testing.assert_close(dice, DiceMetric(include_background=False)(p1, t1)[0, 0])
    with warnings.catch_warnings():  # MONAI 1.6 warns about an argument it passes itself
        warnings.simplefilter("ignore", FutureWarning)
        monai_hd95 = HausdorffDistanceMetric(include_background=False, percentile=95)(p1, t1)[0, 0]
    torch.testing.assert_close(hd95, monai_hd95)
    return float(dice), float(hd95)

# %%
yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
gt = (yy - 20) ** 2 + (xx - 20) ** 2 <= 8 ** 2                  # a disc of radius 8 pixels
pred = gt.roll(2, dims=1)                                       # the same disc, 2 pixels to the right
print("Dice {:.3f}, HD95 {:.2f} pixels (by hand = MONAI)".format(*dice_hd95(pred, gt)))

# %%
rgb = torch.ones(40, 40, 3)                                    # white background
rgb[gt & pred], rgb[gt & ~pred] = torch.tensor([0.8, 0.8, 0.8]), torch.tensor([0.7, 0.8, 1.0])
rgb[pred & ~gt] = torch.tensor([1.0, 0.75, 0.75])
rgb[border(gt)], rgb[border(pred)] = torch.tensor([0.1, 0.3, 1.0]), torch.tensor([0.9, 0.1, 0.1])
rgb[border(gt) & border(pred)] = torch.tensor([0.5, 0.1, 0.6])
fig = new_figure((4, 4))
ax = fig.subplots()
ax.imshow(rgb[8:33, 8:33], interpolation="nearest")
ax.set_title("border of G blue, of P red (both: purple);\nG only light blue, P only pink, overlap grey", fontsize=8)
ax.set_axis_off()
fig

# %% [markdown]
# **The baseline.** A prediction that is background everywhere has Dice 0 for every organ present (and its
# HD95 is undefined: it has no border), whatever the image; any score is read against that.

# %%
empty = torch.zeros_like(gt)
print(f"all-background prediction: Dice {float(2 * (empty & gt).sum() / (empty.sum() + gt.sum())):.1f}; "
      f"the library's baseline on the same mask: {float(all_background_dice(gt[..., None].long(), 2)[0, 0]):.1f}")

# %% [markdown] tags=["exercise"]
# **Exercise 1 (change, 5 min).** **Predict** the Dice and the HD95 when the prediction is shifted by 4 pixels
# instead of 2 (does Dice halve? does HD95 double?) and write both into `prediction`; then **change** the shift:
# compute them with `dice_hd95` for shifts 0 to 6.

# %% tags=["prediction", "stub"]
# Exercise 1: your prediction, written before running anything below
prediction = None  # e.g. {"Dice": 0.5, "HD95": 3.0}

# %% tags=["stub"]
# Exercise 1: your code here
# complete: replace the two NaN by dice_hd95(gt.roll(s, dims=1), gt), the disc shifted by s pixels
shifts = pd.DataFrame([(s, float("nan"), float("nan")) for s in range(7)],
                      columns=["shift (pixels)", "Dice", "HD95 (pixels)"]).set_index("shift (pixels)")
check_prediction(prediction, {"Dice": shifts.loc[4, "Dice"], "HD95": shifts.loc[4, "HD95 (pixels)"]},
                 what="shift 4")
shifts.round(3)

# %% [markdown] tags=["stub"]
# *Exercise 1: your answer here.*

# %% [markdown] tags=["exercise"]
# **Exercise 2 (predict, 5 min).** Add one stray pixel to the perfect prediction, far from the disc (at row 2,
# column 2). **Predict** Dice, HD95 and the plain (maximum) Hausdorff distance, `HausdorffDistanceMetric(percentile=
# None)`, and write them into `prediction` before computing them.

# %% tags=["prediction", "stub"]
# Exercise 2: your prediction, written before running anything below
prediction = None  # e.g. {"Dice": 0.9, "HD95": 10.0, "max Hausdorff": 10.0}

# %% tags=["stub"]
# Exercise 2: your code here
stray = gt.clone()
stray[2, 2] = True  # one false-positive pixel far from the disc
# complete: dice_hd95(stray, gt), and HausdorffDistanceMetric(include_background=False) on the one-hot
# masks, built as in dice_hd95
dice_stray, hd95_stray, hd_max = float("nan"), float("nan"), float("nan")
check_prediction(prediction, {"Dice": dice_stray, "HD95": hd95_stray, "max Hausdorff": hd_max},
                 what="one stray pixel")

# %% [markdown] tags=["stub"]
# *Exercise 2: your answer here.*

# %% [markdown]
# ## The data
# `notebook_config` turns the parameters into the run's settings (the same function runs a sweep without
# Jupyter): without a manifest it uses the demo cohort (built once by notebook 01, or here), it resolves `init`
# to the encoder file, and names the run folder. Paths in a manifest are relative to its folder. Validation is the
# manifest's `validation` list (or fold 0 of a k-fold manifest); `labeled_fraction` keeps a nested, seeded subset of the
# training list.

# %% tags=["precomputed"]
cfg = notebook_config(data_manifest=data_manifest, task=task, init=init, pretrained=pretrained,
                      labeled_fraction=labeled_fraction, spacing=spacing, roi_size=roi_size, feature_size=feature_size,
                      num_samples=num_samples, batch_size=batch_size, max_steps=max_steps, val_interval=val_interval,
                      lr=lr, warmup_steps=warmup_steps, seed=seed, device=device, precision=precision,
                      run_name=run_name)
init_kind, run_dir = cfg.init, Path(cfg.run_dir)
train_entries, val_entries = split_entries(cfg)
pd.DataFrame({"cases": [len(train_entries), len(val_entries)]}, index=["training (used)", "validation"])

# %% [markdown]
# ## Three choices of the recipe, and why
# - **DiceCE loss** (Dice + cross-entropy, paper Sec. 4.1). Cross-entropy is a per-voxel average, so with a
#   crop that is mostly background a network scores well by predicting background everywhere, and a small
#   organ (the adrenal glands, the esophagus) weighs almost nothing. The Dice term is computed per class and
#   averaged over the classes: each organ counts the same whatever its size. Dice alone has jumpy gradients
#   while an organ is still nearly absent; the cross-entropy term keeps every voxel's gradient smooth.
# - **Label-balanced crops** (MONAI's `RandCropByPosNegLabeld`, as many crops centred on an organ voxel as on
#   a background voxel). A random 64 x 64 x 32 crop of an abdomen often holds no organ, or only the liver: the
#   model would see the small organs rarely. Centring half the crops on labeled voxels shows organs every step;
#   the other half keeps it from calling everything an organ.
# - **Gaussian-weighted sliding windows** (overlap 0.5, as the paper). A whole CT does not fit the model's input
#   size, so inference tiles it with `roi_size` windows, each overlapping its neighbours by half. A window sees
#   little context near its borders and predicts worst there; blending the overlapping predictions with a
#   Gaussian weight (high in the window's centre, low at its edges) lets the well-placed window decide, and hides
#   the seams a plain average leaves.
#
# *Look at* the line below: with `init = "ssl"` the model takes the pretrained encoder's feature size, and the
# library says loudly when that differs from `feature_size` (the run is then a different model, not comparable
# with the default).

# %%
size_warning = init_feature_size_warning(cfg)
print(size_warning or f"init {init_kind}: feature_size {cfg.feature_size} as asked; sliding windows "
      f"{cfg.roi_size} with overlap {cfg.overlap}, Gaussian blending; {cfg.num_samples} label-balanced crop(s) "
      "per volume per step")

# %% [markdown]
# ## Fine-tuning
# `finetune` preprocesses every case once (RAS, resample to `spacing`, crop the body, HU [-175, 250] →
# [0, 1]), then trains on random label-balanced crops with intensity shifts (the paper's BTCV preset also
# flips and turns them; the demo preset does not, since a lateral flip swaps left and right organs).

# %%
result = finetune(cfg)
print(f"init {init_kind}: {result.n_train} training cases, {result.fit.step} steps in {result.seconds / 60:.1f} min; "
      f"best validation mean Dice {result.best_mean_dice:.3f}")

# %% [markdown]
# ## Learning curves
# Training loss (Dice + cross-entropy) and the validation mean Dice on the resampled grid, with the
# all-background prediction's Dice (0) as its baseline. *Look at:* the loss falling and the validation Dice
# leaving 0 (with the default 20 steps it has only started).

# %%
hist = pd.DataFrame(result.fit.history)
train_rows, val_rows = hist[hist["loss"].notna()], hist[hist["val_mean_dice"].notna()]
curves = plot_learning_curves(hist, columns=["loss", "val_mean_dice"], smoothing=0.6, ncols=2)
display(add_baselines(curves, {"val_mean_dice": {"all background": 0.0}}))
val_rows.set_index("step")[["val_mean_dice"]].T

# %% [markdown] tags=["exercise"]
# **Exercise 3 (observe, 5 min).** Before the table below shows any organ's Dice: which of the 13 organs will
# score lowest, and why? Think of their sizes at the `spacing` in use (4.5 mm by default: one voxel is 91 mm³).
# **Predict** how strongly Dice follows organ size: the Spearman rank correlation of Dice with organ volume
# (from −1 to 1; 0: unrelated), and write it into `prediction`. The check follows the held-out case's picture.

# %% tags=["prediction", "stub"]
# Exercise 3: your prediction, written before running anything below
prediction = None  # the Spearman correlation of Dice with organ volume, e.g. 0.3

# %% [markdown]
# ## Evaluation on the original grid
# The best checkpoint predicts each held-out case; MONAI's `Invertd` undoes the crop, resampling and
# reorientation, and Dice / HD95 (mm) are computed against the untouched label file. Organs missing from
# a case's ground truth are skipped (NaN). HD95 is undefined for an organ the model misses entirely, so it
# averages only the cases where the organ was found; `missed` counts the misses (a missed organ's Dice is 0).
# The last column is the all-background prediction's Dice on the same labels, computed, not assumed.

# %%
scores = evaluate(result.model_path, val_entries, run_dir / "eval", device=device)
table = summarize(scores)
num_classes = int(scores["class_id"].max()) + 1
background = np.nanmean(np.stack([all_background_dice(load_label(resolve_path(e["label"]))[0], num_classes)[0]
                                  for e in val_entries]), axis=0)
table["dice_all_background"] = [*background, np.nanmean(background)]
table.round(3)

# %% [markdown]
# ## One held-out case
# Ground truth, prediction and the errors on the axial slice with the most foreground. *Look at:* which
# organs are found at all, and where the errors sit (borders, or whole organs).

# %%
case = val_entries[0]
case_name = resolve_path(case["image"]).name.split(".nii")[0]
pred_path = run_dir / "eval" / "predictions" / f"{case_name}_pred.nii.gz"
ct, pred, truth = (nib.as_closest_canonical(nib.load(p)) for p in (case["image"], pred_path, case["label"]))  # RAS
plot_prediction_vs_truth(ct.get_fdata(), pred.get_fdata(), truth.get_fdata(), spacing=ct.header.get_zooms()[:3])

# %% [markdown] tags=["exercise"]
# **Exercise 3, check.** **Tabulate** each organ's Dice beside its size: its volume in mL in the held-out labels
# and how many voxels that is on the training grid; compare the correlation with your prediction, and the lowest
# organs with the ones you named.

# %% tags=["stub"]
# Exercise 3: your code here
organs = table.drop("mean")[["dice"]].copy()
# complete: each organ's mean volume (mL) in the held-out labels: scores["gt_voxels"] times each case's
# voxel volume in mL (nib.load(...).header.get_zooms()), averaged per organ (scores["class"])
organs["ml"] = float("nan")
check_prediction(prediction, organs["dice"].corr(organs["ml"], method="spearman"),
                 what="Spearman(Dice, volume)")
organs.sort_values("dice").round(3)

# %% [markdown] tags=["stub"]
# *Exercise 3: your answer here.*

# %% [markdown]
# ## Results for notebook 06
# > **⏭ Skip if behind**: bookkeeping for sweeps; run it and move on.
#
# One JSON with the settings and the numbers, so a parameter sweep can collect them.

# %%
results = results_record(cfg, result, table)
write_results(results, cfg, results_json)
for name, value in sweep_results(results).items():  # the same numbers into a sweep's results.json
    record(name, value)
pd.Series({k: v for k, v in results.items() if k != "dice_per_class"}).to_frame("value")

# %% [markdown]
# ## The instructor's precomputed run
# A short run shows the mechanics; the instructor's finished run with the same run name (if installed in
# `runs_dir()/precomputed/finetune_btcv/`, e.g. the demo's 360 steps) shows where they lead: its settings,
# its per-organ scores beside this run's, its learning curves and the same held-out case.

# %% tags=["precomputed"]
pre = None
if show_precomputed:
    name = f"finetune_btcv/{run_dir.name}"
    pre = find_precomputed(name)
    print(f"instructor's precomputed run: {pre}" if pre else
          f"no precomputed run in {runs_dir() / 'precomputed' / name}: only this notebook's run is shown")
pre_results = json.loads((pre / "results.json").read_text()) if pre else {}
pre_meta = json.loads((pre / "finetune_meta.json").read_text()) if pre else {}
pd.Series({**{k: pre_meta.get(k) for k in ("spacing", "roi_size", "feature_size")},
           **{k: v for k, v in pre_results.items() if k not in ("dice_per_class", "run_dir")}},
          name="instructor's precomputed run").astype(str).to_frame() if pre else None

# %% [markdown]
# Its learning curves and its prediction of the same held-out case as above:

# %% tags=["precomputed"]
if pre:
    fig = plot_learning_curves(pd.read_csv(pre / "metrics.csv"), columns=["loss", "val_mean_dice"], smoothing=0.6,
                               ncols=2)
    fig.suptitle(f"instructor's precomputed run ({pre_results.get('steps')} steps)", fontsize=10)
    display(add_baselines(fig, {"val_mean_dice": {"all background": 0.0}}))
    pre_case = val_entries[0]
    pre_case_name = resolve_path(pre_case["image"]).name.split(".nii")[0]
    pre_pred = pre / "eval" / "predictions" / f"{pre_case_name}_pred.nii.gz"
    if pre_pred.is_file():
        pre_ct, pre_truth = (nib.as_closest_canonical(nib.load(pre_case[k])) for k in ("image", "label"))  # RAS
        fig = plot_prediction_vs_truth(pre_ct.get_fdata(), nib.as_closest_canonical(nib.load(pre_pred)).get_fdata(),
                                       pre_truth.get_fdata(), spacing=pre_ct.header.get_zooms()[:3])
        fig.suptitle(f"{pre_case_name}, predicted by the instructor's precomputed run", fontsize=10)
        display(fig)

# %% [markdown]
# *Look at:* which organs the longer run gets right that this one does not; the all-background column is
# the floor for both.

# %% tags=["precomputed"]
pre_table = pd.read_csv(pre / "eval" / "summary.csv", index_col=0) if pre else None
pre_table[["dice", "hd95_mm", "missed"]].round(3) if pre else None

# %%
if pre:
    both = pd.concat({"this run": table[["dice", "hd95_mm", "missed"]],
                      "instructor's precomputed run": pre_table[["dice", "hd95_mm", "missed"]]}, axis=1)
    both[("baseline", "dice_all_background")] = table["dice_all_background"]
    display(both.round(3))

# %% [markdown]
# ## The numbers of this run

# %%
low = table.drop("mean").sort_values("dice")
summary = {"steps": result.fit.step, "minutes": round(result.seconds / 60, 1),
           "mean Dice (original grid)": round(float(table.loc["mean", "dice"]), 3),
           "mean Dice, all-background baseline": round(float(table.loc["mean", "dice_all_background"]), 3),
           "mean HD95 (mm)": round(float(table.loc["mean", "hd95_mm"]), 1),
           "organ misses (cases x organs)": int(table.loc["mean", "missed"]),
           "three lowest organs": ", ".join(f"{k} {v:.2f}" for k, v in low["dice"].head(3).items())}
if pre:
    summary["instructor's run: mean Dice"] = round(float(pre_results["mean_dice"]), 3)
pd.Series(summary).astype(str).to_frame("value")

# %% [markdown] tags=["selfcheck"]
# ## Self-check
# **1.** Two organs each get a one-voxel error all along their border. Which loses more Dice: the liver or an
# adrenal gland? Which loses more HD95?
# <details><summary>Answer</summary>
#
# The adrenal gland loses far more Dice (almost all its voxels are border voxels); HD95 rises by about one voxel's
# width for both, since it measures distance, not overlap.
# </details>
#
# **2.** An organ is missed entirely in one held-out case. What are its Dice and HD95 there, and how does the table
# count it?
# <details><summary>Answer</summary>
#
# Dice 0; HD95 undefined (no predicted border), so it is left out of the HD95 average and counted in `missed`.
# Reading HD95 without the `missed` column flatters a model that misses organs.
# </details>
#
# **3.** Why are the scores computed on the original grid rather than on the 4.5 mm training grid?
# <details><summary>Answer</summary>
#
# The label file on its own grid is the ground truth; resampling the labels to 4.5 mm would already lose thin
# structures and smooth borders before the model is judged. `Invertd` maps the prediction back instead.
# </details>

# %% [markdown]
# ## Recap
# We computed Dice and HD95 by hand on a toy example, fine-tuned Swin UNETR on the BTCV-labeled cohort with
# the shared `fit` loop, kept the checkpoint with the best validation Dice, and scored it on the held-out
# cases' own voxel grid, beside the all-background baseline (the table above). The default 20 steps only
# start the organs; the demo profile's 360 steps (the instructor's run, when shown, and the table in `docs/measured.md`)
# find most of them, the large ones first, while the smallest (esophagus, adrenals) vary from run to run
# (the `missed` column counts them). Capacity matters more than step time here: at the same steps feature
# size 12 learns far less than 48 (`docs/measured.md`, "why feature 48 on a CPU").
# Next: notebook 06 compares SSL and scratch initialisations over labeled fractions (pretrain in notebook 02
# with the same `feature_size` to start from its encoder), and on a GPU the paper's settings
# (`spacing = [1.5, 1.5, 2.0]`, `roi_size = [96, 96, 96]`, `num_samples = 4`, `lr = 1e-4`, many more steps).
