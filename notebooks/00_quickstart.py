# %% [markdown]
# # 00 · Quickstart: a real abdominal CT and its organ labels
#
# **Goal.** Load a real CT scan, check its geometry (shape, voxel spacing, orientation, Hounsfield range) and
# look at it in the three standard planes with its organ labels overlaid — the data the rest of the suite
# pretrains on (notebook 02) and segments (notebooks 03–04). The scan is a TotalSegmentator test file,
# fetched and checksum-verified by `swinunetr_lib.data.example_data` (from the local mirror folder when there is
# one, else downloaded once into a cache).
#
# **Kind:** tutorial. **Expected runtime:** ~10 s on CPU, the same on a GPU (nothing is trained).

# %%
import nibabel as nib
import numpy as np
import pandas as pd

from swinunetr_lib.data.example_data import fetch_example
from swinunetr_lib.data.labels import totalseg_to_btcv
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
# NIfTI stores voxels in (x, y, z) order with an affine matrix that maps voxel indices to millimetres in
# patient space. MONAI's `Orientation("RAS")` puts every scan into the same axis order before training.

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
# Air is about −1000 HU, fat −100, water 0, soft tissue 20–80, contrast-enhanced vessels 150–300, bone
# above 300. Pretraining clips to [−1000, 1000]; BTCV fine-tuning uses the narrower [−175, 250].

# %%
pd.Series(np.percentile(hu, [1, 25, 50, 75, 99]), index=["p1", "p25", "median", "p75", "p99"]).to_frame("HU").T

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
# ## Windowing
# The same axial slice under the abdomen, lung and bone windows.

# %%
captioned(plot_windows(hu, axis="axial"),
          look_at="the same voxels under three windows: the abdomen window separates the organs (grey, close "
                  "together in HU) but shows lung and bone as flat black and white; the lung window shows the "
                  "air-filled structures (bowel gas, and the lung bases where the slice reaches them) with detail; "
                  "the bone window shows the inside of the vertebra.",
          alt="One axial CT slice shown three times side by side, under the abdomen, lung and bone windows")

# %% [markdown]
# ## Recap
# We fetched a verified real CT, read its geometry (3 mm voxels, RAS), looked at its Hounsfield range and
# saw 12 of the 13 BTCV organs on it (no esophagus in this crop). Next: notebook 01 turns scans like this
# into validated data lists and builds the demo cohort; notebook 02 pretrains on it.
