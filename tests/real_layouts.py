"""Datasets laid out exactly as they are distributed (folders, file names, data lists, dtypes, headers), with
tiny synthetic content: abdomen phantoms (:mod:`swinunetr_lib.data.phantom`) at 12 mm, 32 x 24 x 18 voxels.

Importable helpers for the tests, and for trying the README's "Your own data" commands on a laptop::

    write_btcv_monai(root)       # Swin UNETR / MONAI layout: imagesTr/img0001 + labelsTr/label0001, imagesTs/,
                                 # dataset_0.json (24 training / 6 validation / 20 test)
    write_btcv_challenge(root)   # the challenge archive unzipped: RawData/Training/{img,label}, RawData/Testing/img
    write_msd_ct(root)           # MSD Task09_Spleen: dataset.json with "./imagesTr/spleen_2.nii.gz", float64 labels,
                                 # macOS "._" AppleDouble files beside every NIfTI
    write_msd_mr4d(root)         # MSD Task05_Prostate: 4D (X, Y, Z, 2) float32 T2 + ADC images, 3 classes
    write_dicom_series(folder)   # CT series: InstanceNumbers not in position order, rescale varying per slice
    write_tcia_tree(root)        # NBIA Data Retriever download: manifest-*/Collection/Patient/Study/Series/1-NN.dcm

``python tests/real_layouts.py OUT_DIR`` writes them all under OUT_DIR (``BTCV``, ``BTCV_challenge``,
``Task09_Spleen``, ``Task05_Prostate``, ``dicom_series``, ``tcia_download``, ``pretrain_ct``). Every NIfTI says
PHANTOM in its header.
"""
from __future__ import annotations

import csv
import functools
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from swinunetr_lib.data.labels import BTCV_LABELS
from swinunetr_lib.data.phantom import PHANTOM_DESCRIP, Phantom, make_abdomen_phantom, make_msd_phantom

SPACING = (12.0, 12.0, 12.0)  # mm: 32 x 24 x 18 voxels over the phantom's 384 x 288 x 216 mm field of view

# BTCV (Synapse syn3193805): 30 labeled training cases 0001-0010 and 0021-0040, 20 test cases 0061-0080.
BTCV_TRAIN = [*range(1, 11), *range(21, 41)]
BTCV_VALIDATION = list(range(35, 41))  # dataset_0.json of the Swin UNETR code: 24 training / 6 validation
BTCV_TEST = list(range(61, 81))
# dataset_0.json's own class names (short forms)
BTCV_SHORT_LABELS = {"0": "background", "1": "spleen", "2": "rkid", "3": "lkid", "4": "gall", "5": "eso",
                     "6": "liver", "7": "sto", "8": "aorta", "9": "IVC", "10": "veins", "11": "pancreas",
                     "12": "rad", "13": "lad"}
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\x00" * 50  # a macOS "._" file's header


@functools.cache
def phantom(seed: int) -> Phantom:
    return make_abdomen_phantom(seed, spacing=SPACING)


def _lps_like(arr: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored with the first two voxel axes reversed (an LPS-like voxel order, as many CT files)."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = arr.shape[0] - 1, arr.shape[1] - 1
    return np.ascontiguousarray(arr[::-1, ::-1]), affine @ flip


def save_nifti(path: Path, arr: np.ndarray, affine: np.ndarray, what: str) -> Path:
    img = nib.Nifti1Image(arr, affine)
    img.header["descrip"] = f"{PHANTOM_DESCRIP[:60]} {what}"[:79].encode()
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def btcv_case(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int16 HU image, uint8 label, affine), LPS-like voxel order."""
    ph = phantom(seed % 3)
    image, affine = _lps_like(np.round(ph.image).astype(np.int16), ph.affine)
    label, _ = _lps_like(ph.label.astype(np.uint8), ph.affine)
    return image, label, affine


def write_btcv_monai(root: str | Path) -> Path:
    """The BTCV layout of the Swin UNETR / MONAI tutorials; returns ``root`` (holding ``dataset_0.json``)."""
    root = Path(root)
    for i in BTCV_TRAIN:
        image, label, affine = btcv_case(i)
        save_nifti(root / "imagesTr" / f"img{i:04d}.nii.gz", image, affine, "image")
        save_nifti(root / "labelsTr" / f"label{i:04d}.nii.gz", label, affine, "label")
    for i in BTCV_TEST:
        image, _, affine = btcv_case(i)
        save_nifti(root / "imagesTs" / f"img{i:04d}.nii.gz", image, affine, "image")

    def pair(i: int) -> dict[str, str]:
        return {"image": f"imagesTr/img{i:04d}.nii.gz", "label": f"labelsTr/label{i:04d}.nii.gz"}

    dataset = {"description": "btcv yucheng", "labels": BTCV_SHORT_LABELS, "licence": "yt", "modality": {"0": "CT"},
               "name": "BTCV", "numTest": len(BTCV_TEST), "numTraining": len(BTCV_TRAIN),
               "reference": "Vanderbilt University", "release": "1.0 06/08/2015", "tensorImageSize": "3D",
               "test": [f"imagesTs/img{i:04d}.nii.gz" for i in BTCV_TEST],
               "training": [pair(i) for i in BTCV_TRAIN if i not in BTCV_VALIDATION],
               "validation": [pair(i) for i in BTCV_VALIDATION]}
    (root / "dataset_0.json").write_text(json.dumps(dataset, indent=4))
    return root


def write_btcv_challenge(root: str | Path) -> Path:
    """RawData.zip of the challenge unzipped in ``root``: ``RawData/Training/{img,label}``, ``RawData/Testing/img``."""
    raw = Path(root) / "RawData"
    for i in BTCV_TRAIN:
        image, label, affine = btcv_case(i)
        save_nifti(raw / "Training" / "img" / f"img{i:04d}.nii.gz", image, affine, "image")
        save_nifti(raw / "Training" / "label" / f"label{i:04d}.nii.gz", label, affine, "label")
    for i in BTCV_TEST:
        image, _, affine = btcv_case(i)
        save_nifti(raw / "Testing" / "img" / f"img{i:04d}.nii.gz", image, affine, "image")
    return Path(root)


SPLEEN_TRAIN = [2, 3, 6, 8, 9, 10]
SPLEEN_TEST = [1, 7]


def write_msd_ct(root: str | Path) -> Path:
    """MSD Task09_Spleen as its tar unpacks (on a Mac-made archive): returns ``root/Task09_Spleen``."""
    task = Path(root) / "Task09_Spleen"
    spleen = next(k for k, v in BTCV_LABELS.items() if v == "spleen")
    for i in SPLEEN_TRAIN + SPLEEN_TEST:
        ph = phantom(i % 3)
        image, affine = _lps_like(np.round(ph.image).astype(np.int16), ph.affine)
        folder = "imagesTr" if i in SPLEEN_TRAIN else "imagesTs"
        save_nifti(task / folder / f"spleen_{i}.nii.gz", image, affine, "image")
        (task / folder / f"._spleen_{i}.nii.gz").write_bytes(APPLEDOUBLE)
        if i in SPLEEN_TRAIN:
            label, _ = _lps_like((ph.label == spleen).astype(np.float64), ph.affine)  # MSD labels: float64
            save_nifti(task / "labelsTr" / f"spleen_{i}.nii.gz", label, affine, "label")
            (task / "labelsTr" / f"._spleen_{i}.nii.gz").write_bytes(APPLEDOUBLE)
    dataset = {"name": "Spleen", "description": "Spleen Segmentation",
               "reference": "Memorial Sloan Kettering Cancer Center", "licence": "CC-BY-SA 4.0",
               "relase": "1.0 06/08/2018", "tensorImageSize": "3D", "modality": {"0": "CT"},
               "labels": {"0": "background", "1": "spleen"}, "numTraining": len(SPLEEN_TRAIN),
               "numTest": len(SPLEEN_TEST),
               "training": [{"image": f"./imagesTr/spleen_{i}.nii.gz", "label": f"./labelsTr/spleen_{i}.nii.gz"}
                            for i in SPLEEN_TRAIN],
               "test": [f"./imagesTs/spleen_{i}.nii.gz" for i in SPLEEN_TEST]}
    (task / "dataset.json").write_text(json.dumps(dataset, indent=4))
    (Path(root) / "._Task09_Spleen").write_bytes(APPLEDOUBLE)
    return task


PROSTATE_TRAIN = [0, 1, 2, 4, 6, 7]
PROSTATE_TEST = [3, 5]


def write_msd_mr4d(root: str | Path) -> Path:
    """MSD Task05_Prostate: 4D NIfTI (X, Y, Z, 2: T2, ADC), float32; labels 0/1/2 (PZ, TZ). Returns the task folder."""
    task = Path(root) / "Task05_Prostate"
    for i in PROSTATE_TRAIN + PROSTATE_TEST:
        ph = make_msd_phantom(i % 3, "mr_multichannel", spacing=SPACING, n_channels=2)
        image, affine = _lps_like(ph.image.astype(np.float32), ph.affine)
        folder = "imagesTr" if i in PROSTATE_TRAIN else "imagesTs"
        save_nifti(task / folder / f"prostate_{i:02d}.nii.gz", image, affine, "image")
        if i in PROSTATE_TRAIN:
            label = np.where(ph.label == 3, 0, ph.label).astype(np.uint8)  # liver -> PZ, kidneys -> TZ
            label, _ = _lps_like(label, ph.affine)
            save_nifti(task / "labelsTr" / f"prostate_{i:02d}.nii.gz", label, affine, "label")
    dataset = {"name": "Prostate", "description": "Prostate transitional zone and peripheral zone segmentation",
               "reference": "Radboud University, Nijmegen Medical Centre", "licence": "CC-BY-SA 4.0",
               "relase": "1.0 04/05/2018", "tensorImageSize": "4D", "modality": {"0": "T2", "1": "ADC"},
               "labels": {"0": "background", "1": "PZ", "2": "TZ"}, "numTraining": len(PROSTATE_TRAIN),
               "numTest": len(PROSTATE_TEST),
               "training": [{"image": f"./imagesTr/prostate_{i:02d}.nii.gz",
                             "label": f"./labelsTr/prostate_{i:02d}.nii.gz"} for i in PROSTATE_TRAIN],
               "test": [f"./imagesTs/prostate_{i:02d}.nii.gz" for i in PROSTATE_TEST]}
    (task / "dataset.json").write_text(json.dumps(dataset, indent=4))
    return task


# ------------------------------------------------------------------------------------------------ DICOM

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
# (slope, intercept) by slice: scanners and anonymisers change them slice by slice; HU = stored * slope + intercept
RESCALES = ((1.0, -1024.0), (0.5, -1024.0), (1.0, -2048.0))


def _uid(*parts: int) -> str:
    return "1.2.826.0.1.3680043.8.498." + ".".join(str(p) for p in parts)


def _file_meta(sop_class: str, sop_instance: str):
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def write_dicom_series(folder: str | Path, seed: int = 0, patient: int = 1, series_number: int = 2,
                       description: str = "ABDOMEN 5.0 B30f") -> tuple[np.ndarray, np.ndarray]:
    """A supine axial CT series of phantom ``seed``, one file per slice named ``1-NN.dcm`` by InstanceNumber.

    The InstanceNumbers are a shuffle of the slice order (they disagree with ImagePositionPatient) and
    RescaleSlope/RescaleIntercept change from slice to slice. Returns the HU volume and the affine that a correct
    reader gives in RAS voxel order: the phantom's own (float32 (X, Y, Z), 4 x 4).
    """
    from pydicom.dataset import Dataset

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ph = phantom(seed)
    hu = np.round(ph.image).astype(np.float32)  # (X, Y, Z), RAS voxel order
    nx, ny, nz = hu.shape
    spacing = [float(v) for v in np.diag(ph.affine)[:3]]
    # ImageOrientationPatient 1\0\0\0\1\0 (LPS+): columns run to the patient's left (-x RAS), rows to posterior
    corner = ph.affine @ np.array([nx - 1, ny - 1, 0, 1.0])  # RAS mm of the first pixel of the lowest slice
    study, series, frame = _uid(seed, patient, 1), _uid(seed, patient, series_number), _uid(seed, patient, 9)
    instances = np.random.default_rng(seed + 7).permutation(nz) + 1
    for k in range(nz):
        slope, intercept = RESCALES[k % len(RESCALES)]
        pixels = hu[::-1, ::-1, k].T  # (rows = -y, columns = -x)
        stored = np.round((pixels - intercept) / slope).astype(np.uint16)
        sop = _uid(seed, patient, series_number, k + 1)
        ds = Dataset()
        ds.file_meta = _file_meta(CT_IMAGE_STORAGE, sop)
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID = f"PHANTOM^{patient:04d}", f"SYNTH-{patient:04d}"
        ds.StudyDate, ds.StudyDescription, ds.SeriesDescription = "20000101", "CT ABDOMEN PELVIS", description
        ds.Modality, ds.Manufacturer, ds.ImageType = "CT", "SYNTHETIC PHANTOM", ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesNumber, ds.InstanceNumber = series_number, int(instances[k])
        z = corner[2] + k * spacing[2]
        ds.ImagePositionPatient = [f"{-corner[0]:.4f}", f"{-corner[1]:.4f}", f"{z:.4f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation, ds.SliceThickness = f"{z:.4f}", spacing[2]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # between rows, between columns
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:g}", f"{intercept:g}", "HU"
        ds.PixelData = stored.tobytes()
        ds.save_as(folder / f"1-{int(instances[k]):02d}.dcm", enforce_file_format=True)
    return hu, ph.affine.copy()


def _write_seg_object(folder: Path, seed: int, patient: int, series_number: int) -> None:
    """A segmentation object's header (Modality SEG) as TCIA collections ship beside their CT series."""
    from pydicom.dataset import Dataset

    folder.mkdir(parents=True, exist_ok=True)
    sop = _uid(seed, patient, series_number, 1)
    ds = Dataset()
    ds.file_meta = _file_meta(SEGMENTATION_STORAGE, sop)
    ds.SOPClassUID, ds.SOPInstanceUID = SEGMENTATION_STORAGE, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid(seed, patient, 1), _uid(seed, patient, series_number)
    ds.PatientID, ds.Modality, ds.SeriesNumber = f"SYNTH-{patient:04d}", "SEG", series_number
    ds.SeriesDescription = "Segmentation"
    ds.save_as(folder / "1-1.dcm", enforce_file_format=True)


def write_tcia_tree(root: str | Path, n_patients: int = 1) -> Path:
    """An NBIA Data Retriever download: ``root/manifest-<n>/CT-SYNTH/SYNTH-0001/<study>/<series>/1-NN.dcm`` with
    ``metadata.csv`` and ``LICENSE`` at the top; each patient has one CT series and one SEG object.
    Returns ``root``."""
    top = Path(root) / "manifest-1700000000000"
    top.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in range(1, n_patients + 1):
        study = top / "CT-SYNTH" / f"SYNTH-{p:04d}" / f"01-01-2000-NA-CT ABDOMEN PELVIS-{10000 + p}"
        ct = study / f"2.000000-ABDOMEN 5.0 B30f-{20000 + p}"
        write_dicom_series(ct, seed=p - 1, patient=p)
        _write_seg_object(study / f"300.000000-Segmentation-{30000 + p}", seed=p - 1, patient=p, series_number=300)
        rows.append({"Series UID": _uid(p - 1, p, 2), "Collection": "CT-SYNTH", "Subject ID": f"SYNTH-{p:04d}",
                     "Modality": "CT", "Number of Images": len(list(ct.iterdir())),
                     "File Location": "./" + ct.relative_to(top).as_posix()})
    with open(top / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (top / "LICENSE").write_text("Synthetic phantoms written by tests/real_layouts.py; not patient data.\n")
    return Path(root)


def write_pretrain_ct(root: str | Path, n: int = 3) -> Path:
    """A folder of unlabeled CTs for pretraining (int16 HU NIfTI, one per scan); returns ``root``."""
    root = Path(root)
    for i in range(n):
        image, _, affine = btcv_case(i)
        save_nifti(root / f"scan_{i:03d}.nii.gz", image, affine, "image")
    return root


def write_all(out: str | Path) -> dict[str, Path]:
    """Every layout under ``out``, named as the README's "Your own data" commands name them under /data."""
    out = Path(out)
    write_dicom_series(out / "dicom_series")
    return {"BTCV": write_btcv_monai(out / "BTCV"), "BTCV_challenge": write_btcv_challenge(out / "BTCV_challenge"),
            "Task09_Spleen": write_msd_ct(out), "Task05_Prostate": write_msd_mr4d(out),
            "dicom_series": out / "dicom_series", "tcia_download": write_tcia_tree(out / "tcia_download"),
            "pretrain_ct": write_pretrain_ct(out / "pretrain_ct")}


if __name__ == "__main__":
    for name, path in write_all(sys.argv[1] if len(sys.argv) > 1 else "real_layouts").items():
        print(f"{name}: {path}")
