# %% [markdown]
# # 06 · Label efficiency: does pretraining pay when labels are scarce?
#
# **Goal.** Reproduce the shape of the paper's label-efficiency figure (Tang et al., CVPR 2022, its
# ablation on manual labeling effort): fine-tune with 10 %, 25 %, 50 % and 100 % of the labeled training cases, from scratch and from
# the self-supervised encoder of notebook 02, over several seeds, and plot the held-out Dice against the
# labeled fraction. Each point is one run of notebook 03, executed by papermill through
# `swinunetr_lib.label_efficiency` (also a command: `python -m swinunetr_lib.label_efficiency`). All
# results land in one folder: executed notebooks, `results.csv`, `summary.csv` and the figure.
#
# **Kind:** how-to. **Runtime:** smoke parameters ~1-2 min on 2 CPU cores (2 tiny runs); demo parameters
# (4 runs of 150 steps: 2 fractions x scratch/SSL) ~15 min on 2 CPU cores, ~1 min per run on one GPU;
# the full grid (4 fractions x 2 inits x 3 seeds) is a matter of parameters.

# %%
import pandas as pd
from IPython.display import Image, display

from swinunetr_lib.finetune import SSL_EXPORT
from swinunetr_lib.label_efficiency import LabelEfficiencyConfig, run_sweep
from swinunetr_lib.paths import resolve_path, runs_dir

# %% tags=["parameters"]
fractions: list[float] = [0.1, 0.25, 0.5, 1.0]  # labeled fractions of the training list (paper: 10 %..100 %)
inits: list[str] = ["scratch", "ssl"]  # initialisations compared: scratch, ssl (notebook 02's encoder), official
seeds: list[int] = [0]  # seeds per setting (each changes the labeled subset, data order and initialisation)
finetune_params: str = "ci/params/label_efficiency/demo_03_finetune_btcv.yml"  # YAML of notebook 03 parameters for every run; empty means its defaults
pretrained: str = ""  # encoder checkpoint for ssl/official; empty means runs_dir()/ssl_pretraining/model_swinvit.pt
output: str = ""  # results folder; empty means runs_dir()/label_efficiency
rerun: bool = False  # rerun settings whose results already exist (else they are reused)

# %% [markdown]
# ## The plan
# Without notebook 02's exported encoder there is nothing to compare against, so `ssl` is dropped with a
# note (run notebook 02 first, or point `pretrained` at an encoder).

# %%
ssl_available = bool(pretrained) or (runs_dir() / SSL_EXPORT).is_file()
if "ssl" in inits and not ssl_available:
    print(f"no SSL encoder at {runs_dir() / SSL_EXPORT}: running scratch only")
    inits = [i for i in inits if i != "ssl"]
plan = pd.MultiIndex.from_product([inits, fractions, seeds], names=["init", "labeled_fraction", "seed"])
print(f"{len(plan)} fine-tuning runs with {finetune_params or 'notebook 03 defaults'}")

# %% [markdown]
# ## Run the sweep
# A run whose `results.json` exists is reused, so an interrupted sweep continues where it stopped.

# %%
cfg = LabelEfficiencyConfig(params=finetune_params, fractions=fractions, inits=inits, seeds=seeds,
                            pretrained=pretrained, output=output, rerun=rerun)
sweep = run_sweep(cfg)
print(f"results in {sweep.output}; {len(sweep.failures)} failed run(s)")

# %% [markdown]
# ## One row per run
# `mean_dice` and `mean_hd95_mm` are averaged over organs on the held-out cases' original grid.

# %%
sweep.results[["init", "labeled_fraction", "seed", "n_train", "steps", "minutes", "mean_dice", "mean_hd95_mm"]].round(3)

# %% [markdown]
# ## Dice versus labeled fraction
# Mean over seeds, error bars one standard deviation (absent with a single seed).

# %%
display(sweep.summary.round(3))
Image(filename=str(sweep.figure))

# %% [markdown]
# ## Recap
# We ran notebook 03 for every labeled fraction and initialisation and drew the Dice against the labeled
# fraction. In the paper the pretrained encoder's advantage is largest with the fewest labels; with the
# demo's tiny pretraining (a few volumes, minutes of CPU) expect the two curves to be close, and the
# spread over seeds to matter — compare them with `seeds = [0, 1, 2]`. The same command runs the full
# experiment on a GPU with the paper's settings in the `finetune_params` file.
