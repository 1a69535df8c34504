# %% [markdown]
# # 04 · Fine-tuning on Medical Segmentation Decathlon tasks (CT and multi-channel MR)
#
# **Goal.** Show how one fine-tuning recipe covers the ten MSD tasks (Tang et al., CVPR 2022, Sec. 4.1,
# Table 2): each task preset fixes the input channels (1, 2 or 4), the label set, the target spacing and
# the intensity preset — CT is clipped to a per-task Hounsfield window and scaled to [0, 1], MR is
# z-scored per channel over its non-zero voxels. We fine-tune and evaluate the tasks named in `tasks`;
# the defaults are the demo cohort's two MSD-style phantom tasks (synthetic, not patient data): a CT
# single-organ task like Task09_Spleen and a 2-channel MR-like task like Task05_Prostate. With the real
# MSD data unpacked under `$SWINUNETR_DATA_DIR/msd/<task>/`, name those tasks instead: their official
# `dataset.json` has no validation list, so fine-tuning validates on fold 0 of 5 deterministic folds.
#
# **Kind:** how-to. **Runtime:** smoke parameters ~1-2 min on 2 CPU cores; demo parameters ~15 min on
# 2 CPU cores (~7 min per task), ~1 min on one GPU.

# %%
import pandas as pd

from swinunetr_lib.data.cohort import build_demo_cohort
from swinunetr_lib.evaluate import evaluate, summarize
from swinunetr_lib.finetune import FinetuneConfig, finetune, resolve_init, split_entries
from swinunetr_lib.paths import data_dir, resolve_path, runs_dir
from swinunetr_lib.task_presets import get_preset, msd_tasks

# %% tags=["parameters"]
tasks: list[str] = ["Task901_PhantomSpleen", "Task902_PhantomMR"]  # task presets to fine-tune, e.g. ["Task09_Spleen"]
data_manifests: list[str] = []  # one manifest per task; empty means the demo cohort (phantom tasks) or data_dir()/msd/<task>/dataset.json
init: str = "auto"  # scratch, ssl (encoder from notebook 02), official (model_swinvit.pt) or auto (ssl if exported)
pretrained: str = ""  # encoder checkpoint for ssl/official; empty means runs_dir()/ssl_pretraining/model_swinvit.pt
spacing: "Optional[list[float]]" = [4.5, 4.5, 4.5]  # target spacing in mm for every task; None means each task's preset spacing, an empty list the native grid
roi_size: list[int] = [64, 64, 32]  # training crop / sliding window size, each divisible by 32 (paper: 96^3)
feature_size: int = 12  # Swin UNETR embedding size (paper: 48); divisible by 12
num_samples: int = 1  # label-balanced crops per volume per step
max_steps: int = 300  # optimizer steps per task
val_interval: int = 75  # steps between sliding-window validations
lr: float = 2e-3  # AdamW learning rate
warmup_steps: int = 10  # linear warm-up steps
seed: int = 0  # seed for data order, augmentation and initialisation
device: str = "auto"  # "auto" (CUDA if present), "cpu" or "cuda"

# %% [markdown]
# ## The ten MSD task presets
# Channels and label sets come from the dataset registry (`data_manifests/registry.json`); spacing and CT
# windows are nnU-Net's per-task median spacing and foreground intensity range.

# %%
presets = [get_preset(t) for t in msd_tasks()]
pd.DataFrame([{"task": p.name, "modality": p.modality, "channels": ", ".join(p.channel_names),
               "classes": ", ".join(v for k, v in p.labels.items() if k), "spacing (mm)": p.spacing,
               "intensity": "clip %g..%g HU -> [0, 1]" % p.window if p.intensity == "ct_window" else "z-score, non-zero"}
              for p in presets]).set_index("task")

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

# %% [markdown]
# ## Fine-tune each task
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
# Predictions are mapped back to each case's own voxel grid before scoring (MONAI `Invertd`).

# %%
tables = {t: summarize(evaluate(r.model_path, split_entries(configs[t])[1], r.run_dir / "eval", device=device))
          for t, r in results.items()}
pd.concat(tables, names=["task", "class"]).round(3)

# %% [markdown]
# ## Recap
# One preset per task carries everything task-specific — channels, labels, spacing, intensity
# normalisation — and the fine-tuning, evaluation and inference code stays the same for CT and
# multi-channel MR. The phantom tasks are easy (large organs, clean contrast), so a few hundred CPU steps
# reach a useful Dice; real MSD tasks need the paper's resolution (`spacing = None` uses each task's
# preset spacing), `roi_size = [96, 96, 96]`, `feature_size = 48` and a GPU. Next: notebook 05 looks at
# predictions in 3D; notebook 06 measures how much pretraining helps when labels are scarce.
