# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.1
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Looking at CT, labels, SSL views and predictions in 2D and 3D
#
# **Goal.** Learn to *see* what the model sees: a real abdominal CT with its 13 BTCV organ labels in
# tri-planar views and as a 3D surface rendering, the phantom cohort used for the demos, the
# self-supervised proxy tasks (rotation, cut-out, reconstruction) and a fine-tuned model's prediction
# next to the ground truth with an error map. Every figure comes from `swinunetr_lib.viz.figures` /
# `swinunetr_lib.viz.surfaces`, so the same pictures can be made for your own data in one line each.
# Sections that need checkpoints use the instructor's precomputed runs when they are unpacked (`make unpack`,
# into `runs_dir()/precomputed`), else your own runs from notebooks 02 and 03, and say which model they show;
# without either they are skipped with a message.
#
# **Kind:** tutorial, with two exercises (predict first; the workshop version is
# `notebooks/exercises/05_visualize_3d_ex.ipynb`). **Runtime:** about 30 s on CPU (2 cores) without checkpoints,
# plus about 20 s per model used for SSL reconstruction / prediction; a few seconds on a GPU.
# Terms: [glossary](../docs/glossary.md).

# %%
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from IPython.display import display

from swinunetr_lib.data.cohort import build_demo_cohort
from swinunetr_lib.data.example_data import fetch_example
from swinunetr_lib.data.labels import totalseg_to_btcv
from swinunetr_lib.finetune.cases import preprocess_cases
from swinunetr_lib.finetune.sliding_window import sliding_window_predict
from swinunetr_lib.finetune.task_presets import TaskPreset
from swinunetr_lib.infer.predict import load_finetuned
from swinunetr_lib.notebooks.precomputed import choose_run
from swinunetr_lib.notebooks.prediction import check_prediction
from swinunetr_lib.paths import resolve_path
from swinunetr_lib.paths import runs_dir as default_runs_dir
from swinunetr_lib.pretrain.dataloader import ssl_transforms
from swinunetr_lib.pretrain.model import load_ssl_model
from swinunetr_lib.pretrain.transforms import SSLViewTransform, make_generator
from swinunetr_lib.utils.device import resolve_device, seed_everything
from swinunetr_lib.viz import curves as viz_metrics
from swinunetr_lib.viz import figures as viz
from swinunetr_lib.viz import niivue as viz_niivue
from swinunetr_lib.viz import surfaces as viz3d
from swinunetr_lib.viz.captions import captioned

# %% tags=["parameters"]
window_preset: str = "abdomen"  # CT window for display: abdomen (W400/L40), btcv (HU -175..250), lung, bone
n_cohort_cases: int = 4  # how many demo-cohort cases to show side by side
surface_step_size: int = 1  # marching-cubes step for the 3D surfaces, 2 is faster and coarser
runs_dir: str = ""  # run folder holding ssl_pretraining/ and finetune_btcv/; empty means $SWINUNETR_RUNS_DIR or
                    # runs/notebooks
roi_size: list[int] = [64, 64, 64]  # SSL crop size for the reconstruction panels (divisible by 32)
viewer: str = "auto"  # 3D viewer: auto (NiiVue if installed, else itkwidgets if it can load, else static), niivue,
                      # itkwidgets, static
seed: int = 0  # random seed for the SSL augmentations
device: str = "auto"  # "auto" picks CUDA when present
show_precomputed: bool = True  # prefer the instructor's finished runs (<runs_dir>/precomputed) to your own when
                               # unpacked

# %% [markdown]
# ## 1 · The real example CT and its organs
# A small real CT (TotalSegmentator test file, 3 mm voxels, RAS) with TotalSegmentator's labels
# remapped by name to the 13 BTCV organs. The remap report says which organs this scan holds.

# %%
seed_everything(seed)
ct_nii = nib.load(fetch_example("example_ct_sm.nii.gz"))
ct = np.asarray(ct_nii.dataobj, dtype=np.float32)
seg, report = totalseg_to_btcv(np.asarray(nib.load(fetch_example("example_seg.nii.gz")).dataobj))
spacing = tuple(float(s) for s in ct_nii.header.get_zooms()[:3])
print(f"CT {ct.shape} voxels of {spacing} mm, HU {ct.min():.0f}..{ct.max():.0f}; {report.summary()}")

# %% [markdown]
# Tri-planar view through the organs' centre of mass; one colour per organ, the same in every figure.

# %%
captioned(viz.plot_triplanar(ct, seg, spacing=spacing, window_preset=window_preset, title="example CT, BTCV labels"),
          look_at="radiological convention: the liver (the largest organ) on the image's left is the patient's right; "
                  "anterior is up in the axial slice, superior up in the coronal and sagittal ones. Check the "
                  "legend: which organ of the 13 has no colour here?",
          alt="Axial, coronal and sagittal slices of a real abdominal CT with 12 BTCV organs coloured over the grey "
              "image and a legend of organ names")

# %% [markdown]
# The window decides what is visible: soft tissue (abdomen), air-filled lung, or bone.

# %%
captioned(viz.plot_windows(ct, index=viz.center_of_mass_index(seg)[2], presets=("abdomen", "lung", "bone")),
          look_at="one slice, three windows: organs differ only in the abdomen window; air detail only in the lung "
                  "window; the bone window shows cortex and marrow of the vertebra and ribs.",
          alt="The same axial CT slice three times, under the abdomen, lung and bone windows")

# %% [markdown]
# ## 2 · The same labels in 3D
# > **⏭ Skip if behind**: section 7's interactive viewer shows the same in 3D.
#
# Marching cubes per organ (scikit-image), drawn with matplotlib: it works headless, in papermill and in reports.

# %%
captioned(viz3d.plot_label_surfaces(seg, spacing=spacing, step_size=surface_step_size, title="example CT organs"),
          look_at="the organs' 3D shapes and neighbours: the liver wrapping the gallbladder, the two kidneys on "
                  "either side of the aorta and vena cava, the stomach and spleen on the patient's left.",
          alt="3D surface rendering of the example CT's organ labels, one colour per organ, with a legend")

# %% [markdown]
# ## 3 · The phantom cohort
# > **⏭ Skip if behind**: notebook 01 showed the phantoms.
#
# The demo cohort (built here if missing, idempotent) pairs the real scan with synthetic phantoms that
# carry all 13 organs. Phantoms are *not* patient data; they let the tutorials train in minutes on a CPU.

# %% tags=["precomputed"]
cohort = build_demo_cohort()
entries = json.loads(cohort.finetune_manifest.read_text())["training"][:n_cohort_cases]
vols = [np.asarray(nib.load(cohort.root / e["image"]).dataobj, dtype=np.float32) for e in entries]
labs = [np.asarray(nib.load(cohort.root / e["label"]).dataobj) for e in entries]
pd.DataFrame({"case": [Path(e["image"]).name for e in entries], "shape": [v.shape for v in vols],
              "organs": [int(len(np.unique(lab)) - 1) for lab in labs]})

# %%
captioned(viz.plot_slices(vols, titles=[Path(e["image"]).name.replace(".nii.gz", "") for e in entries], labels=labs,
                          window_preset=window_preset, axis="coronal"),
          look_at="real versus synthetic: the phantoms' organs are smooth shapes with flat textures, the real scan "
                  "has vessels, fat and noise; each phantom seed gives a body of another size and shape.",
          alt="Coronal slices of the first demo-cohort cases side by side, each with its organ labels in colour")

# %%
phantom = [i for i, e in enumerate(entries) if "phantom" in e["image"]]
p = phantom[0] if phantom else 0
captioned(viz.plot_triplanar(vols[p], labs[p],
                             spacing=nib.load(cohort.root / entries[p]["image"]).header.get_zooms()[:3],
                             window_preset=window_preset, title=Path(entries[p]["image"]).name),
          look_at="a phantom carries all 13 organs, the esophagus and both adrenal glands included, at the places "
                  "the real CT has them (liver on the image's left = the patient's right).",
          alt="Axial, coronal and sagittal slices of one synthetic phantom with its 13 organ labels in colour")

# %% [markdown]
# ## 4 · The self-supervised proxy tasks (paper Sec. 3, Fig. 1)
# The pretraining input is a crop, rotated by 0/90/180/270° in the axial plane, with random inner
# cut-outs; the network predicts the rotation, contrasts two views and reconstructs the cut-out regions.

# %% [markdown] tags=["exercise"]
# **Exercise 1 (change, 5 min).** The views below cut boxes out of each crop in one pass of up to 30 % of its
# voxels (the paper's setting). Before the next cell prints it: **predict** the share of voxels cut out of a view,
# as a fraction (0.3 = 30 %), and write it into `prediction`. The check, after the panels, **changes** the seed.

# %% tags=["solution", "prediction"]
# stub: prediction = None  # the cut-out share of a view, e.g. 0.3
prediction = 0.3  # a worked guess: the maximum, 30 %

# %% tags=["precomputed"]
# The pretraining pipeline itself: native grid, HU [-1000, 1000] -> [0, 1], one random roi_size crop per volume.
prep = ssl_transforms(roi_size, num_samples=1).set_random_state(seed)
crops = [prep({"image": str(cohort.root / e["image"])})[0]["image"] for e in entries[:2]]  # (1, *roi_size) each
batch = torch.stack([torch.as_tensor(c) for c in crops])  # (B, 1, *roi_size)
view = SSLViewTransform()(batch, make_generator("cpu", seed))
print(f"batch {tuple(batch.shape)}, rotations {view.rotation.tolist()}, "
      f"cut-out {view.mask.float().mean():.0%} of voxels")

# %% tags=["precomputed"]
run_root = resolve_path(runs_dir) if runs_dir else default_runs_dir()
ssl_run = choose_run("ssl_pretraining", run_root, precomputed=show_precomputed)  # fit's full checkpoint, heads too
if ssl_run:
    ssl_model = load_ssl_model(ssl_run.folder / "checkpoints" / "last.pt")  # tensors and plain values only
    with torch.no_grad():
        reconstruction = ssl_model(view.image)["reconstruction"]
    print(f"reconstructions by {ssl_run.describe()}")
else:
    reconstruction = None
    print(f"No SSL checkpoint under {run_root / 'ssl_pretraining'} (nor a precomputed one): run notebook 02 first; "
          "showing the proxy-task inputs without reconstructions.")

# %% tags=["precomputed"]
captioned(viz.plot_ssl_panels(batch, view.target, view.image, reconstruction, rotation_labels=view.rotation.tolist(),
                              mask=view.mask, window_preset=viz.SCALED_SOFT_TISSUE),  # slice the boxes hide most of
          look_at="per row: the crop, the same crop turned by the rotation written above it, the cut-out boxes "
                  "(outlined) filled with noise or another crop's content, and, with a pretrained model, its "
                  "reconstruction: do organs continue into the boxes, or is a box a flat grey?",
          alt="A grid of CT crops, one row per crop: original, rotated, with cut-out boxes, and the model's "
              "reconstruction when a checkpoint exists, in a soft-tissue window")

# %% [markdown] tags=["exercise"]
# **Exercise 1, check.** **Compare** the printed share with your prediction, then **change** the seed: draw 20
# views of the same batch with seeds 0–19 and look at the mean and the range of their cut-out shares.

# %% tags=["solution"]
# stub: shares = pd.Series(dtype=float)  # complete: for s in range(20), SSLViewTransform()(batch, make_generator("cpu",
# stub: # s)).mask.float().mean(), one value per seed
# stub: check_prediction(prediction, float(view.mask.float().mean()), what="cut-out share of this view")
# stub: shares.describe()
shares = pd.Series([float(SSLViewTransform()(batch, make_generator("cpu", s)).mask.float().mean())
                    for s in range(20)], name="cut-out share")
check_prediction(prediction, float(view.mask.float().mean()), what="cut-out share of this view")
check_prediction(prediction, shares.mean(), what="mean over 20 seeds")
shares.describe().round(3)

# %% [markdown] tags=["solution"]
# The 30 % is a maximum, not the share: each view draws its target share uniformly between 0 and the maximum and
# adds boxes until it is reached, so views range from almost intact to heavily cut, with a mean well below the
# maximum (the paper: 13.5 % on average). One view tells little; the spread over seeds is the setting.

# %% [markdown] tags=["exercise"]
# **Exercise 2 (observe, 5 min).** Section 5 predicts a held-out case and draws an
# [error map](../docs/glossary.md#error-map). Before it appears: **predict** which organ has the most missed voxels
# (false negatives: the organ in the truth, predicted as something else) and write its BTCV name into
# `prediction`. The check follows the pictures.

# %% tags=["solution", "prediction"]
# stub: prediction = None  # a BTCV organ's name, e.g. "pancreas"
prediction = "liver"  # a worked guess: the largest organ has the most voxels to miss

# %% [markdown]
# ## 5 · A fine-tuned model's prediction versus the ground truth
# The instructor's fine-tuned model when it is unpacked, else the one notebook 03 wrote (`finetune_btcv/<run>/model.pt`;
# notebook 06's short sweep runs only when there is no other): we predict one held-out case with
# [sliding-window](../docs/glossary.md#sliding-window) inference and draw the prediction, the truth and an error map.
# The line below names the model.

# %% tags=["precomputed"]
ft_run = choose_run("finetune_btcv", run_root, precomputed=show_precomputed)
if ft_run:
    model, meta = load_finetuned(ft_run.folder / "model.pt", device="cpu")
    preset = TaskPreset.from_dict(meta["preset"])
    val_entry = json.loads(cohort.finetune_manifest.read_text())["validation"][0]
    case = preprocess_cases([{k: str(cohort.root / val_entry[k]) for k in ("image", "label")}], preset)[0]
    logits = sliding_window_predict(model, case["image"][None], preset.roi_size, device=resolve_device(device))
    pred = logits.argmax(1)[0].cpu().numpy()
    truth = case["label"][0].numpy().astype(np.int64)
    print(f"prediction by {ft_run.describe()} on {val_entry['image']}")
else:
    pred = None
    print(f"No fine-tuned model under {run_root / 'finetune_btcv'}: run notebook 03 first; skipping predictions.")

# %% tags=["precomputed"]
if pred is not None:
    display(captioned(viz.plot_prediction_vs_truth(case["image"][0].numpy(), pred, truth, window_preset=(1.0, 0.5)),
                      look_at="the error map (right): sky blue voxels are organ the model missed, vermillion ones "
                              "organ it invented, yellow ones the wrong organ. Which organ has the most sky blue? "
                              "Errors along organ borders are common; whole missing organs are the real failures.",
                      alt="Ground truth and prediction label overlays on the same CT slice, and an error map "
                          "colouring missed, spurious and wrong-organ voxels"))
    display(captioned(viz3d.plot_label_surfaces(pred, spacing=preset.spacing or (1.0, 1.0, 1.0),
                                                step_size=surface_step_size, title="prediction"),
                      look_at="the predicted organs in 3D: compare their shapes with the ground truth's surfaces "
                              "in section 2; fragments and holes show where the model is unsure.",
                      alt="3D surface rendering of the model's predicted organ labels, one colour per organ"))
else:
    print("(no prediction to show)")

# %% [markdown] tags=["exercise"]
# **Exercise 2, check.** **Count** each organ's missed voxels in `truth` and `pred` and compare the organ with
# the most with your prediction; then find it in the error map above (missed voxels are drawn in one colour).

# %% tags=["solution"]
# stub: # complete: a pd.Series, for each organ k of preset.labels (k > 0), of ((truth == k) & (pred != k)).sum()
# stub: missed = None
# stub: check_prediction(prediction, None if missed is None else missed.idxmax(),
# stub:                  what="organ with the most missed voxels")
if pred is not None:
    missed = pd.Series({name: int(((truth == k) & (pred != k)).sum()) for k, name in preset.labels.items() if k},
                       name="missed voxels").sort_values(ascending=False)
    check_prediction(prediction, missed.idxmax(), what="organ with the most missed voxels")
    display(missed.head(5).to_frame())
else:
    missed = None
    print("no prediction to count (run notebook 03 or unpack the instructor's runs)")

# %% [markdown] tags=["solution"]
# With a short run the liver's size usually puts it first: a few missed border voxels on a large organ are many
# voxels. With a longer run the order changes: the organs the model has not found at all (small and thin ones)
# miss *all* their voxels, while the liver misses only a rim. The count is in voxels, not a share: divide by each
# organ's size to compare organs, as Dice does.

# %% [markdown]
# The same prediction in 3D, next to the ground truth: two linked NiiVue views (the crosshair and the 3D camera of
# one follow the other). The image is the model's input, scaled to [0, 1], hence the window (width 1, level 0.5).

# %%
niivue_ok, niivue_why = viz_niivue.niivue_status()
if pred is None:
    print("(no prediction to show)")
elif not niivue_ok or viewer not in ("auto", "niivue"):
    print(f"(no 3D comparison: {niivue_why if not niivue_ok else f'viewer={viewer!r}'}; the figures above show it)")
else:
    display(viz_niivue.niivue_compare(case["image"][0].numpy(), pred, truth, spacing=preset.spacing or (1.0, 1.0, 1.0),
                                      window_preset=(1.0, 0.5)))

# %% [markdown]
# *What to look at:* click an organ in one view and the crosshair moves in both; an organ coloured on the left
# (truth) but grey on the right (prediction) was missed. The views are radiological (the patient's right on the
# screen's left, letters on the edges).

# %% [markdown]
# ## 6 · Learning curves of the runs
# > **⏭ Skip if behind**: notebooks 02–04 showed their curves.
#
# Every `fit` run writes `metrics.csv` (a `step` column plus one column per logged scalar).

# %% tags=["precomputed"]
metric_files = sorted(f for f in run_root.rglob("metrics.csv") if (f.parent / "checkpoints").is_dir())  # fit runs
if metric_files:
    display(captioned(viz_metrics.plot_learning_curves({str(f.parent.relative_to(run_root)): f
                                                        for f in metric_files[:4]}),
                      look_at="one panel per logged number, one line per run: whether each loss still falls at "
                              "the last step (the run could go on) or has flattened.",
                      alt="Learning curves of up to four runs: each logged loss and score against the step"))
else:
    print(f"No metrics.csv under {run_root}: run notebooks 02/03 to see learning curves.")

# %% [markdown]
# ## 7 · Interactive views
# A slice scroller (ipywidgets): pick the view, drag the slider.

# %%
viz3d.slice_scroller(ct, seg, window_preset=window_preset, spacing=spacing)

# %% [markdown]
# The 3D viewer: NiiVue (`ipyniivue`, installed with the project; its JavaScript comes with the Python package, so it
# works without internet): the three planes and a 3D rendering, organs in the same colours as every figure. Click
# to move the crosshair, scroll through slices, drag in the 3D view to turn it; the controls set the CT window, the
# layout and the label opacity. Without ipyniivue, itkwidgets' `view(image, label_image=...)` when it is installed
# (`pip install -e ".[viewer]"`) and its JavaScript can be fetched from the web; otherwise a one-line message and the
# static fallback (surface rendering + slice scroller).

# %%
viz3d.show_3d(ct, seg, spacing=spacing, viewer=viewer, window_preset=window_preset)

# %% [markdown] tags=["selfcheck"]
# ## Self-check
# **1.** In the error map, what is the difference between a *missed* voxel and a *wrong organ* voxel?
# <details><summary>Answer</summary>
#
# Missed: the truth has an organ there and the model predicts background. Wrong organ: the model predicts an
# organ there, but another one than the truth. Spurious voxels are the reverse of missed: an organ predicted on
# background.
# </details>
#
# **2.** On which side of the screen is the patient's right in the slice figures, and why does it matter?
# <details><summary>Answer</summary>
#
# On the screen's left (radiological convention, as radiology workstations show it): the liver, on the patient's
# right, appears on the left. Reading a picture in the other convention swaps left and right organs.
# </details>
#
# **3.** Why does the 3D view use the same organ colours as every 2D figure?
# <details><summary>Answer</summary>
#
# So that an organ is recognised by its colour in every figure of the suite: one palette (`viz.BTCV_COLORS`) for
# slices, surfaces and the viewer, and no legend to look up again.
# </details>

# %% [markdown]
# *What to look at in the viewer:* it is in the **radiological convention**, like the figures above and a
# radiology workstation: the patient's right (**R**) on the screen's left, so the liver is on the left of the axial
# and coronal slices. The white letters on the slice edges (R/L, A/P for anterior/posterior, S/I for
# superior/inferior) say which way each edge points, and the cube in the 3D view is lettered the same way.

# %% [markdown]
# ## Recap
# - One colour per BTCV organ everywhere (`viz.BTCV_COLORS`); windows `abdomen`, `btcv`, `lung`, `bone`.
# - `viz3d.show_3d` picks the interactive viewer that can load: NiiVue (offline), itkwidgets (online), or static
#   pictures; `viz_niivue.niivue_compare` puts a prediction and its ground truth side by side in 3D.
# - `viz.plot_triplanar` / `viz3d.plot_label_surfaces` show any CT + label map; `viz.figure_to_rgb` turns a
#   figure into pixels, which is how the tests check that labels are drawn where they are.
# - SSL panels show what the encoder is asked to undo; after notebook 02 they include its reconstructions.
# - With a fine-tuned model (notebook 03) the error map shows *where* it is wrong: sky blue missed,
#   vermillion spurious, yellow wrong organ (colours that stay apart for colour-blind viewers). Next: compare
#   scratch vs SSL initialisation in notebook 06
#   (`viz_metrics.plot_label_efficiency`) and per-organ scores with `viz_metrics.plot_organ_metrics`.
