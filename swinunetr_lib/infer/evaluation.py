"""Per-class Dice and 95 % Hausdorff distance on the ORIGINAL image grid (Tang et al. 2022, Sec. 4.1).

The model predicts on the preset's resampled grid; :func:`swinunetr_lib.infer.predict.predict_original_grid`
inverts the preprocessing (MONAI ``Invertd``), so metrics compare against the untouched ground-truth
file at the image's own voxel spacing (HD95 in millimetres); a label stored in another voxel order than
its image is first brought onto the image's grid (nearest neighbour, :func:`label_on_grid`). Metrics are MONAI's
``DiceMetric`` and ``HausdorffDistanceMetric(percentile=95)``; predictions are written as NIfTI with the image's affine.

::

    df = evaluate("runs/.../model.pt", entries, "runs/.../eval")   # rows: case x class; also CSVs
    summary = summarize(df)                                          # mean Dice / HD95 per class
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from monai import transforms as T
from monai.metrics import HausdorffDistanceMetric
from monai.networks.utils import one_hot
from nibabel.processing import resample_from_to

from ..data.dicom import read_dicom_series
from ..finetune.sliding_window import dice_one_hot
from ..finetune.task_presets import TaskPreset
from ..utils.files import atomic_write_text
from .predict import load_finetuned, predict_original_grid, write_label_map


def case_metrics(pred: np.ndarray, label: np.ndarray, labels: dict[int, str],
                 spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> pd.DataFrame:
    """Dice and HD95 (mm) per foreground class of two label maps (X, Y, Z) on the same grid.

    Dice is NaN when the class is absent from the ground truth; HD95 is NaN when it is absent from
    either map (undefined), so averages skip it.
    """
    if pred.shape != label.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from label shape {label.shape}")
    k = max(labels) + 1
    for name, arr in (("prediction", pred), ("label", label)):
        extra = sorted(set(np.unique(arr).tolist()) - set(range(k)))
        if extra:
            raise ValueError(f"{name} holds class ids {extra} outside the task's labels {labels}")
    p, y = (one_hot(torch.as_tensor(a, dtype=torch.long)[None, None], k) for a in (pred, label))
    dice = dice_one_hot(p, y)[0]
    with warnings.catch_warnings():  # MONAI warns about empty classes; they become NaN below
        warnings.simplefilter("ignore")
        hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
            p, y, spacing=[float(s) for s in spacing])[0].numpy()
    rows = []
    for c in range(1, k):
        in_pred, in_gt = bool((pred == c).any()), bool((label == c).any())
        rows.append({"class_id": c, "class": labels.get(c, str(c)), "dice": float(dice[c - 1]),
                     "hd95_mm": float(hd[c - 1]) if in_pred and in_gt else float("nan"),
                     "gt_voxels": int((label == c).sum()), "pred_voxels": int((pred == c).sum())})
    return pd.DataFrame(rows)


def load_label(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth label map (X, Y, Z) in its file's voxel order, and its 4 x 4 affine (RAS, mm); a DICOM
    folder is read by :func:`swinunetr_lib.data.dicom.read_dicom_series` (RAS), as every command reads DICOM."""
    if Path(path).is_dir():
        arr, affine = read_dicom_series(path, orientation="RAS")
        return np.rint(arr).astype(np.int64), affine
    img = T.LoadImage(image_only=True)(str(path))
    affine = np.asarray(img.meta.get("original_affine", img.affine), dtype=np.float64)
    return np.rint(np.asarray(img)).astype(np.int64), affine


def label_on_grid(label: np.ndarray, label_affine: np.ndarray, shape: Sequence[int],
                  affine: np.ndarray) -> np.ndarray:
    """``label`` (X, Y, Z) brought onto the voxel grid ``(shape, affine)`` by nearest neighbour.

    A label file may store the same grid in another voxel order than its image (e.g. a LAS NIfTI of a DICOM
    series read as LPI): comparing the raw arrays would then score a perfect prediction badly. Unchanged
    when the grids already agree.
    """
    if label.shape == tuple(shape) and np.allclose(label_affine, affine, atol=1e-3):
        return label
    moved = resample_from_to(nib.Nifti1Image(label.astype(np.int16), label_affine), (tuple(shape), affine),
                             order=0, mode="constant", cval=0)
    return np.asarray(moved.dataobj).astype(np.int64)


def evaluate(checkpoint: str | Path, entries: Sequence[dict[str, Any]], out_dir: str | Path | None = None, *,
             device: str | torch.device = "auto", sw_batch_size: int = 4, overlap: float = 0.5,
             write_predictions: bool = True) -> pd.DataFrame:
    """Predict every ``{"image", "label"}`` entry, score it on the original grid, return case x class rows.

    With ``out_dir``: ``metrics.csv`` (all rows), ``summary.csv`` (per class means) and
    ``predictions/<case>_pred.nii.gz`` (the image's affine and header).
    """
    model, meta = load_finetuned(checkpoint, device=device)
    preset = TaskPreset.from_dict(meta["preset"])
    out = Path(out_dir) if out_dir is not None else None
    frames = []
    for entry in entries:
        image = entry["image"]
        name = Path(image[0] if isinstance(image, list) else image).name.split(".nii")[0]
        pred, affine = predict_original_grid(model, preset, image, sw_batch_size=sw_batch_size, overlap=overlap,
                                             device=device)
        label, label_affine = load_label(entry["label"])
        label = label_on_grid(label, label_affine, pred.shape, affine)  # compare on the image's voxel grid
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        if out is not None and write_predictions:
            ref = image[0] if isinstance(image, list) else image
            write_label_map(pred, affine, out / "predictions" / f"{name}_pred.nii.gz", reference=ref)
        df = case_metrics(pred, label, preset.labels, spacing)
        df.insert(0, "case", name)
        frames.append(df)
    result = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if out is not None:
        atomic_write_text(result.to_csv(index=False), out / "metrics.csv")
        atomic_write_text(summarize(result).to_csv(), out / "summary.csv")
    return result


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice and HD95 per class over cases (NaNs skipped), plus a ``mean`` row over classes.

    HD95 is undefined when the model misses an organ entirely, so its mean covers only the cases where
    the organ was found; ``missed`` counts the cases where it is in the ground truth but not predicted
    (its ``mean`` row is the total), so a good-looking HD95 cannot hide misses.
    """
    missed = (df["gt_voxels"] > 0) & (df["pred_voxels"] == 0)
    per_class = df.assign(missed=missed.astype(int)).groupby(["class_id", "class"]).agg(
        dice=("dice", "mean"), hd95_mm=("hd95_mm", "mean"), missed=("missed", "sum")).reset_index(level=0, drop=True)
    per_class.loc["mean"] = [per_class["dice"].mean(), per_class["hd95_mm"].mean(), per_class["missed"].sum()]
    per_class["missed"] = per_class["missed"].astype(int)
    return per_class
