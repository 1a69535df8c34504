# %% [markdown]
# **Generated file, do not edit:** the exercise version of `notebooks/02_ssl_pretraining.py`, written by `python -m swinunetr_lib.notebooks.exercises generate`.
# Edit `notebooks/02_ssl_pretraining.py` (cells tagged `exercise` / `solution`) and regenerate. The worked solutions are in
# `notebooks/02_ssl_pretraining.ipynb`, the answers for instructors in `docs/workshop_answers.md`.

# %% [markdown]
# # 02 · Self-supervised pretraining of the Swin UNETR encoder (exercises)
#
# **Goal.** Pretrain the Swin UNETR encoder on unlabeled CT with the paper's three proxy tasks
# (Tang et al., CVPR 2022, Sec. 3): predict the rotation of a sub-volume (0/90/180/270° about the
# z axis), pull two augmented views of the same sub-volume together (contrastive coding), and inpaint
# cut-out boxes (masked volume inpainting). We first see *why* each task should teach anatomy and what the
# encoder looks like, compute each task once by hand in plain torch, then train with the library's one
# training loop (`swinunetr_lib.train.loop.fit`, via `swinunetr_lib.pretrain.run.pretrain`), read each loss against
# the value a model that learned nothing would get, compare reconstructions with the originals and export
# the encoder as `model_swinvit.pt`, the file notebook 03 can start fine-tuning from.
#
# **Kind:** tutorial, with three exercises (each starts with a written prediction; the workshop version without
# the solutions is `notebooks/exercises/02_ssl_pretraining_ex.ipynb`). Terms: [glossary](../../docs/glossary.md).
# **Runtime:** the defaults below (10 steps) ~3.5 min on 2 CPU cores (205 s measured on a 2-core AVX2 machine,
# ~14 s per step; about half on a CPU with AVX512; more when the cores are shared), under 1 min on one GPU; smoke
# parameters ~1 min; demo parameters (80 steps of 4
# sub-volumes, ~12 s each) ~16 min on CPU, ~1-2 min on one GPU. The paper trains 96³ sub-volumes, feature
# size 48, for far longer on 5,050 CTs: these runs show the mechanics, not a useful encoder. Three longer runs,
# measured beforehand and committed, show what 30-80 min of CPU buy and which settings each proxy task needs;
# when the instructor's finished run is installed (`runs_dir()/precomputed/ssl_pretraining`), it is shown too.

# %%
import math

import pandas as pd
import torch
import torch.nn.functional as F
from IPython.display import Image, Markdown, display
from monai.networks.nets import SwinUNETR

from swinunetr_lib.data.cohort import build_demo_cohort
from swinunetr_lib.experiments.baselines import (
    add_baselines,
    contrastive_chance,
    rotation_chance,
    ssl_batch_subvolumes,
    trivial_fill_l1,
)
from swinunetr_lib.experiments.recorded_pretraining import RECORDED_RUNS, load_recorded
from swinunetr_lib.notebooks.precomputed import find_precomputed
from swinunetr_lib.notebooks.prediction import check_prediction
from swinunetr_lib.paths import runs_dir
from swinunetr_lib.pretrain.dataloader import ssl_dataloader
from swinunetr_lib.pretrain.first_step import compare_with_logged, first_step_inputs
from swinunetr_lib.pretrain.losses import ContrastiveLoss
from swinunetr_lib.pretrain.model import load_ssl_model, ssl_model_from_checkpoint
from swinunetr_lib.pretrain.run import PretrainConfig, pretrain
from swinunetr_lib.pretrain.transforms import (
    InnerCutout,
    SSLViewTransform,
    TwoViewTransform,
    make_generator,
    rotate_axial,
)
from swinunetr_lib.utils.device import resolve_device
from swinunetr_lib.utils.files import safe_torch_load
from swinunetr_lib.utils.results import record
from swinunetr_lib.viz.curves import plot_learning_curves
from swinunetr_lib.viz.figures import SCALED_SOFT_TISSUE, new_figure, plot_ssl_panels

# %% tags=["parameters"]
data_manifest: str = ""  # pretraining manifest JSON with a training list of images; empty means the demo cohort
roi_size: int = 64  # cubic sub-volume side in voxels (paper: 96); divisible by 32
feature_size: int = 12  # Swin UNETR embedding size (paper: 48); divisible by 12
batch_size: int = 1  # volumes per step (official: 2); each gives num_samples sub-volumes
num_samples: int = 2  # random sub-volumes cropped per volume (official: 2)
max_steps: int = 10  # optimizer steps (paper: 450k+ iterations on 5,050 CTs)
warmup_steps: int = 2  # linear warm-up steps before the cosine decay (paper: 500)
lr: float = 4e-4  # AdamW learning rate (paper: 4e-4)
seed: int = 0  # seed for data order, augmentations and initialisation
device: str = "auto"  # "auto" (CUDA if present), "cpu" or "cuda"
resume: bool = False  # continue from runs_dir()/ssl_pretraining/checkpoints/last.pt if it exists
cutout_mode: str = "single"  # "single" (one pass, as the paper: mean 13.5 % cut out) or "official" (two passes, as the
                             # official code: mean 22 %)
cutout_fraction: float = 0.3  # max fraction of a sub-volume cut out per pass (paper/official: 0.3)
cutout_min_block: float = 0.05  # smallest cutout box side, fraction of each axis (official: 0.05)
cutout_max_block: float = 0.25  # largest cutout box side, fraction of each axis (official: 0.25)
cutout_noise_prob: float = 0.5  # "single" mode: probability a box gets noise rather than another sample's content
contrastive_negatives: str = "global"  # "global" (all GPUs' batches) or "per_gpu" (local batch only, as the official
                                       # code)
decoder: str = "upsample"  # reconstruction head: "upsample" (as the paper: from the deepest stage alone) or "unet" (the
                           # Swin UNETR decoder with skips; roi_size 64 or more)
show_precomputed: bool = True  # also show the instructor's finished run from runs_dir()/precomputed/ssl_pretraining
                               # when it is there

# %% [markdown]
# ## Why these three tasks should teach anatomy
# Tang et al. (Sec. 3) pick proxy tasks that a network can only solve by modelling the body, with no labels:
#
# - **[Inpainting](../../docs/glossary.md#inpainting)** (masked volume inpainting): to fill a cut-out box with plausible
#   tissue, the network must know what is around it (a liver continues as liver, a vessel continues along its course):
#   *local anatomy and texture in context*.
# - **[Rotation](../../docs/glossary.md#rotation)** (0/90/180/270° about z): the spine is posterior, the liver on the
#   right; telling which way a sub-volume was turned needs the *layout of structures*, not only intensities.
# - **Contrastive coding**: two differently cut-out and rotated views of one sub-volume must map close
#   together and away from the other sub-volumes of the batch: *features that identify a region* whatever
#   the corruption, the property fine-tuning needs to tell organs apart.
#
# The three losses are summed with weight 1 each (paper Eq. 4).

# %% [markdown]
# ## The Swin UNETR encoder in one figure
# The encoder (MONAI's `SwinTransformer`, the `swinViT` inside `SwinUNETR`) cuts the volume into 2³-voxel
# **patches**, each embedded as a vector of `feature_size` numbers. Self-attention runs inside **windows** of
# 7³ patches only (left panel below, in 2D; [Swin](../../docs/glossary.md#swin)), so cost grows linearly with the volume;
# every second block
# **shifts** the windows by half a window (middle panel) so that information crosses window borders. After
# each of the **four stages** (two blocks each) a patch-merging step halves the resolution and doubles the
# channels. `feature_size` is the width of the first stage, so it scales every stage's width: `f, 2f, 4f,
# 8f, 16f` channels. *Look at:* the windows of the shifted grid straddle the borders of the regular grid, and
# the channels (right) double while the side halves. The shapes are those of a real forward pass.

# %%
encoder = SwinUNETR(in_channels=1, out_channels=14, feature_size=feature_size).swinViT
with torch.no_grad():
    hidden = encoder(torch.zeros(1, 1, roi_size, roi_size, roi_size))
stages = pd.DataFrame([(f"stage {i}" if i else "embed", h.shape[1], h.shape[2]) for i, h in enumerate(hidden)],
                      columns=["output of", "channels", "side (patches)"])
stages.T

# %% [markdown]
# A stage attends within the map it receives (the side of the row before it). Where that is smaller than
# 7³, as for the fourth stage at `roi_size` 64 or 96, MONAI shrinks the window to the whole map and does not shift.

# %%
tokens, win, shift = 8, 4, 2  # a 2D cartoon: 8 x 8 patches, windows of 4 x 4 (the encoder: 7³), shift 2
i, j = torch.meshgrid(torch.arange(tokens), torch.arange(tokens), indexing="ij")
fig = new_figure((11, 3.4))
axs = fig.subplots(1, 3)
# the first two panels; the third, the channels per stage, is drawn below
for ax, (name, ids) in zip(axs[:2], [("windows", (i // win) * 8 + j // win),
                                     ("shifted windows", ((i + shift) // win) * 8 + (j + shift) // win)],
                           strict=True):
    ax.imshow(ids, cmap="tab20", interpolation="nearest")
    ax.set_xticks(torch.arange(tokens) - 0.5, minor=True), ax.set_yticks(torch.arange(tokens) - 0.5, minor=True)
    ax.grid(which="minor", color="w", lw=0.6)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    ax.set_title(f"{name}: {win}x{win} patches (white lines)", fontsize=9)
axs[2].bar(stages["output of"], stages["channels"], color="tab:blue")
axs[2].set_title(f"channels per stage at feature_size={feature_size} (side on top)", fontsize=9)
for k, (c, s) in enumerate(zip(stages["channels"], stages["side (patches)"], strict=True)):
    axs[2].text(k, c, f"{s}³", ha="center", va="bottom", fontsize=8)
fig

# %% [markdown] tags=["exercise"]
# **Exercise 1 (predict, 5 min).** `feature_size` sets the width of every stage. Most of the encoder's weights
# sit in linear layers whose size is (width in) x (width out). **Predict** how many times more parameters the
# encoder has at `feature_size = 48` (the paper's) than at `12` and write it into `prediction`; then **build**
# both encoders and **count**. Why is the measured ratio not exactly your prediction?

# %% tags=["prediction", "stub"]
# Exercise 1: your prediction, written before running anything below
prediction = None  # how many times more parameters at 48 than at 12, e.g. 4

# %% tags=["stub"]
# Exercise 1: your code here
def encoder_parameters(f: int) -> int:
    """Complete: the parameter count of SwinUNETR(in_channels=1, out_channels=14, feature_size=f).swinViT."""
    return 0
sizes = {f: encoder_parameters(f) for f in (12, 48)}
ratio = sizes[48] / sizes[12] if sizes[12] else float("nan")
check_prediction(prediction, ratio, what="encoder parameters at 48 / at 12")

# %% [markdown] tags=["stub"]
# *Exercise 1: your answer here.*

# %% [markdown]
# ## The data
# Without a manifest we use the demo cohort (real example CTs plus labeled phantoms, built once by
# notebook 01 or here). The pipeline is MONAI's: load → RAS → HU [-1000, 1000] → [0, 1] → crop to the
# voxels above -1000 HU (drops the padding outside the scanner's field of view, as the official code) →
# pad → `num_samples` random `roi_size`³ crops per volume.

# %% tags=["precomputed"]
if not data_manifest:
    data_manifest = str(build_demo_cohort().pretrain_manifest)
dev = resolve_device(device)
loader = ssl_dataloader(data_manifest, roi_size=roi_size, batch_size=batch_size, num_samples=num_samples, seed=seed)
x = next(iter(loader))["image"].as_tensor().to(dev)
print(f"{len(loader.dataset)} volumes; one batch: {tuple(x.shape)} (B, C, X, Y, Z), "
      f"range [{x.min():.2f}, {x.max():.2f}]")

# %% [markdown]
# ## Each proxy task once, by hand
# > **⏭ Skip if behind**: run these cells, show the one-line checks they print, and move on; the three bullets
# > at the top said what each task does.
#
# The library applies the tasks to a whole batch on the device at once. Here each is written out in plain
# torch on a toy input and checked equal (`torch.testing.assert_close`) to the library's batched version.
#
# **Contrastive coding ([NT-Xent](../../docs/glossary.md#nt-xent)).** Three sub-volumes, two views each: six embeddings.
# Cosine similarities divided by the temperature 0.5 fill a 6 x 6 matrix; each row is a softmax over the *other* five
# entries (the diagonal is left out) and the loss is minus the log-probability of the row's positive, the other view
# of the same sub-volume. *Look at:* the positives (`a'` for `a`, ...) are the largest entries of their rows.

# %%
z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.2]])      # view 1 of sub-volumes a, b, c
z2 = torch.tensor([[0.9, 0.3], [0.2, 1.0], [-1.0, -0.3]])      # view 2: a', b', c'
u = F.normalize(torch.cat([z1, z2]), dim=1)
sim = u @ u.T / 0.5
sim.fill_diagonal_(float("-inf"))                               # a view is not its own candidate
positive = [3, 4, 5, 0, 1, 2]                                   # row i's other view
by_hand = torch.stack([-(sim[r, positive[r]] - torch.logsumexp(sim[r], dim=0)) for r in range(6)]).mean()
torch.testing.assert_close(by_hand, ContrastiveLoss(0.5, gather_distributed=False)(z1, z2))
names = ["a", "b", "c", "a'", "b'", "c'"]
print(f"NT-Xent by hand {by_hand:.4f} = library; chance level with 3 sub-volumes ln(2*3 - 1) = {math.log(5):.4f}")
pd.DataFrame(sim.numpy(), index=names, columns=names).round(2)

# %% [markdown]
# **Rotation about z.** A 90° turn in the axial (X, Y) plane of a side-S volume: the new voxel (i, j) is the
# old voxel (j, S - 1 - i), on every axial slice z. *Look at:* the first row of the rotated slice is the
# last column of the original.

# %%
vol = torch.arange(4 * 4 * 2, dtype=torch.float32).view(1, 1, 4, 4, 2)   # (B, C, X, Y, Z), side S = 4
turned = torch.empty_like(vol)
for i in range(4):
    for j in range(4):
        turned[0, 0, i, j, :] = vol[0, 0, j, 3 - i, :]
torch.testing.assert_close(turned, rotate_axial(vol, torch.tensor([1])))
pd.concat({"original z=0": pd.DataFrame(vol[0, 0, :, :, 0].int().numpy()),
           "rotated 90° z=0": pd.DataFrame(turned[0, 0, :, :, 0].int().numpy())}, axis=1)

# %% [markdown]
# **Cutout box.** A box is a start and a length per axis; its mask is the product of three 1D indicators. The
# library builds the masks of all boxes of all samples at once with one batched matrix product
# (`InnerCutout._cover`), then fills them with noise or another sample's content. *Look at:* 3 x 4 x 2 = 24
# voxels are cut, on the two slices the box spans.

# %%
start, length, S = (2, 1, 3), (3, 4, 2), 8
box = torch.zeros(1, 1, S, S, S, dtype=torch.bool)
box[0, 0, start[0]:start[0] + length[0], start[1]:start[1] + length[1], start[2]:start[2] + length[2]] = True
batched = InnerCutout._cover((S, S, S), [torch.tensor([[s]]) for s in start], [torch.tensor([[n]]) for n in length],
                             [torch.ones(1, 1)])[0] > 0.5
torch.testing.assert_close(box, batched)
print(f"{int(box.sum())} voxels cut out; slices z = {sorted(set(box.nonzero()[:, 4].tolist()))}")
pd.DataFrame(box[0, 0, :, :, start[2]].int().numpy())

# %% [markdown]
# ## Two augmented views
# Each view is rotated about z (label 0-3 = k·90°) and has voxels cut out in random boxes, filled with
# noise or with another sub-volume's content: with `cutout_mode="single"` one pass of up to ~30 % (mean
# 13.5 %), with `"official"` two passes as the official code (mean 22 %). Both are made on the tensor's
# device for the whole batch at once. *Look at:* the same sub-volume, turned differently and cut in
# different places in the two views.

# %% tags=["precomputed"]
cutout = InnerCutout(max_fraction=cutout_fraction, min_block=cutout_min_block, max_block=cutout_max_block,
                     noise_prob=cutout_noise_prob, mode=cutout_mode)
v1, v2 = TwoViewTransform(SSLViewTransform(cutout=cutout))(x, make_generator(dev, seed))
print(f"cut out: view 1 {v1.mask[0].float().mean():.1%}, view 2 {v2.mask[0].float().mean():.1%} of the voxels")
display(plot_ssl_panels(x, v1.target, v1.image, rotation_labels=v1.rotation.tolist(), max_samples=2))
plot_ssl_panels(x, v2.target, v2.image, rotation_labels=v2.rotation.tolist(), max_samples=2)

# %% [markdown] tags=["exercise"]
# **Exercise 2 (predict, 5 min).** Before the run below logs anything: it contrasts `batch_size * num_samples`
# sub-volumes per step, two views each ([NT-Xent](../../docs/glossary.md#nt-xent)). **Predict** the contrastive loss
# of its first step, when the fresh encoder has learned nothing, and write it into `prediction`. (Hint: if every
# view looks the same to the encoder, how likely is it to pick its partner among the others?)

# %% tags=["prediction", "stub"]
# Exercise 2: your prediction, written before running anything below
prediction = None  # the first logged contrastive loss, e.g. 0.5

# %% [markdown]
# ## Pretraining
# `pretrain` builds the SSL model (MONAI's SwinTransformer exactly as inside SwinUNETR, plus a rotation
# head, a contrastive head and a reconstruction decoder) and calls `fit`, which handles the optimizer,
# warm-up + cosine schedule, mixed precision on GPUs, checkpoints and logs.

# %%
run_dir = runs_dir() / "ssl_pretraining"
cfg = PretrainConfig(data_manifest=data_manifest, run_dir=str(run_dir), device=device, roi_size=roi_size,
                     feature_size=feature_size, batch_size=batch_size, num_samples=num_samples, max_steps=max_steps,
                     warmup_steps=warmup_steps, lr=lr, seed=seed, resume=resume,
                     checkpoint_every=max(1, max_steps // 4),
                     cutout_mode=cutout_mode, cutout_fraction=cutout_fraction, cutout_min_block=cutout_min_block,
                     cutout_max_block=cutout_max_block, cutout_noise_prob=cutout_noise_prob,
                     contrastive_negatives=contrastive_negatives, decoder=decoder)
result = pretrain(cfg)
print(f"{result.fit.step} steps; last loss {result.fit.metrics['loss']:.3f}; checkpoint {result.fit.last_checkpoint}")
record("steps", result.fit.step)  # a sweep's results.json (swinunetr_lib.utils.results)
record("final_loss", result.fit.metrics["loss"])

# %% [markdown] tags=["exercise"]
# **Exercise 2, check.** **Compare** your prediction with the first logged value
# (`result.fit.history[0]["contrastive"]`), then **change** the batch: feed `ContrastiveLoss` N identical
# embeddings (an encoder that tells nothing apart) for this run's N and for twice as many sub-volumes
# (`batch_size = 2`). What does the chance level depend on, and what not?

# %% tags=["stub"]
# Exercise 2: your code here
n = batch_size * num_samples  # sub-volumes per step: 2N views
first = result.fit.history[0]["contrastive"]
check_prediction(prediction, first, what="first logged contrastive loss")
for k in (n, 2 * n):  # this batch, then batch_size doubled
    same = torch.ones(k, 8)  # k identical embeddings, two views each
    at_chance = float("nan")  # complete: ContrastiveLoss(0.5, gather_distributed=False)(same, same)
    print(f"N = {k}: identical embeddings {at_chance:.4f}, ln(2N - 1) = {math.log(2 * k - 1):.4f}")

# %% [markdown] tags=["stub"]
# *Exercise 2: your answer here.*

# %% [markdown]
# ## One step by hand: what `pretrain` did at step 1
# `fit` hides the step inside a loop; here it is written out once with the library's own pieces, on exactly
# what step 1 of the run above saw: the model initialised from `seed`, the first batch of the same loader and
# the same random draws (`first_step_inputs` rebuilds them as `fit` seeds them). The step: two views of each
# sub-volume, **one forward of both**, then the three losses of paper Eq. 4 — rotation cross-entropy over 4
# classes, NT-Xent between the two views' embeddings at temperature 0.5, L1 between the reconstruction and the
# uncorrupted view — summed with weight 1 each, and **backward**. *Look at:* the by-hand numbers equal the
# first row `pretrain` logged in `metrics.csv` (the assert fails otherwise); `grad_norm` is the gradient's
# size before clipping to 1.

# %%
step1 = first_step_inputs(cfg)                          # pretrain's initial model, first batch, step generator
hv1, hv2 = step1.views(step1.x, step1.generator)        # two views: rotated (labels 0-3), boxes cut out
b = step1.x.shape[0]
with step1.autocast():                                  # fit's precision (fp32 on a CPU)
    step1_out = step1.model(torch.cat([hv1.image, hv2.image]))  # both views in one forward: (2B, ...)
    loss_rot = F.cross_entropy(step1_out["rotation"], torch.cat([hv1.rotation, hv2.rotation]))
    loss_con = ContrastiveLoss(temperature=cfg.temperature, gather_distributed=False)(step1_out["contrastive"][:b],
                                                                                      step1_out["contrastive"][b:])
    loss_rec = F.l1_loss(step1_out["reconstruction"], torch.cat([hv1.target, hv2.target]))
    loss_sum = (cfg.rotation_weight * loss_rot + cfg.contrastive_weight * loss_con
                + cfg.reconstruction_weight * loss_rec)  # weights 1, 1, 1 (paper Eq. 4)
step1.model.zero_grad(set_to_none=True)
loss_sum.backward()
grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in step1.model.parameters()
                                                  if p.grad is not None]))
by_hand = {"loss": loss_sum.item(), "rotation": loss_rot.item(), "contrastive": loss_con.item(),
           "reconstruction": loss_rec.item(), "grad_norm": grad_norm.item()}
step_table = pd.DataFrame(compare_with_logged(by_hand, result.fit.history[0])).set_index("term")  # raises if apart
print(f"step 1 total loss: by hand {by_hand['loss']:.6f}, logged by pretrain "
      f"{result.fit.history[0]['loss']:.6f}")
step_table

# %% [markdown]
# The library's `ssl_step_by_hand(first_step_inputs(cfg))` is the same cell as a function; a test
# (`tests/test_pretrain.py`) checks it against a run's first row, and that another seed does not match. What
# `fit` adds around this step: the optimizer (AdamW, warm-up then cosine learning rate), gradient clipping,
# mixed precision on GPUs, checkpoints and the log.

# %% [markdown]
# ## The three losses against their baselines
# Rotation is a cross-entropy over 4 classes: guessing gives ln 4 ≈ 1.39 (its
# [chance level](../../docs/glossary.md#chance-level)). Contrastive is NT-Xent over
# 2N views: chance ln(2N - 1). Reconstruction is the L1 over the whole sub-volume; two baselines, measured on
# the views above: a decoder that ignores its input and returns the crop's mean grey everywhere ("constant",
# its chance level), and one that copies the visible voxels and fills every cut-out voxel with that mean
# ("trivial fill", what copying alone would reach). The total's chance level is the sum of the three.
# *Look at:* a curve below its chance line has learned something. In short runs the rotation loss falls
# toward its line from above (a random head is worse than a uniform guess), the contrastive loss sits on its
# line (few views to tell apart), and the reconstruction, far above both of its lines at first, stays above
# even the constant image: the decoder, starting from noise, has not yet learned a crop's average grey.
#
# *What longer CPU runs reach:* the section "Three longer runs, recorded" below draws three longer runs (half an
# hour to an hour and a half each on 2 cores) against the same lines. With 16 views of 32³ per step, rotation and
# contrastive coding leave their lines within ~100 steps but the paper's decoder paints grey; with Swin UNETR's
# decoder at 64³ the inpainting learns but, at 4 views per step, rotation and contrastive coding do not; the 32³
# run continued at 64³ learns rotation and inpainting there. A 10-step or 80-step run shows the mechanics.

# %%
n_sub = ssl_batch_subvolumes(batch_size, num_samples, contrastive_negatives=contrastive_negatives)
fill_all, constant = (sum(trivial_fill_l1(v.target, v.mask, region="all", copy_visible=c) for v in (v1, v2)) / 2
                      for c in (True, False))
baselines = {"rotation": {"chance ln 4": rotation_chance()},
             "contrastive": {f"chance ln(2·{n_sub}-1)": contrastive_chance(n_sub)},
             "reconstruction": {"constant": constant, "trivial fill": fill_all}}
baselines["loss"] = {"sum of chance levels": rotation_chance() + contrastive_chance(n_sub) + constant}
hist = pd.DataFrame([r for r in result.fit.history if "loss" in r])
curves = plot_learning_curves(hist, columns=["loss", "rotation", "contrastive", "reconstruction"], smoothing=0.6,
                              ncols=4)
display(add_baselines(curves, baselines))
lines = pd.Series({k: ", ".join(f"{name} {v:.4f}" for name, v in d.items()) for k, d in baselines.items()},
                  name="baselines")
pd.concat([hist.set_index("step")[list(baselines)].iloc[[0, -1]].T.add_prefix("step ").round(4), lines], axis=1)

# %% [markdown]
# ## Inpainting: reconstructions next to the originals
# The decoder sees the corrupted view and must return the uncorrupted (rotated) one. The L1 inside the
# cut-out boxes is the part that needs anatomy; the trivial fill is its baseline. *Look at:* whether the
# reconstructed boxes show structure or only the mean grey of the trivial fill.

# %%
model = load_ssl_model(result.fit.last_checkpoint, dev)  # weights-only read; decoder kind from the tensor names
with torch.no_grad():
    rec = model(v1.image)["reconstruction"].clamp(0, 1)
inside = v1.mask.expand_as(rec)
l1_inside, fill_inside = float((rec - v1.target).abs()[inside].mean()), trivial_fill_l1(v1.target, v1.mask)
print(f"L1 inside the cut-out boxes: model {l1_inside:.3f}, trivial fill {fill_inside:.3f}")
plot_ssl_panels(x, v1.target, v1.image, rec, rotation_labels=v1.rotation.tolist(), mask=v1.mask,
                window_preset=SCALED_SOFT_TISSUE)

# %% [markdown] tags=["exercise"]
# **Exercise 3 (change, 5 min).** The reconstruction loss is averaged over *all* voxels of the sub-volume.
# **Predict** by how many times (a) the cut-out fraction, (b) the whole-volume L1 and (c) the L1 inside the boxes
# change when `cutout_fraction` doubles, as a dict of ratios (doubled / default); then **make** new views of `x`
# with twice the fraction, run the model above on both settings and **compare** (with the trivial fill beside
# each number). The stub below has the loop; complete its body.

# %% tags=["prediction", "stub"]
# Exercise 3: your prediction, written before running anything below
prediction = None  # e.g. {"cut out": 2.0, "L1 all voxels": 2.0, "L1 inside boxes": 1.0}

# %% tags=["stub"]
# Exercise 3: your code here
rows = []
for frac in (cutout_fraction, min(2 * cutout_fraction, 0.95)):
    cut = InnerCutout(max_fraction=frac, min_block=cutout_min_block, max_block=cutout_max_block,
                      noise_prob=cutout_noise_prob, mode=cutout_mode)
    view = SSLViewTransform(cutout=cut)(x, make_generator(dev, seed + 1))
    # complete: run `model` on view.image (under torch.no_grad(), as in the inpainting cell above), then
    # rows.append({"cutout_fraction": frac, "cut out": ..., "L1 all voxels": ..., "L1 inside boxes": ...})
means = pd.DataFrame(rows).groupby("cutout_fraction").mean() if rows else None
ratios = {} if means is None else (means.iloc[1] / means.iloc[0]).to_dict()
check_prediction(prediction, ratios, what="doubled / default")

# %% [markdown] tags=["stub"]
# *Exercise 3: your answer here.*

# %% [markdown]
# ## Three longer runs, recorded: what each proxy task needs
# The run above is far too short for any task to learn. These three were measured beforehand on the project's
# 2-core CPU and committed (`docs/results/ssl_pretraining_phantoms`, with their commands), on 100 phantoms at
# 6 mm, feature size 12. They differ where a CPU budget forces a choice:
#
# - **the paper's decoder, 32³**: 32³ crops, 16 views per step, 300 steps. The decoder rebuilds the
#   sub-volume from the deepest stage alone, one voxel at 32³ (2³ at 64³).
# - **Swin UNETR's decoder, 64³**: each whole body centred in a 64³ sub-volume, 4 views per step,
#   450 steps, `decoder = "unet"`: skip connections from every stage, so the visible voxels pass straight to the
#   output and what remains to learn is the inside of the boxes, filled from the context around them (the
#   restoration task of Models Genesis, Zhou et al. 2019).
# - **the 32³ run continued at 64³**: the second run's settings for 150 steps, but starting from
#   the first run's encoder and heads (`init_from`; the decoder is new). This is progressive resizing, fastbook's
#   habit for images: learn cheaply on small inputs with many views per step, then go on at the larger size.
#
# *Look at:* which losses end below their chance lines in which run.

# %%
recorded = {name: load_recorded(folder) for name, folder in RECORDED_RUNS.items()}
for name, rec in recorded.items():
    rc, row = rec.config, rec.probe.set_index("encoder").loc["ssl"]
    n = ssl_batch_subvolumes(rc.batch_size, rc.num_samples, contrastive_negatives=rc.contrastive_negatives)
    lines = {"rotation": {"chance ln 4": rotation_chance()},
             "contrastive": {f"chance ln(2·{n}-1)": contrastive_chance(n)},
             "reconstruction": {"constant": row["constant_l1_all"], "trivial fill": row["trivial_fill_l1_all"]}}
    fig = plot_learning_curves(rec.metrics, columns=list(lines), smoothing=0.9, ncols=3)
    fig.suptitle(f"{name}: {rc.max_steps} steps, {2 * n} views per step (smoothed; raw dashed)", fontsize=10)
    display(add_baselines(fig, lines))

# %% [markdown]
# The reconstruction lines are measured on the held-out views below (whole-volume L1). Next, the probes of the
# three encoders on the 3 held-out phantoms, beside the same architecture at random initialisation (the
# [random twin](../../docs/glossary.md#random-twin)), on
# organ-centred crops (32³ and 64³, each run's own size): rotation accuracy; the contrastive loss of two views of
# every crop embedded together, and how often a view's partner is ranked first among all the others (chance
# 1/(2N − 1) for N crops); and the L1 inside the cut-out boxes of held-out views.

# %%
rows = {}
for name, rec in recorded.items():
    p = rec.probe.set_index("encoder")
    rows[name] = {"rotation accuracy": p.loc["ssl", "rotation_accuracy"],
                  "rotation accuracy, random init": p.loc["random init", "rotation_accuracy"],
                  "contrastive loss (chance ln(2N-1))": p.loc["ssl", "contrastive_loss"],
                  "contrastive loss, chance": p.loc["ssl", "contrastive_loss_chance"],
                  "contrastive loss, random init": p.loc["random init", "contrastive_loss"],
                  "partner ranked first": p.loc["ssl", "contrastive_top1"],
                  "partner ranked first, chance": p.loc["ssl", "contrastive_chance"],
                  "partner ranked first, random init": p.loc["random init", "contrastive_top1"],
                  "L1 inside the boxes": p.loc["ssl", "inpainting_l1"],
                  "L1 inside the boxes, trivial fill": p.loc["ssl", "trivial_fill_l1"],
                  "L1 inside the boxes, random init": p.loc["random init", "inpainting_l1"],
                  "organ probe (chance 1/13)": p.loc["ssl", "organ_accuracy"],
                  "organ probe, random init": p.loc["random init", "organ_accuracy"]}
pd.DataFrame(rows).round(3)

# %% [markdown]
# Their reconstructions of held-out phantoms, in a soft-tissue window (the slice the boxes hide most of; boxes in red).
# *Look at:* do the organs and the body wall continue into the boxes?

# %%
for name, rec in recorded.items():
    print(name)
    display(Image(filename=str(rec.figure)))

# %% [markdown]
# **Reading.** The numbers below are rendered from the recorded files (`metrics.csv`, `probe.csv`), not typed.

# %%
p32, u64, prog = (recorded[k].probe.set_index("encoder") for k in recorded)
m32, m64, mprog = (recorded[k].metrics for k in recorded)
c32 = recorded["paper's decoder, 32³"].config
chance32 = contrastive_chance(ssl_batch_subvolumes(c32.batch_size, c32.num_samples,
                                                   contrastive_negatives=c32.contrastive_negatives))
organ = pd.DataFrame({k: r.probe.set_index("encoder")["organ_accuracy"] for k, r in recorded.items()})
display(Markdown(
    f"Each run learned what its settings let it learn. The 32³ run (16 views per step, "
    f"{m32['sec_per_step'].sum() / 60:.0f} min) learned rotation ({p32.loc['ssl', 'rotation_accuracy']:.3f} of the "
    f"held-out crops' rotations named; chance 25 %) and contrastive coding (its loss ends "
    f"{chance32 - m32['contrastive'].tail(20).mean():.2f} below its chance level {chance32:.3f} over the last 20 "
    f"training steps, and on held-out crops {p32.loc['ssl', 'contrastive_loss']:.3f} against "
    f"{p32.loc['ssl', 'contrastive_loss_chance']:.3f}), while its decoder, rebuilding everything from one voxel, "
    f"paints grey boxes (L1 inside {p32.loc['ssl', 'inpainting_l1']:.3f}, trivial fill "
    f"{p32.loc['ssl', 'trivial_fill_l1']:.3f}). The 64³ run with Swin UNETR's decoder "
    f"({m64['sec_per_step'].sum() / 60:.0f} min) inpaints: through the skips the body outline, the spine, the liver "
    f"and the kidneys come back, and inside the boxes the body wall and the organs' grey levels continue (L1 "
    f"{u64.loc['ssl', 'inpainting_l1']:.3f} against {u64.loc['ssl', 'trivial_fill_l1']:.3f} for the trivial fill), "
    f"blurred, with some noise left and a faint grid from the decoder's transposed convolutions. With 4 views per "
    f"step its rotation and contrastive losses stayed on their chance lines (its rotation head answers one class: "
    f"{u64.loc['ssl', 'rotation_accuracy']:.2f} on held-out crops). Continued from the 32³ run instead of random "
    f"weights ({mprog['sec_per_step'].sum() / 60:.0f} min more), the same 64³ settings learn rotation too: the head "
    f"guesses at first (loss {mprog['rotation'].head(20).mean():.2f} over the first 20 steps: the 32³ skill does not "
    f"carry over as it is), then its loss falls to {mprog['rotation'].tail(20).mean():.2f} over the last 20, and it "
    f"names {prog.loc['ssl', 'rotation_accuracy']:.3f} of the held-out 64³ crops' rotations, while the boxes are "
    f"inpainted ({prog.loc['ssl', 'inpainting_l1']:.3f} against {prog.loc['ssl', 'trivial_fill_l1']:.3f}) through a "
    f"stronger grid after only {len(mprog)} steps. No CPU run learned contrastive coding at 64³: 2 whole bodies per "
    f"step, which differ only in the phantoms' sizes and shapes, leave little to contrast. Note the retrieval rows: "
    f"random features rank the partner first more often than the trained ones (two views of one crop share most "
    f"voxels, and so do neighbouring crops), although only the trained embeddings lower the loss. Neither encoder "
    f"names organs much better than random features (organ probe {organ.loc['ssl'].min():.2f}–"
    f"{organ.loc['ssl'].max():.2f} for the trained encoders, {organ.loc['random init'].min():.2f}–"
    f"{organ.loc['random init'].max():.2f} at random initialisation, on {int(p32.loc['ssl', 'n_test'])} and "
    f"{int(u64.loc['ssl', 'n_test'])} held-out crops): these phantoms' organs differ mostly in intensity and "
    f"position, which random features carry too."))

# %% [markdown]
# Getting all three at once at 64³ needs many views per step for many steps, which is what the paper's 8 GPUs buy.
# *Try:* `decoder = "unet"` with the demo settings, and compare its reconstructions with the paper's decoder after
# the same steps; or set `init_from` in `PretrainConfig` to a finished run's `checkpoints/last.pt` and continue it at
# a larger `roi_size`.

# %% [markdown]
# ## The instructor's precomputed run
# A short run shows the mechanics; the instructor's finished run (if installed in
# `runs_dir()/precomputed/ssl_pretraining`, e.g. the demo settings) shows where they lead. Its curves are drawn
# against the baselines of *its* batch, and its model reconstructs the same views as above.

# %% tags=["precomputed"]
pre = None
if show_precomputed:
    pre = find_precomputed("ssl_pretraining")
    print(f"instructor's precomputed run: {pre}" if pre else
          f"no precomputed run in {runs_dir() / 'precomputed' / 'ssl_pretraining'}: only this notebook's run is shown")
pre_ckpt = safe_torch_load(pre / "checkpoints" / "last.pt") if pre else None
pd.Series({**pre_ckpt["run"], "steps": pre_ckpt["step"], "lr": pre_ckpt["config"]["lr"]},
          name="instructor's precomputed run").astype(str).to_frame() if pre_ckpt else None

# %% [markdown]
# *Look at:* how far below the chance lines the instructor's curves end, and whether its reconstructed boxes
# show more structure than the short run's.

# %% tags=["precomputed"]
pre_l1 = None
if pre_ckpt:
    pre_hist = pd.read_csv(pre / "metrics.csv")
    pre_n = ssl_batch_subvolumes(pre_ckpt["run"]["batch_size"], pre_ckpt["run"]["num_samples"])
    pre_fill, pre_constant = (sum(trivial_fill_l1(v.target, v.mask, region="all", copy_visible=c) for v in (v1, v2))
                              / 2 for c in (True, False))  # measured on the views above, as for this run
    pre_lines = {"rotation": {"chance ln 4": rotation_chance()},
                 "contrastive": {f"chance ln(2·{pre_n}-1)": contrastive_chance(pre_n)},
                 "reconstruction": {"constant": pre_constant, "trivial fill": pre_fill},
                 "loss": {"sum of chance levels": rotation_chance() + contrastive_chance(pre_n) + pre_constant}}
    fig = plot_learning_curves(pre_hist, columns=list(pre_lines), smoothing=0.6, ncols=4)
    fig.suptitle(f"instructor's precomputed run ({pre_ckpt['step']} steps)", fontsize=10)
    display(add_baselines(fig, pre_lines))
    pre_model = ssl_model_from_checkpoint(pre_ckpt, pre / "checkpoints" / "last.pt", dev)  # the file read above
    with torch.no_grad():
        pre_rec = pre_model(v1.image)["reconstruction"].clamp(0, 1)
    pre_l1 = float((pre_rec - v1.target).abs()[v1.mask.expand_as(pre_rec)].mean())
    print(f"L1 inside the boxes: instructor's precomputed run {pre_l1:.3f}, "
          f"trivial fill {trivial_fill_l1(v1.target, v1.mask):.3f}")
    fig = plot_ssl_panels(x, v1.target, v1.image, pre_rec, rotation_labels=v1.rotation.tolist(), mask=v1.mask,
                          window_preset=SCALED_SOFT_TISSUE)
    fig.suptitle("reconstructed by the instructor's precomputed run", fontsize=10)
    display(fig)

# %%
if pre_l1 is not None:
    print(f"L1 inside the boxes: instructor's precomputed run {pre_l1:.3f}, this run {l1_inside:.3f}, "
          f"trivial fill {fill_inside:.3f}")

# %% [markdown]
# ## The exported encoder
# > **⏭ Skip if behind**: one check that notebook 03 can load the file; run it and move on.
#
# `pretrain` wrote `model_swinvit.pt` in the layout of the official weights, so MONAI's
# `SwinUNETR.load_from` takes it as is. We check that every encoder tensor arrived.

# %%
net = SwinUNETR(in_channels=1, out_channels=14, feature_size=feature_size)
net.load_from(torch.load(result.encoder_path, weights_only=True))
ours = {k: v.cpu() for k, v in model.state_dict().items() if k.startswith("swinViT.")}
theirs = {k: v for k, v in net.state_dict().items() if k.startswith("swinViT.")}
matched = sum(torch.equal(ours[k], theirs[k]) for k in theirs)
print(result.encoder_path)
print(f"{matched} of {len(theirs)} encoder tensors matched")

# %% [markdown]
# ## The numbers of this run

# %%
last = hist.iloc[-1]
pd.DataFrame({"this run": [result.fit.step, f"{last['rotation']:.4f}", f"{last['contrastive']:.4f}",
                           f"{last['reconstruction']:.4f}", f"{l1_inside:.4f}", f"{matched}/{len(theirs)}"],
              "baseline": ["", f"{rotation_chance():.4f} (chance)", f"{contrastive_chance(n_sub):.4f} (chance)",
                           f"{constant:.4f} (constant) / {fill_all:.4f} (trivial fill)",
                           f"{fill_inside:.4f} (trivial fill)", ""]},
             index=["steps", "rotation loss (last)", "contrastive loss (last)", "reconstruction L1 (last)",
                    "L1 inside cut-outs", "encoder tensors exported"])

# %% [markdown] tags=["selfcheck"]
# ## Self-check
# **1.** A run's contrastive loss is 1.9 and another's 1.1. Is the first run worse?
# <details><summary>Answer</summary>
#
# Not necessarily: the chance level ln(2N − 1) grows with the number N of sub-volumes contrasted per step (ln 3 for
# N = 2, ln 7 for N = 4). Read each loss against its own chance line, never against another run's raw value.
# </details>
#
# **2.** The rotation loss starts *above* ln 4 ≈ 1.386. How can a network be worse than guessing?
# <details><summary>Answer</summary>
#
# A randomly initialised head does not output the uniform 1/4 per class; any fixed non-uniform guess scores worse
# than ln 4 on uniformly drawn rotations. The loss falls to the chance line first, then, once it learns, below it.
# </details>
#
# **3.** The reconstruction L1 is averaged over all voxels. Why look at the L1 *inside the boxes* as well?
# <details><summary>Answer</summary>
#
# Most voxels are visible, and copying them is not inpainting. The L1 inside the boxes, against the trivial fill
# (mean grey in every box), measures whether the model fills the holes from context; the whole-volume L1 mixes
# that with copying and changes with the cut-out share.
# </details>

# %% [markdown]
# ## Recap
# We saw why each proxy task needs anatomy, how the Swin encoder's windows and stages are laid out, and each
# task written out by hand and checked against the library. We then cropped sub-volumes from CT, made two
# rotated and cut-out views of each on the device, trained the encoder on the three losses with the shared
# `fit` loop and exported it for fine-tuning. The table above puts this run's last losses beside what a model
# that learned nothing would score: with a handful of volumes and steps they only start to move away from
# it. The three recorded runs showed what longer runs buy on a CPU: rotation and contrastive coding need many views
# per step; inpainting needs a decoder that is not starved at a one-voxel bottleneck (Swin UNETR's, with skips);
# a run continued from a cheaper one at a smaller size (progressive resizing) learns rotation where one from
# random weights did not; at this budget none gave features that name organs better than random ones. The paper's
# encoder saw 5,050 CTs on 8 GPUs. Next: notebook 03 fine-tunes Swin UNETR on the labeled cohort, from this encoder
# (`runs_dir()/ssl_pretraining/model_swinvit.pt`) with `init = "ssl"` and the same `feature_size` (notebook 06 does
# exactly that), or from scratch; try more `max_steps`, `roi_size = 96` and `feature_size = 48` on a GPU, or
# `torchrun --nproc-per-node N -m swinunetr_lib.pretrain ...` for several GPUs.
