# %% [markdown]
# **Generated file, do not edit:** the exercise version of `notebooks/01_data_curation.py`, written by `python -m swinunetr_lib.notebooks.exercises generate`.
# Edit `notebooks/01_data_curation.py` (cells tagged `exercise` / `solution`) and regenerate. The worked solutions are in
# `notebooks/01_data_curation.ipynb`, the answers for instructors in `docs/workshop_answers.md`.

# %% [markdown]
# # 01 · Data curation: from DICOM to validated data lists, and the demo cohort (exercises)
#
# **Goal.** Go from scanner files to data lists that training can trust. We convert a real CT DICOM series
# to NIfTI and check its geometry against a reference label grid, look at its Hounsfield units and organs,
# remap TotalSegmentator labels to the 13 BTCV organs, meet the synthetic abdomen *phantoms* that let the
# tutorials run on a laptop, build the demo cohort with its pretraining and fine-tuning manifests (MONAI
# decathlon datalist JSON), and validate manifests so that broken files are found before a run, not during it.
# The paper pretrains on 5,050 public CTs and fine-tunes on BTCV and the Medical Segmentation Decathlon
# (Tang et al. 2022, Sec. 4.1); the registry at the end says where each of those datasets comes from.
#
# **Kind:** tutorial, with one exercise (predict first; the workshop version is
# `notebooks/exercises/01_data_curation_ex.ipynb`). **Expected runtime:** ~40 s on CPU (building the cohort takes
# ~5 s), the same on a GPU (nothing is trained). **In the workshop:** run all cells at once (Run → Run All Cells),
# then talk through sections 5 and 6 and the exercise; the data engineering (sections 1–4 and 7–9, marked
# *⏭ Skip if behind*) is homework: it matters before you train on your own data, not to follow the workshop.
# Terms: [glossary](../../docs/glossary.md).

# %%
import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
from IPython.display import display

from swinunetr_lib import paths
from swinunetr_lib.data.cohort import build_demo_cohort
from swinunetr_lib.data.dicom import dicom_series_info, dicom_to_nifti
from swinunetr_lib.data.example_data import fetch_example
from swinunetr_lib.data.labels import BTCV_LABELS, build_remap, totalseg_class_map, totalseg_to_btcv
from swinunetr_lib.data.manifest import build_manifest, labeled_fraction_subsets, write_manifest
from swinunetr_lib.data.phantom import BTCV_HU_KEY, make_abdomen_phantom
from swinunetr_lib.data.registry import pretraining_total, registry_table
from swinunetr_lib.data.validate import validate_manifest
from swinunetr_lib.notebooks.prediction import check_prediction
from swinunetr_lib.viz.captions import captioned
from swinunetr_lib.viz.figures import new_figure, plot_triplanar

# %% tags=["parameters"]
dicom_folder: str = ""  # a CT DICOM series folder; empty: the bundled example series (20 slices)
n_phantoms: int = 12  # labeled phantoms in the demo cohort (the last n_validation are held out)
n_validation: int = 3  # held-out phantoms in the fine-tuning manifest's "validation" list
seed: int = 0  # first phantom seed; the same seed always draws the same phantoms
phantom_spacing: list[float] = [3.0, 3.0, 3.0]  # voxel size (mm) of the demo phantoms, like the real example CT
n_folds: int = 5  # k for the k-fold split written into scanned manifests
labeled_fractions: list[float] = [0.1, 0.25, 0.5, 1.0]  # labeled-fraction subsets for label-efficiency runs (notebook
                                                        # 06)
data_manifest: str = ""  # a manifest to validate at the end; empty: the demo cohort's finetune.json

# %% [markdown]
# ## 1. A DICOM series becomes one NIfTI volume
# > **⏭ Skip if behind** (homework, sections 1–4): DICOM conversion, the label grid, HU and label remapping.
# > Run All runs them; the workshop resumes at section 5.
#
# A CT series is one file per slice. Conversion must order the slices along the patient axis, apply each
# slice's `RescaleSlope`/`RescaleIntercept` to get [Hounsfield units](../../docs/glossary.md#hu), and build the
# voxel-to-millimetre [affine](../../docs/glossary.md#affine)
# from `ImageOrientationPatient`, `ImagePositionPatient` and `PixelSpacing` (MONAI's `PydicomReader`).

# %%
series = dicom_folder or fetch_example("example_ct_dicom")
info = dicom_series_info(series)
out_dir = paths.data_dir() / "curation"
converted = dicom_to_nifti(series, out_dir / "example_ct_dicom.nii.gz", orientation="RAS")
pd.Series({"files": info.n_files, "modality": info.modality, "series": len(info.series_uids),
           "shape": converted.shape, "spacing (mm)": converted.spacing, "orientation": converted.orientation,
           "HU range": (converted.hu_min, converted.hu_max)}).to_frame("value")

# %% [markdown]
# ## 2. Does it sit on the reference label grid?
# > **⏭ Skip if behind** (homework).
#
# `example_seg_dicom.nii.gz` was made on this series (in LAS orientation). Converting to the reference's axis
# codes must reproduce its shape and affine exactly; converting to RAS must match the reference reoriented
# to RAS. A mismatch here would put every label on the wrong voxels.

# %%
ref = nib.load(fetch_example("example_seg_dicom.nii.gz"))
ref_codes = "".join(nib.aff2axcodes(ref.affine))
las = dicom_to_nifti(series, out_dir / "example_ct_dicom_las.nii.gz", orientation=ref_codes)
las_img, ras_img = nib.load(las.path), nib.load(converted.path)
pd.DataFrame({
    "converted": [las_img.shape, ref_codes, float(np.abs(las_img.affine - ref.affine).max()),
                  float(np.abs(ras_img.affine - nib.as_closest_canonical(ref).affine).max())],
    "reference": [ref.shape, ref_codes, 0.0, 0.0],
}, index=["shape", "orientation", f"max |affine diff| in {ref_codes} (mm)", "max |affine diff| in RAS (mm)"])

# %% [markdown]
# ## 3. Hounsfield units
# > **⏭ Skip if behind** (homework).
#
# Air sits near −1000 HU, fat near −100, soft tissue 20–80, contrast-filled vessels 150–300, bone above 300.
# A histogram without the air peak, or values starting at 0, means the rescale was not applied.

# %%
hu = np.asarray(ras_img.dataobj, dtype=np.float32)
fig = new_figure((7, 3))
ax = fig.add_subplot(111)
ax.hist(hu.ravel(), bins=200, range=(-1100, 1500), color="0.3", log=True)
for x, name in [(-1000, "air"), (-100, "fat"), (40, "soft tissue"), (200, "contrast"), (700, "bone")]:
    ax.axvline(x, color="tab:red", lw=0.8)
    ax.text(x, ax.get_ylim()[1] * 0.3, name, rotation=90, fontsize=8, ha="right")
ax.set(xlabel="HU", ylabel="voxels (log)", title="DICOM series converted to HU")
captioned(fig, look_at="a tall peak at the air line (-1000 HU) and a second one between the fat and soft-tissue "
                       "lines: the rescale to Hounsfield units was applied. Values starting at 0, or no air peak, "
                       "would mean raw scanner values.",
          alt="Histogram of the converted CT's voxel values in Hounsfield units, log scale, with vertical lines "
              "marking air, fat, soft tissue, contrast and bone")

# %% [markdown]
# ## 4. Organs: TotalSegmentator ids → 13 BTCV classes, matched by name
# > **⏭ Skip if behind** (homework).
#
# The reference labels use TotalSegmentator's 117 "total" classes. `build_remap` matches structure names
# (with synonyms such as *portal_vein_and_splenic_vein* → *portal_and_splenic_veins*) so no id is typed by hand.

# %%
table = build_remap(totalseg_class_map("total"), BTCV_LABELS)
pd.DataFrame([(s, totalseg_class_map("total")[s], t, BTCV_LABELS[t]) for s, t in table.mapping.items()],
             columns=["TotalSegmentator id", "structure", "BTCV id", "BTCV organ"]).set_index("BTCV id").sort_index()

# %%
ref_ras = nib.as_closest_canonical(ref)
btcv_dicom, dicom_report = totalseg_to_btcv(np.asarray(ref_ras.dataobj))
print(dicom_report.summary())
captioned(plot_triplanar(hu, btcv_dicom, spacing=ras_img.header.get_zooms()[:3],
                         title="DICOM series with BTCV labels"),
          look_at="the organ colours sit exactly on the organs' edges in all three planes: the converted series "
                  "and the reference labels share one voxel grid. A label shifted by a few millimetres, or on the "
                  "wrong side, would mean the orientation or the slice order went wrong.",
          alt="Axial, coronal and sagittal slices of the converted DICOM CT with the remapped BTCV organ labels "
              "overlaid in colour and a legend")

# %% [markdown]
# The small example NIfTI (`example_ct_sm`, 3 mm) holds 12 of the 13 organs: the esophagus lies above it.
# An absent organ is *reported*, not an error — many real cases miss one organ or another.

# %%
seg_sm = np.asarray(nib.load(fetch_example("example_seg.nii.gz")).dataobj)
_, sm_report = totalseg_to_btcv(seg_sm)
print(sm_report.summary())
pd.Series(sm_report.present).reindex(list(BTCV_LABELS.values())).fillna(0).astype(int).to_frame("voxels").T

# %% [markdown]
# ## 5. Synthetic phantoms (not patient data)
# Real labeled abdominal CTs need registration to download, so the tutorials also use
# **[phantoms](../../docs/glossary.md#phantom)**: volumes
# drawn from geometric shapes with the 13 BTCV organs at plausible places, sizes and portal-venous HU, plus
# body wall, fat, muscle, spine, ribs, lungs and bowel, a partial-volume blur and noise. Each seed gives a
# different, reproducible body. Every phantom file is named `phantom_*` and says so in its NIfTI header.

# %%
phantom = make_abdomen_phantom(seed, spacing=tuple(phantom_spacing))
captioned(plot_triplanar(phantom.image, phantom.label, spacing=phantom.spacing,
                         title=f"phantom seed {seed} (synthetic)"),
          look_at="a synthetic body, not a patient: smooth geometric organs at plausible places (liver on the "
                  "image's left = the patient's right, spine posterior), with all 13 organs, including the "
                  "esophagus that the real example lacks. Compare its textures with the real CT above.",
          alt="Axial, coronal and sagittal slices of a synthetic abdominal phantom with its 13 organ labels in "
              "colour and a legend")

# %% [markdown] tags=["exercise"]
# **Exercise 1 (predict, 5 min).** Each phantom organ is drawn at one designed HU; a blur then mixes every border
# voxel with its neighbours ([partial volume](../../docs/glossary.md#partial-volume)), and some organs are not uniform.
# Before the table below shows the measured means: **predict** which organ's measured mean HU lies furthest from
# its design (a BTCV name such as `"liver"`, `"aorta"`, `"esophagus"`).

# %% tags=["prediction", "stub"]
# Exercise 1: your prediction, written before running anything below
prediction = None  # an organ's name, e.g. "esophagus"

# %%
rows = []
for i, name in BTCV_LABELS.items():
    mask = phantom.label == i
    rows.append({"organ": name, "voxels": int(mask.sum()),
                 "volume (ml)": round(mask.sum() * np.prod(phantom.spacing) / 1000, 1),
                 "designed HU": round(phantom.organ_hu(BTCV_HU_KEY[i])),
                 "measured mean HU": round(float(phantom.image[mask].mean()))})
pd.DataFrame(rows).set_index("organ")

# %% [markdown] tags=["exercise"]
# **Exercise 1, check.** **Compute** |measured − designed| per organ from `rows` and compare the organ where it is
# largest with your prediction. Which organs come next, and why?

# %% tags=["stub"]
# Exercise 1: your code here
hu_gap = None  # complete: a pd.Series of |measured mean HU - designed HU| per organ, from pd.DataFrame(rows)
check_prediction(prediction, None if hu_gap is None else hu_gap.idxmax(), what="organ furthest from its HU")

# %% [markdown] tags=["stub"]
# *Exercise 1: your answer here.*

# %% [markdown]
# The measured means differ from the design where an organ is thin (partial volume with the fat around it)
# or not uniform: kidneys have cortex and medulla, the stomach holds fluid and a gas cap.
#
# ## 6. The demo cohort
# `build_demo_cohort` writes the real example CT (labels remapped to BTCV) and `n_phantoms` phantoms, with a
# fine-tuning manifest (`training` + held-out `validation`), an unlabeled pretraining manifest (CT only,
# including the full-length real CT), labeled-fraction subsets, and two MSD-style phantom tasks (a
# single-organ CT task and a 2-channel MR-like task) for notebook 04. It is idempotent: a second call with the
# same parameters returns at once.

# %%
cohort = build_demo_cohort(n_phantoms=n_phantoms, n_validation=n_validation, seed=seed, spacing=tuple(phantom_spacing))
summary = []
for name, path in cohort.manifests().items():
    m = json.loads(path.read_text())
    summary.append({"manifest": name, "file": str(path.relative_to(cohort.root)), "training": len(m["training"]),
                    "validation": len(m.get("validation", [])), "labeled": "label" in m["training"][0],
                    "phantoms": len(m.get("phantoms", []))})
print(cohort.root)
pd.DataFrame(summary).set_index("manifest")

# %% [markdown]
# ## 7. Building a manifest by scanning a folder
# > **⏭ Skip if behind** (homework, sections 7–9): scanning a folder into a manifest, labeled-fraction subsets,
# > validation and the data registry. Needed before training on your own data; Run All runs them.
#
# `build_manifest` recognises the MSD layout (`imagesTr/`, `labelsTr/`), BTCV's (`img/`, `label/`) and a flat
# folder of CTs (pretraining). Paths are stored relative to the data root, and each training entry gets a
# deterministic `fold` for k-fold cross-validation ([manifest](../../docs/glossary.md#manifest)). Here we scan the
# cohort's single-organ MSD-style task.

# %%
task_root = cohort.msd_manifests["Task901_PhantomSpleen"].parent
scanned = build_manifest(task_root, layout="auto", n_folds=n_folds, seed=seed)
write_manifest(scanned, out_dir / "scanned_spleen.json")
pd.DataFrame(scanned["training"])

# %% [markdown]
# Label-efficiency experiments (the paper's label-efficiency ablation, notebook 06) fine-tune on 10 %…100 % of the
# labeled cases. The subsets are nested, so each larger run sees every case of the smaller ones.

# %%
ft = json.loads(cohort.finetune_manifest.read_text())
subsets = labeled_fraction_subsets(ft["training"], labeled_fractions, seed=seed)
pd.DataFrame({f"{f:.0%}": pd.Series([e["image"] for e in s]) for f, s in subsets.items()}).fillna("")

# %% [markdown]
# ## 8. Validation and a QC table
# > **⏭ Skip if behind** (homework).
#
# The validator opens every file of a manifest and reports **all** problems at once — unreadable or corrupt
# files, wrong dimensionality, image/label grid mismatches, label values outside the task's classes, NaN/Inf,
# implausible HU, duplicates, paths outside the data root — without changing anything.

# %%
to_check = {"data_manifest": paths.resolve_path(data_manifest)} if data_manifest else cohort.manifests()
reports = {name: validate_manifest(path) for name, path in to_check.items()}
display(pd.DataFrame({name: {"entries": len(r.table()), "errors": len(r.errors),
                             "warnings": len(r.problems) - len(r.errors)} for name, r in reports.items()}).T)
report = next(iter(reports.values()))  # the QC table of the first: one row per entry
report.table()

# %% [markdown]
# Now a deliberately broken copy: a label on a shifted grid, a path leaving the data root, a duplicate entry,
# a missing file and a NaN-filled image. Each problem is named with its entry and file.

# %%
broken = paths.runs_dir() / "data_curation" / "broken_demo"
shutil.rmtree(broken, ignore_errors=True)
(broken / "imagesTr").mkdir(parents=True)
(broken / "labelsTr").mkdir()
first = ft["training"][1]
img0 = nib.load(cohort.root / first["image"])
nib.save(img0, broken / "imagesTr/a.nii.gz")
shifted = img0.affine.copy()
shifted[2, 3] += 6.0
label0 = np.asarray(nib.load(cohort.root / first["label"]).dataobj)
nib.save(nib.Nifti1Image(label0, shifted), broken / "labelsTr/a.nii.gz")
nan_img = np.asarray(img0.dataobj, dtype=np.float32)
nan_img[:4] = np.nan
nib.save(nib.Nifti1Image(nan_img, img0.affine), broken / "imagesTr/b.nii.gz")
shutil.copy(cohort.root / first["label"], broken / "labelsTr/b.nii.gz")
bad = {**{k: ft[k] for k in ("labels", "modality")}, "training": [
    {"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"},
    {"image": "imagesTr/b.nii.gz", "label": "labelsTr/b.nii.gz"},
    {"image": "../escape.nii.gz", "label": "labelsTr/b.nii.gz"},
    {"image": "imagesTr/missing.nii.gz", "label": "labelsTr/b.nii.gz"}],
    "validation": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}]}
bad_report = validate_manifest(write_manifest(bad, broken / "broken.json"))
pd.DataFrame([{"entry": p.entry, "field": p.field, "problem": p.code, "message": p.message}
              for p in bad_report.problems])

# %% [markdown]
# ## 9. Where the paper's data comes from
# > **⏭ Skip if behind** (homework).
#
# The registry (`data_manifests/registry.json`) lists BTCV, the 10 MSD tasks and the five pretraining
# collections, with modality, input channels, labels, case counts, licence and download steps.

# %%
print(f"pretraining cases in the paper code's lists: {pretraining_total()} (the paper reports 5,050)")
registry_table()

# %% [markdown] tags=["selfcheck"]
# ## Self-check
# **1.** A converted CT's histogram has no peak near −1000 HU and starts at 0. What went wrong?
# <details><summary>Answer</summary>
#
# The DICOM rescale (`RescaleSlope`, `RescaleIntercept`) was not applied: the raw stored values start at 0. After
# the rescale, air sits near −1000 HU.
# </details>
#
# **2.** Why do the phantom files say `phantom` in their names and headers, and what may they not be used for?
# <details><summary>Answer</summary>
#
# They are synthetic, not patient data: good for teaching, tests and seeing a method work end to end, never for a
# claim about real anatomy or real-data accuracy.
# </details>
#
# **3.** Why are the labeled-fraction subsets nested (every case of the 25 % subset is also in the 50 % one)?
# <details><summary>Answer</summary>
#
# So that a larger fraction differs from a smaller one only by the added labels: the change in Dice along the
# curve is then not mixed with a change of which cases were drawn (notebook 06).
# </details>

# %% [markdown]
# ## Recap
# - A DICOM series was converted to HU NIfTI and landed exactly on the reference label grid (affine
#   difference 0 mm), with air near −1000 HU and contrast-enhanced organs in the expected range.
# - TotalSegmentator labels were remapped to BTCV by name; the small example has 12 of 13 organs and the
#   missing esophagus is reported, not fatal.
# - Phantoms (synthetic, clearly marked) fill the demo cohort; `build_demo_cohort` wrote pretraining,
#   fine-tuning, labeled-fraction and MSD-style manifests, and the validator checked every one of them,
#   while the broken copy shows one precise message per fault.
#
# **Next:** notebook 02 pretrains Swin UNETR's encoder on `pretrain.json`; notebook 03 fine-tunes on
# `finetune.json`. To use real data, download a dataset from the registry, run
# `python -m swinunetr_lib.data build-manifest ROOT --out my.json` and then
# `python -m swinunetr_lib.data validate my.json --root ROOT` before training.
