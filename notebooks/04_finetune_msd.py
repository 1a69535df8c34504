# %% [markdown]
# # 04 · Fine-tuning on Medical Segmentation Decathlon tasks (CT and multi-channel MR)
#
# **Goal.** Show how one fine-tuning recipe covers the ten MSD tasks (Tang et al., CVPR 2022, Sec. 4.1,
# Table 2): each task preset fixes the input channels (1, 2 or 4), the label set, the target spacing and
# the intensity preset — CT is clipped to a per-task Hounsfield window ([windowing](../docs/glossary.md#windowing))
# and scaled to [0, 1], MR is [z-scored](../docs/glossary.md#z-score) per channel over its non-zero voxels. We
# fine-tune and evaluate the tasks named in `tasks`; the defaults are the demo cohort's two MSD-style phantom tasks
# (synthetic, not patient data): a CT single-organ task like Task09_Spleen and a 2-channel MR-like task like
# Task05_Prostate. With the real MSD data unpacked under `$SWINUNETR_DATA_DIR/msd/<task>/`, name those tasks instead:
# their official `dataset.json` has no validation list, so fine-tuning validates on fold 0 of 5 deterministic folds.
#
# **Kind:** how-to. **Runtime:** the defaults below (2 tasks x 20 steps, a short run that shows the loop at
# work) ~3 min on 2 CPU cores (176 s measured on a 2-core AVX2 machine, ~3 s per step), under 1 min on one GPU;
# smoke parameters ~1-2 min; demo parameters
# (`ci/params/demo`, 2 tasks x 300 steps) ~15 min on 2 CPU cores, ~1 min on one GPU. When the instructor's
# finished runs are installed (`make unpack`, into `runs_dir()/precomputed/finetune_msd/<task>`), they are
# shown at once beside yours.
#
# **In the workshop:** the presets, the exercise and the instructor's precomputed runs (~15 min); the short
# training runs (sections marked *⏭ Skip if behind*) are homework: select the heading "Fine-tune each task" and
# use Run → Run All Above Selected Cell. One exercise (predict first; the workshop version is
# `notebooks/exercises/04_finetune_msd_ex.ipynb`). Terms: [glossary](../docs/glossary.md).

# %%
import json

import nibabel as nib
import numpy as np
import pandas as pd
from IPython.display import display

from swinunetr_lib.data.cohort import build_demo_cohort
from swinunetr_lib.data.example_data import fetch_example
from swinunetr_lib.data.labels import BTCV_LABELS, build_remap, remap_labels, totalseg_class_map
from swinunetr_lib.finetune.cases import preprocess_cases
from swinunetr_lib.finetune.run import FinetuneConfig, finetune, resolve_init, split_entries
from swinunetr_lib.finetune.task_presets import get_preset, intensity_transform, msd_tasks
from swinunetr_lib.infer.evaluation import evaluate, summarize
from swinunetr_lib.notebooks.precomputed import find_precomputed
from swinunetr_lib.notebooks.prediction import check_prediction
from swinunetr_lib.paths import data_dir, resolve_path, runs_dir
from swinunetr_lib.utils.results import record
from swinunetr_lib.viz.captions import captioned
from swinunetr_lib.viz.curves import plot_learning_curves
from swinunetr_lib.viz.figures import new_figure, plot_triplanar

# %% tags=["parameters"]
tasks: list[str] = ["Task901_PhantomSpleen", "Task902_PhantomMR"]  # task presets to fine-tune, e.g. ["Task09_Spleen"]
data_manifests: list[str] = []  # one manifest per task; empty means the demo cohort (phantom tasks) or
                                # data_dir()/msd/<task>/dataset.json
init: str = "auto"  # scratch, ssl (encoder from notebook 02), official (model_swinvit.pt) or auto (ssl if exported)
pretrained: str = ""  # encoder checkpoint for ssl/official; empty means runs_dir()/ssl_pretraining/model_swinvit.pt
spacing: "Optional[list[float]]" = [4.5, 4.5, 4.5]  # target spacing in mm for every task; None means each task's preset
                                                    # spacing, an empty list the native grid
roi_size: list[int] = [64, 64, 32]  # training crop / sliding window size, each divisible by 32 (paper: 96^3)
feature_size: int = 12  # Swin UNETR embedding size (paper: 48); divisible by 12
num_samples: int = 1  # label-balanced crops per volume per step
max_steps: int = 20  # optimizer steps per task (demo: 300); a short run that shows the loop at work
val_interval: int = 10  # steps between sliding-window validations (demo: 75)
lr: float = 2e-3  # AdamW learning rate
warmup_steps: int = 4  # linear warm-up steps
seed: int = 0  # seed for data order, augmentation and initialisation
device: str = "auto"  # "auto" (CUDA if present), "cpu" or "cuda"
show_precomputed: bool = True  # show the instructor's finished runs (runs_dir()/precomputed/finetune_msd/<task>) when
                               # installed

# %% [markdown]
# ## The ten MSD task presets
# Channels and label sets come from the dataset registry (`data_manifests/registry.json`); spacings and CT
# windows are those of MONAI's DynUNet MSD pipeline (its `task_params.py`: nnU-Net-style target spacings and
# foreground 0.5-99.5 percentile windows), as `swinunetr_lib.finetune.task_presets` records them.

# %%
presets = [get_preset(t) for t in msd_tasks()]
pd.DataFrame([{"task": p.name, "modality": p.modality, "channels": ", ".join(p.channel_names),
               "classes": ", ".join(v for k, v in p.labels.items() if k), "spacing (mm)": p.spacing,
               "intensity": ("clip {:g}..{:g} HU -> [0, 1]".format(*p.window) if p.intensity == "ct_window"
                             else "z-score, non-zero")}
              for p in presets]).set_index("task")

# %% [markdown]
# ## A real MR image: why the MR presets z-score
# The phantom MR task below is synthetic; here is a real one: an abdominal MR, TotalSegmentator's test file (one
# channel, 3 mm, stored LPS and turned to RAS here), with its `total_mr` labels remapped by name to the BTCV organs.
# MR has no physical intensity scale like Hounsfield units: the same tissue gets other numbers on another scanner,
# sequence or patient, so a fixed window cannot work. The MSD MR presets z-score each channel over its non-zero
# voxels (mean 0, standard deviation 1), which the tasks with 2 or 4 channels (Task05_Prostate, Task01_BrainTumour)
# do channel by channel.

# %%
mr_nii = nib.as_closest_canonical(nib.load(fetch_example("example_mr_sm.nii.gz")))
mr = np.asarray(mr_nii.dataobj, dtype=np.float32)                                   # (X, Y, Z), scanner units
mr_labels = np.asarray(nib.as_closest_canonical(nib.load(fetch_example("example_seg_mr.nii.gz"))).dataobj)
mr_seg, mr_report = remap_labels(mr_labels, build_remap(totalseg_class_map("total_mr"), BTCV_LABELS))
mr_preset = next(p for p in presets if p.intensity == "mr_zscore")                  # an MSD MR task's preset
mr_z = np.asarray(intensity_transform(mr_preset)({"image": mr[None]})["image"])[0]   # z-scored over non-zero voxels
mr_lo, mr_hi = np.percentile(mr[mr != 0], [1, 99])
print(f"MR {mr.shape} voxels of {tuple(float(z) for z in mr_nii.header.get_zooms()[:3])} mm, "
      f"{''.join(nib.aff2axcodes(mr_nii.affine))}; values {mr.min():.0f}..{mr.max():.0f} (no unit); "
      f"z-scored ({mr_preset.name}'s normalisation): non-zero voxels mean {mr_z[mr != 0].mean():.2f}, "
      f"sd {mr_z[mr != 0].std():.2f}; {mr_report.summary()}")
captioned(plot_triplanar(mr, mr_seg, spacing=mr_nii.header.get_zooms()[:3],
                         window_preset=(float(mr_hi - mr_lo), float(mr_lo + mr_hi) / 2),
                         title="real abdominal MR (TotalSegmentator example), BTCV organs"),
          look_at="the same organs as the CT of notebook 00 (another patient), other contrast: fat is bright and "
                  "the spine's bone dark here, where CT shows bone brightest. The liver is again on the image's "
                  "left (the patient's right); the display window is the 1st-99th percentile of the non-zero "
                  "voxels, not HU.",
          alt="Axial, coronal and sagittal slices of a real abdominal MR with the BTCV organs it holds coloured "
              "over the grey image and a legend")

# %%
fig = new_figure((8, 2.8))
for ax, (values, name) in zip(fig.subplots(1, 2), [(mr, "scanner units"), (mr_z, "z-scored")], strict=True):
    ax.hist(values[mr != 0].ravel(), bins=100, color="0.3")
    ax.set(xlabel=name, ylabel="voxels", title=f"MR non-zero voxels, {name}")
captioned(fig, look_at="the shape of the histogram does not change, only its axis: z-scoring moves the mean to 0 and "
                       "the spread to 1, so a model sees the same range from every scanner. Zero voxels (outside "
                       "the body) are left out of the statistics and stay 0.",
          alt="Two histograms of the MR's non-zero voxel values: in scanner units and after z-scoring")

# %% [markdown]
# ## Where each task's data is
# The phantom tasks come with the demo cohort (built here if missing); real MSD tasks are expected as
# unpacked decathlon folders with a `dataset.json` (see `swinunetr_lib.data.registry` for downloads).

# %%
cohort = build_demo_cohort() if any(t in ("Task901_PhantomSpleen", "Task902_PhantomMR") for t in tasks) else None
manifests = {t: (resolve_path(data_manifests[i]) if data_manifests else
                 cohort.msd_manifests[t] if cohort is not None and t in cohort.msd_manifests else
                 data_dir() / "msd" / t / "dataset.json") for i, t in enumerate(tasks)}
init_kind, init_path = resolve_init(init, pretrained)
pd.DataFrame({"manifest": {t: str(m) for t, m in manifests.items()},
              "channels": {t: get_preset(t).in_channels for t in tasks}})

# %% [markdown] tags=["exercise"]
# **Exercise 1 (predict, 5 min).** The MR-like task has two channels, T1-like and T2-like, and three organs:
# liver, kidney, spleen. Z-scoring puts each channel on the same scale (mean 0, standard deviation 1 over the body),
# so a channel's value of an organ says how many standard deviations it sits above or below that channel's mean.
# **Predict** which organ stands out in the T2-like channel after z-scoring (the largest mean there), and write it
# into `prediction`; then **compute** each organ's mean in each channel on one training case, preprocessed as
# fine-tuning does it (`preprocess_cases`). Which two organs can the intensities alone hardly tell apart?

# %% tags=["solution", "prediction"]
# stub: prediction = None  # "liver", "kidney" or "spleen"
prediction = "liver"  # a worked guess: the largest organ

# %% tags=["solution"]
# stub: mr_task = "Task902_PhantomMR"
# stub: organ_means = None  # complete: preprocess_cases([first training entry of the task's manifest, with full
# stub: # paths], get_preset(mr_task))[0], then per organ (label 1, 2, 3) the mean of image[c] over label == organ
# stub: check_prediction(prediction, None if organ_means is None else organ_means["T2-like"].idxmax(),
# stub:                  what="organ that stands out in T2-like")
mr_task = "Task902_PhantomMR"
mr_preset = get_preset(mr_task)
mr_manifest = manifests.get(mr_task) or build_demo_cohort().msd_manifests[mr_task]
mr_entry = json.loads(mr_manifest.read_text())["training"][0]
mr_case = preprocess_cases([{k: str(mr_manifest.parent / mr_entry[k]) for k in ("image", "label")}], mr_preset)[0]
image, label = mr_case["image"].numpy(), mr_case["label"][0].numpy()
organ_means = pd.DataFrame({name: {mr_preset.labels[k]: float(image[c][label == k].mean()) for k in (1, 2, 3)}
                            for c, name in enumerate(mr_preset.channel_names)})
check_prediction(prediction, organ_means["T2-like"].idxmax(), what="organ that stands out in T2-like")
organ_means.round(2)

# %% [markdown] tags=["solution"]
# In the T1-like channel the three organs sit close together, all above the channel's mean; the T2-like channel
# lifts the kidney and leaves the liver and the spleen near its mean, so the kidney is told apart by the second
# channel, and the liver and the spleen, alike in both, only by position and shape. This is why the task has two
# channels, and why a short run finds the liver (large) long before it separates the spleen from it. Z-scoring
# itself does not change which organ is brighter within a channel: it changes the scale, so that both channels
# reach the network in the same units.

# %% [markdown]
# ## The instructor's finished runs (precomputed)
# Fine-tuning to a useful Dice takes the demo's 300 steps per task (~15 min on a laptop). The instructor ran
# them once before the workshop (`make demo`, then `make pack`); `make unpack ARCHIVE=...` installs them in
# `runs_dir()/precomputed`. Everything below labelled *precomputed* is read from those files: nothing is
# trained here. Without them, this section says so and the notebook goes on with your own short runs.

# %% tags=["precomputed"]
precomputed = {}
if show_precomputed:
    precomputed = {t: p for t in tasks if (p := find_precomputed(f"finetune_msd/{t}")) is not None}
    missing = [t for t in tasks if t not in precomputed]
    print(f"precomputed runs found for {sorted(precomputed) or 'no task'}"
          + (f"; none for {missing} in {runs_dir() / 'precomputed' / 'finetune_msd'}" if missing else ""))

# %% tags=["precomputed"]
def run_table(folder, label):
    """One row of what a finished fine-tuning run wrote: its settings, steps and Dice."""
    meta = json.loads((folder / "finetune_meta.json").read_text())
    hist = pd.read_csv(folder / "metrics.csv")
    summary = folder / "eval" / "summary.csv"
    mean = pd.read_csv(summary).set_index("class").loc["mean", "dice"] if summary.is_file() else float("nan")
    return {"run": label, "init": meta.get("init"), "steps": int(hist["step"].max()),
            "roi_size": meta.get("roi_size"), "spacing (mm)": meta.get("spacing"),
            "best val mean Dice": hist.get("val_mean_dice", pd.Series(dtype=float)).max(), "eval mean Dice": mean}


pd.DataFrame({t: run_table(p, "precomputed") for t, p in precomputed.items()}).T if precomputed else None

# %% [markdown]
# The precomputed learning curves: training loss and the validation Dice per task (*look at:* how many
# steps pass before the Dice leaves 0, and where it levels off).

# %% tags=["precomputed"]
if precomputed:
    display(plot_learning_curves({f"{t} (precomputed)": p for t, p in precomputed.items()},
                                 columns=["loss", "val_mean_dice"], smoothing=0.6))

# %% [markdown]
# ## Fine-tune each task
# > **⏭ Skip if behind** (homework, to the end of the notebook): the short runs take ~5 min on 2 CPU cores.
#
# Your own short run (`max_steps` per task): the same call the instructor's runs used, with fewer steps.
# The same `finetune` call for every task; only the preset differs. The checkpoint records the task, so
# `python -m swinunetr_lib.infer --task <task>` refuses a checkpoint of another task.

# %%
results, configs = {}, {}
for t in tasks:
    cfg = FinetuneConfig(task=t, data_manifest=str(manifests[t]), run_dir=str(runs_dir() / "finetune_msd" / t),
                         init=init_kind, pretrained=str(init_path or ""), spacing=spacing, roi_size=roi_size,
                         feature_size=feature_size, num_samples=num_samples, max_steps=max_steps,
                         val_interval=val_interval, lr=lr, warmup_steps=warmup_steps, seed=seed, device=device,
                         log_every=5, checkpoint_every=max(1, max_steps // 4), resume=False, progress=False)
    configs[t], results[t] = cfg, finetune(cfg)
pd.DataFrame({t: {"channels": get_preset(t).in_channels, "steps": r.fit.step, "minutes": round(r.seconds / 60, 1),
                  "best val mean Dice": r.best_mean_dice} for t, r in results.items()}).T

# %% [markdown]
# ## Per-class Dice and HD95 on the original grid
# > **⏭ Skip if behind** (homework).
#
# Predictions are mapped back to each case's own voxel grid before scoring (MONAI `Invertd`).

# %%
tables = {t: summarize(evaluate(r.model_path, split_entries(configs[t])[1], r.run_dir / "eval", device=device))
          for t, r in results.items()}
for t, table in tables.items():  # a sweep's results.json
    record(f"{t}_mean_dice", table.loc["mean", "dice"])
pd.concat(tables, names=["task", "class"]).round(3)

# %% [markdown]
# ## Your short runs beside the precomputed ones
# > **⏭ Skip if behind** (homework).
#
# The same files, read the same way, for both (*look at:* where your curve ends on the precomputed one; after
# 20 steps the loss has fallen but the Dice of a single small organ is often still near 0).

# %%
if precomputed:
    rows = [run_table(r.run_dir, "yours") | {"task": t} for t, r in results.items()]
    rows += [run_table(p, "precomputed") | {"task": t} for t, p in precomputed.items()]
    display(pd.DataFrame(rows).set_index(["task", "run"]).round(3))
    curves = {f"{t} (yours)": r.run_dir for t, r in results.items()}
    curves.update({f"{t} (precomputed)": p for t, p in precomputed.items()})
    display(plot_learning_curves(curves, columns=["val_mean_dice"], ncols=1, panel_size=4.5))
else:
    print("no precomputed runs to compare with (make unpack ARCHIVE=...)")

# %% [markdown] tags=["selfcheck"]
# ## Self-check
# **1.** Why can CT be clipped to a fixed HU window for every scan, while MR is z-scored per scan and channel?
# <details><summary>Answer</summary>
#
# CT's Hounsfield scale is physical (water 0, air −1000) and the same on every scanner; MR intensities have no
# unit and shift from scan to scan, so each channel is put on a common scale from its own statistics.
# </details>
#
# **2.** What does a task preset fix, and what stays the same for CT and MR?
# <details><summary>Answer</summary>
#
# The preset fixes the channels, the labels, the target spacing, the intensity normalisation and the crop settings;
# the model, the training loop, the evaluation and the inference code are the same for every task.
# </details>
#
# **3.** After 20 steps the spleen task's loss has fallen but its validation Dice is still 0. Has it learned
# nothing?
# <details><summary>Answer</summary>
#
# The loss counts every voxel, and the model first learns the background, which is most voxels; Dice counts only
# the organ. The precomputed runs show the Dice leaving 0 later: read a short run against the long one, not alone.
# </details>

# %% [markdown]
# ## Recap
# One preset per task carries everything task-specific — channels, labels, spacing, intensity
# normalisation — and the fine-tuning, evaluation and inference code stays the same for CT and
# multi-channel MR. The phantom tasks are easy (large organs, clean contrast), so a few hundred CPU steps
# reach a useful Dice (the precomputed runs, 300 steps each), while the short runs of the defaults only show
# the loop at work; real MSD tasks need the paper's resolution (`spacing = None` uses each task's
# preset spacing), `roi_size = [96, 96, 96]`, `feature_size = 48` and a GPU. Next: notebook 05 looks at
# predictions in 3D; notebook 06 measures how much pretraining helps when labels are scarce.
