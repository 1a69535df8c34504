# %% [markdown]
# **Generated file, do not edit:** the exercise version of `notebooks/00_quickstart.py`, written by `python -m swinunetr_lib.notebooks.exercises generate`.
# Edit `notebooks/00_quickstart.py` (cells tagged `exercise` / `solution`) and regenerate. The worked solutions are in
# `notebooks/00_quickstart.ipynb`, the answers for instructors in `docs/workshop_answers.md`.

# %% [markdown]
# # 00 · Quickstart: a real abdominal CT and its organ labels (exercises)
#
# **Goal.** Load a real CT scan, check its geometry (shape, voxel spacing, orientation, Hounsfield range) and
# look at it in the three standard planes with its organ labels overlaid — the data the rest of the suite
# pretrains on (notebook 02) and segments (notebooks 03–04). The scan is a TotalSegmentator test file,
# fetched and checksum-verified by `swinunetr_lib.data.example_data` (from the local mirror folder when there is
# one, else downloaded once into a cache).
#
# **Kind:** tutorial, with one exercise (predict first; the workshop version is
# `notebooks/exercises/00_quickstart_ex.ipynb`). **Expected runtime:** ~10 s on CPU, the same on a GPU (nothing is
# trained). Terms: [glossary](../../docs/glossary.md).

# %%
import nibabel as nib
import numpy as np
import pandas as pd

from swinunetr_lib.data.example_data import fetch_example
from swinunetr_lib.data.labels import totalseg_to_btcv
from swinunetr_lib.notebooks.prediction import check_prediction
from swinunetr_lib.viz.captions import captioned
from swinunetr_lib.viz.figures import plot_triplanar, plot_windows

# %% tags=["parameters"]
image_name: str = "example_ct_sm.nii.gz"  # example file to load (see
                                          # ../shared/data/totalsegmentator_examples/README.md)
label_name: str = "example_seg.nii.gz"  # its TotalSegmentator label map, remapped to the 13 BTCV organs below
window_preset: str = "abdomen"  # CT display window: abdomen, btcv, lung or bone
mirror_dir: str = ""  # local folder with the example files; empty: $SWINUNETR_EXAMPLES_MIRROR or ../shared/...

# %% [markdown]
# ## Fetch the scan
# `fetch_example` returns a local path only after the file's SHA-256 matches the pinned checksum.

# %%
mirror = mirror_dir or None
image_path = fetch_example(image_name, mirror_dir=mirror)
label_path = fetch_example(label_name, mirror_dir=mirror)
print(image_path, "\n", label_path, sep="")

# %% [markdown]
# ## Geometry
# NIfTI stores voxels in (x, y, z) order with an [affine](../../docs/glossary.md#affine) matrix that maps voxel
# indices to millimetres in patient space. MONAI's `Orientation("RAS")` puts every scan into the same axis order
# ([RAS](../../docs/glossary.md#ras)) before training.

# %%
img = nib.load(image_path)
hu = np.asarray(img.dataobj, dtype=np.float32)
geometry = pd.Series({
    "shape (x, y, z)": img.shape,
    "spacing (mm)": tuple(round(float(s), 2) for s in img.header.get_zooms()[:3]),
    "orientation": "".join(nib.aff2axcodes(img.affine)),
    "HU min / max": (float(hu.min()), float(hu.max())),
    "field of view (mm)": tuple(round(n * float(s)) for n, s in zip(img.shape, img.header.get_zooms(), strict=True)),
})
geometry.to_frame("value")

# %% [markdown]
# ## Hounsfield units
# [Hounsfield units](../../docs/glossary.md#hu): air is about −1000 HU, fat −100, water 0, soft tissue 20–80,
# contrast-enhanced vessels 150–300, bone above 300. Pretraining clips to [−1000, 1000]; BTCV fine-tuning uses the
# narrower [−175, 250].

# %%
pd.Series(np.percentile(hu, [1, 25, 50, 75, 99]), index=["p1", "p25", "median", "p75", "p99"]).to_frame("HU").T

# %% [markdown] tags=["exercise"]
# **Exercise 1 (predict, 5 min).** Before the label table below shows any voxel count: **predict** the volume of
# the liver in this scan, in mL (an adult liver holds about 1.5 L; this scan is cropped to the abdomen). Write it
# into `prediction`, run the cell, then **compute** it from the liver's voxel count and the
# [voxel spacing](../../docs/glossary.md#voxel-spacing) above (1 mL = 1,000 mm³).

# %% tags=["prediction", "stub"]
# Exercise 1: your prediction, written before running anything below
prediction = None  # the liver's volume in mL, e.g. 1500

# %% tags=["stub"]
# Exercise 1: your code here
liver_voxels = 0  # complete: count the voxels of the liver's TotalSegmentator label, via totalseg_to_btcv
voxel_ml = float("nan")  # complete: the volume of one voxel in mL, from img.header.get_zooms()
liver_ml = liver_voxels * voxel_ml
check_prediction(prediction, liver_ml, what="liver volume (mL)")

# %% [markdown] tags=["stub"]
# *Exercise 1: your answer here.*

# %% [markdown]
# ## Organ labels, remapped to the 13 BTCV classes
# TotalSegmentator labels 117 structures; `totalseg_to_btcv` maps them by name onto the BTCV ids.
# Organs that the scan does not contain are reported, not treated as errors.

# %%
seg = np.asarray(nib.load(label_path).dataobj)
btcv, report = totalseg_to_btcv(seg)
print("absent:", report.absent)
pd.Series(report.present, name="voxels").to_frame()

# %% [markdown]
# ## Three planes with the label overlay
# Slices cross at the labels' centre of mass; the aspect ratio follows the voxel spacing.

# %%
captioned(plot_triplanar(hu, btcv, spacing=img.header.get_zooms()[:3], window_preset=window_preset,
                         title=f"{image_name}: BTCV organs"),
          look_at="in the axial slice (left) the liver, the largest organ, lies on the image's left: that is the "
                  "patient's right, as on every radiology workstation (radiological convention); the spine is at "
                  "the bottom (posterior). In the coronal slice (middle) the liver again sits on the left under the "
                  "diaphragm, the spleen on the right. Each organ keeps one colour in every figure of the suite.",
          alt="Three CT slices of the abdomen, axial, coronal and sagittal, crossing at the organs' centre, with the "
              "BTCV organs coloured semi-transparently over the grey CT and a legend naming each organ")

# %% [markdown]
# ## [Windowing](../../docs/glossary.md#windowing)
# The same axial slice under the abdomen, lung and bone windows.

# %%
captioned(plot_windows(hu, axis="axial"),
          look_at="the same voxels under three windows: the abdomen window separates the organs (grey, close "
                  "together in HU) but shows lung and bone as flat black and white; the lung window shows the "
                  "air-filled structures (bowel gas, and the lung bases where the slice reaches them) with detail; "
                  "the bone window shows the inside of the vertebra.",
          alt="One axial CT slice shown three times side by side, under the abdomen, lung and bone windows")

# %% [markdown] tags=["selfcheck"]
# ## Self-check
# **1.** A voxel reads −1000 HU; what is there, and what would 0 HU be?
# <details><summary>Answer</summary>
#
# Air (outside the body, or in the lungs and bowel); 0 HU is water. The scale is fixed by these two points for
# every CT scanner, which is why CT intensities can be clipped to the same HU range for every scan.
# </details>
#
# **2.** Two files have the same array shape. Are their voxels the same places in the patient?
# <details><summary>Answer</summary>
#
# Not necessarily: only if their affines agree too (spacing, direction and origin). The affine, not the shape,
# says where a voxel is; notebook 01 checks a converted DICOM series against its label grid this way.
# </details>
#
# **3.** Why do the abdomen and lung windows of the same slice look so different, when the data are the same?
# <details><summary>Answer</summary>
#
# A window maps only a band of HU to grey levels and clips the rest: the abdomen window (W 400, L 40) spreads soft
# tissue over the grey scale and makes lung black; the lung window spreads −1000 to about 0 HU and makes all soft
# tissue white. The display changes, the voxels do not.
# </details>

# %% [markdown]
# ## Recap
# We fetched a verified real CT, read its geometry (3 mm voxels, RAS), looked at its Hounsfield range and
# saw 12 of the 13 BTCV organs on it (no esophagus in this crop). Next: notebook 01 turns scans like this
# into validated data lists and builds the demo cohort; notebook 02 pretrains on it.
