# %% [markdown]
# # 02 · Self-supervised pretraining of the Swin UNETR encoder
#
# **Goal.** Pretrain the Swin UNETR encoder on unlabeled CT with the paper's three proxy tasks
# (Tang et al., CVPR 2022, Sec. 3): predict the rotation of a sub-volume (0/90/180/270° about the
# z axis), pull two augmented views of the same sub-volume together (contrastive coding), and inpaint
# cut-out boxes (masked volume inpainting). We look at the augmented views, train with the library's
# one training loop (`swinunetr_lib.train.fit`, via `swinunetr_lib.pretrain.pretrain`), plot the three
# losses, compare reconstructions with the originals and export the encoder as `model_swinvit.pt`,
# the file notebook 03 can start fine-tuning from.
#
# **Kind:** tutorial. **Runtime:** smoke parameters ~1 min on 2 CPU cores; demo parameters (80 steps, ~12 s each) ~16 min
# on CPU, ~1-2 min on one GPU. The paper trains 96³ sub-volumes, feature size 48, for far longer on
# 5,050 CTs: these runs show the mechanics, not a useful encoder.

# %%
import pandas as pd
import torch
from monai.networks.nets import SwinUNETR

from swinunetr_lib.data.cohort import build_demo_cohort
from swinunetr_lib.paths import runs_dir
from swinunetr_lib.pretrain import PretrainConfig, pretrain
from swinunetr_lib.ssl_data import ssl_dataloader
from swinunetr_lib.ssl_model import SSLModel
from swinunetr_lib.ssl_transforms import InnerCutout, SSLViewTransform, TwoViewTransform, make_generator
from swinunetr_lib.utils import resolve_device, safe_torch_load
from swinunetr_lib.viz import plot_ssl_panels
from swinunetr_lib.viz_metrics import plot_learning_curves

# %% tags=["parameters"]
data_manifest: str = ""  # pretraining manifest JSON with a training list of images; empty means the demo cohort
roi_size: int = 64  # cubic sub-volume side in voxels (paper: 96); divisible by 32
feature_size: int = 12  # Swin UNETR embedding size (paper: 48); divisible by 12
batch_size: int = 1  # volumes per step (official: 2); each gives num_samples sub-volumes
num_samples: int = 2  # random sub-volumes cropped per volume (official: 2)
max_steps: int = 40  # optimizer steps (paper: 450k+ iterations on 5,050 CTs)
warmup_steps: int = 5  # linear warm-up steps before the cosine decay (paper: 500)
lr: float = 4e-4  # AdamW learning rate (paper: 4e-4)
seed: int = 0  # seed for data order, augmentations and initialisation
device: str = "auto"  # "auto" (CUDA if present), "cpu" or "cuda"
resume: bool = False  # continue from runs_dir()/ssl_pretraining/checkpoints/last.pt if it exists
cutout_mode: str = "single"  # "single" (one pass, as the paper: mean 13.5 % cut out) or "official" (two passes, as the official code: mean 22 %)
cutout_fraction: float = 0.3  # max fraction of a sub-volume cut out per pass (paper/official: 0.3)
cutout_min_block: float = 0.05  # smallest cutout box side, fraction of each axis (official: 0.05)
cutout_max_block: float = 0.25  # largest cutout box side, fraction of each axis (official: 0.25)
cutout_noise_prob: float = 0.5  # "single" mode: probability a box gets noise rather than another sample's content
contrastive_negatives: str = "global"  # "global" (all GPUs' batches) or "per_gpu" (local batch only, as the official code)

# %% [markdown]
# ## The data
# Without a manifest we use the demo cohort (real example CTs plus labeled phantoms, built once by
# notebook 01 or here). The pipeline is MONAI's: load → RAS → HU [-1000, 1000] → [0, 1] → crop to the
# voxels above -1000 HU (drops the padding outside the scanner's field of view, as the official code) →
# pad → `num_samples` random `roi_size`³ crops per volume.

# %%
if not data_manifest:
    data_manifest = str(build_demo_cohort().pretrain_manifest)
dev = resolve_device(device)
loader = ssl_dataloader(data_manifest, roi_size=roi_size, batch_size=batch_size, num_samples=num_samples, seed=seed)
x = next(iter(loader))["image"].as_tensor().to(dev)
print(f"{len(loader.dataset)} volumes; one batch: {tuple(x.shape)} (B, C, X, Y, Z), range [{x.min():.2f}, {x.max():.2f}]")

# %% [markdown]
# ## Two augmented views
# Each view is rotated about z (label 0-3 = k·90°) and has voxels cut out in random boxes, filled with
# noise or with another sub-volume's content: with `cutout_mode="single"` one pass of up to ~30 % (mean
# 13.5 %), with `"official"` two passes as the official code (mean 22 %). Both are made on the tensor's
# device for the whole batch at once.

# %%
cutout = InnerCutout(max_fraction=cutout_fraction, min_block=cutout_min_block, max_block=cutout_max_block,
                     noise_prob=cutout_noise_prob, mode=cutout_mode)
v1, v2 = TwoViewTransform(SSLViewTransform(cutout=cutout))(x, make_generator(dev, seed))
print(f"cut out: view 1 {v1.mask[0].float().mean():.1%}, view 2 {v2.mask[0].float().mean():.1%} of the voxels")
display(plot_ssl_panels(x, v1.target, v1.image, rotation_labels=v1.rotation.tolist(), max_samples=2))
plot_ssl_panels(x, v2.target, v2.image, rotation_labels=v2.rotation.tolist(), max_samples=2)

# %% [markdown]
# ## Pretraining
# `pretrain` builds the SSL model (MONAI's SwinTransformer exactly as inside SwinUNETR, plus a rotation
# head, a contrastive head and a reconstruction decoder) and calls `fit`, which handles the optimizer,
# warm-up + cosine schedule, mixed precision on GPUs, checkpoints and logs.

# %%
run_dir = runs_dir() / "ssl_pretraining"
cfg = PretrainConfig(data_manifest=data_manifest, run_dir=str(run_dir), device=device, roi_size=roi_size,
                     feature_size=feature_size, batch_size=batch_size, num_samples=num_samples, max_steps=max_steps,
                     warmup_steps=warmup_steps, lr=lr, seed=seed, resume=resume, checkpoint_every=max(1, max_steps // 4),
                     cutout_mode=cutout_mode, cutout_fraction=cutout_fraction, cutout_min_block=cutout_min_block,
                     cutout_max_block=cutout_max_block, cutout_noise_prob=cutout_noise_prob,
                     contrastive_negatives=contrastive_negatives)
result = pretrain(cfg)
print(f"{result.fit.step} steps; last loss {result.fit.metrics['loss']:.3f}; checkpoint {result.fit.last_checkpoint}")

# %% [markdown]
# ## The three losses
# Rotation (cross-entropy, chance level ln 4 ≈ 1.39), contrastive (NT-Xent, temperature 0.5) and
# reconstruction (L1) all feed the total with weight 1.

# %%
hist = pd.DataFrame([r for r in result.fit.history if "loss" in r])
display(plot_learning_curves(hist, columns=["loss", "rotation", "contrastive", "reconstruction"], smoothing=0.6, ncols=4))
hist.set_index("step")[["loss", "rotation", "contrastive", "reconstruction"]].iloc[[0, -1]]

# %% [markdown]
# ## Inpainting: reconstructions next to the originals
# The decoder sees the corrupted view and must return the uncorrupted (rotated) one.

# %%
model = SSLModel(feature_size=feature_size).to(dev).eval()
model.load_state_dict(safe_torch_load(result.fit.last_checkpoint)["model"])
with torch.no_grad():
    rec = model(v1.image)["reconstruction"].clamp(0, 1)
print(f"L1 inside the cut-out boxes: {(rec - v1.target).abs()[v1.mask.expand_as(rec)].mean():.3f}")
plot_ssl_panels(x, v1.target, v1.image, rec, rotation_labels=v1.rotation.tolist())

# %% [markdown]
# ## The exported encoder
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
# ## Recap
# We cropped sub-volumes from CT, made two rotated and cut-out views of each on the device, trained
# the encoder on rotation, contrastive and inpainting losses with the shared `fit` loop, and exported
# the encoder for fine-tuning. With a handful of volumes and steps the losses only start to fall and
# the reconstructions are blurry; the paper's encoder saw 5,050 CTs. Next: notebook 03 fine-tunes
# Swin UNETR on the labeled cohort, from this encoder (`runs_dir()/ssl_pretraining/model_swinvit.pt`)
# with `init = "ssl"` and the same `feature_size` (notebook 06 does exactly that), or from scratch;
# try more `max_steps`, `roi_size = 96` and `feature_size = 48` on a GPU, or
# `torchrun --nproc-per-node N -m swinunetr_lib.pretrain ...` for several GPUs.
