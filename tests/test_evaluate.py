"""Dice / HD95 on the original grid: MONAI metrics vs a direct NumPy computation, and preprocessing inversion."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage
from test_finetune import save_random_model

from swinunetr_lib.finetune.task_presets import get_preset
from swinunetr_lib.infer.evaluation import case_metrics, evaluate, summarize
from swinunetr_lib.infer.predict import predict_original_grid


def _direct_dice_hd95(pred: np.ndarray, gt: np.ndarray, spacing) -> tuple[float, float]:
    """Dice = 2|P&G| / (|P| + |G|); HD95 = max of the two directed 95th percentiles of surface distances,
    surfaces = mask minus its erosion, distances by a Euclidean distance transform in mm."""
    dice = 2 * (pred & gt).sum() / (pred.sum() + gt.sum())
    sp = ndimage.binary_erosion(pred) ^ pred
    sg = ndimage.binary_erosion(gt) ^ gt
    d_pg = ndimage.distance_transform_edt(~sg, sampling=spacing)[sp]
    d_gp = ndimage.distance_transform_edt(~sp, sampling=spacing)[sg]
    return float(dice), float(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)))


def _ball(shape, center, radii):
    g = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((x - c) / r) ** 2 for x, c, r in zip(g, center, radii, strict=True)) <= 1


def test_metrics_agree_with_direct_numpy_on_anisotropic_grid():
    shape, spacing = (40, 36, 30), (1.5, 0.8, 2.5)
    gt = np.zeros(shape, np.int64)
    gt[_ball(shape, (14, 18, 15), (8, 10, 6))] = 1
    gt[24:34, 8:28, 6:22] = 2
    pred = np.zeros_like(gt)
    pred[_ball(shape, (16, 17, 14), (7, 11, 6))] = 1  # shifted and reshaped
    pred[26:34, 10:28, 6:20] = 2
    pred[2:5, 2:5, 2:5] = 3  # a false positive of a class absent from the ground truth
    df = case_metrics(pred, gt, {0: "bg", 1: "ball", 2: "box", 3: "absent"}, spacing)
    for c in (1, 2):
        dice, hd95 = _direct_dice_hd95(pred == c, gt == c, spacing)
        row = df[df.class_id == c].iloc[0]
        assert row.dice == pytest.approx(dice, abs=1e-6)
        assert row.hd95_mm == pytest.approx(hd95, abs=1e-4)
        assert 0.5 < dice < 0.99 and hd95 > 0
    absent = df[df.class_id == 3].iloc[0]
    assert np.isnan(absent.dice) and np.isnan(absent.hd95_mm) and absent.pred_voxels == 27


def test_hd95_of_a_shifted_cube_is_the_shift_in_mm():
    gt = np.zeros((30, 30, 30), np.int64)
    gt[8:20, 8:20, 8:20] = 1
    pred = np.roll(gt, 2, axis=2)  # 2 voxels along z, 2.5 mm each: top and bottom faces are 5 mm off
    df = case_metrics(pred, gt, {0: "bg", 1: "cube"}, (1.0, 1.0, 2.5))
    assert df.hd95_mm[0] == pytest.approx(5.0)
    assert df.dice[0] == pytest.approx(2 * 12 * 12 * 10 / (2 * 12**3))


class LabelFromIntensity(torch.nn.Module):
    """A segmenter that reads the class off the window-scaled intensity (HU = 100 * class): tests the
    geometry of prediction + inversion independently of any learning."""

    def __init__(self, window, n_classes):
        super().__init__()
        self.lo, self.hi, self.k = window[0], window[1], n_classes

    def forward(self, x):
        hu = x * (self.hi - self.lo) + self.lo
        cls = torch.clamp(torch.round(hu / 100.0), 0, self.k - 1).long()[:, 0]
        return torch.nn.functional.one_hot(cls, self.k).permute(0, 4, 1, 2, 3).float()


def _lps_case(tmp_path, shape=(50, 44, 30), spacing=(1.5, 1.2, 2.0), box_class=2):
    label = np.zeros(shape, np.uint8)
    label[_ball(shape, (20, 22, 15), (12, 10, 8))] = 1
    label[30:44, 10:30, 5:25] = box_class
    image = (label * 100.0).astype(np.int16)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS voxel order, off-centre origin
    affine[:3, 3] = (30.0, -12.0, 7.5)
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "img.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), tmp_path / "lab.nii.gz")
    return label, affine


def test_inversion_restores_the_original_grid_exactly_without_resampling(tmp_path):
    label, affine = _lps_case(tmp_path)
    preset = get_preset("demo_ct", spacing=None, window=(-100.0, 300.0), roi_size=(64, 64, 32),
                        labels={0: "bg", 1: "ball", 2: "box"})
    pred, out_affine = predict_original_grid(LabelFromIntensity(preset.window, 3), preset,
                                             str(tmp_path / "img.nii.gz"), device="cpu")
    assert pred.shape == label.shape and np.allclose(out_affine, affine)
    np.testing.assert_array_equal(pred, label)  # reorientation and foreground crop undone exactly
    df = case_metrics(pred, label, preset.labels, (1.5, 1.2, 2.0))
    assert df.dice.tolist() == [1.0, 1.0] and df.hd95_mm.tolist() == [0.0, 0.0]


def test_inversion_after_resampling_lands_on_the_original_grid(tmp_path):
    # one foreground class: linear interpolation of a 0/200 edge would otherwise pass through class 1's HU
    label, _ = _lps_case(tmp_path, box_class=1)
    preset = get_preset("demo_ct", spacing=(3.0, 3.0, 3.0), window=(-100.0, 300.0), roi_size=(64, 64, 32),
                        labels={0: "bg", 1: "objects"})
    pred, _ = predict_original_grid(LabelFromIntensity(preset.window, 2), preset, str(tmp_path / "img.nii.gz"),
                                    device="cpu")
    assert pred.shape == label.shape
    df = case_metrics(pred, label, preset.labels, (1.5, 1.2, 2.0))
    assert (df.dice > 0.85).all() and (df.hd95_mm <= 3.5).all()  # about one coarse voxel at the boundary


def test_evaluate_writes_csv_and_predictions_with_original_affine(tmp_path):
    label, affine = _lps_case(tmp_path, shape=(40, 36, 24), box_class=1)
    ckpt = save_random_model(tmp_path / "model.pt", get_preset("demo_ct", spacing=(4.0, 4.0, 4.0),
                                                               roi_size=(64, 64, 32)))
    entries = [{"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "lab.nii.gz")}]
    df = evaluate(ckpt, entries, tmp_path / "eval", device="cpu")
    assert list(df.columns[:3]) == ["case", "class_id", "class"] and len(df) == 1
    assert (tmp_path / "eval" / "metrics.csv").is_file() and (tmp_path / "eval" / "summary.csv").is_file()
    out = nib.load(tmp_path / "eval" / "predictions" / "img_pred.nii.gz")
    assert out.shape == label.shape and np.allclose(out.affine, affine)
    assert "mean" in summarize(df).index
    with pytest.raises(ValueError, match=r"class ids \[2\]"):
        case_metrics(label * 2, label, {0: "bg", 1: "spleen"})


def test_summary_counts_missed_organs_that_hd95_skips():
    label = np.zeros((12, 12, 12), dtype=np.int64)
    label[2:5, 2:5, 2:5], label[7:10, 7:10, 7:10] = 1, 2
    rows = []
    for case, pred in (("a", label.copy()), ("b", np.where(label == 2, 0, label))):  # b misses class 2
        df = case_metrics(pred, label, {0: "bg", 1: "liver", 2: "spleen"})
        df.insert(0, "case", case)
        rows.append(df)
    table = summarize(pd.concat(rows, ignore_index=True))
    assert table.loc["spleen", "missed"] == 1 and table.loc["liver", "missed"] == 0 and table.loc["mean", "missed"] == 1
    assert table.loc["spleen", "dice"] == pytest.approx(0.5) and table.loc["spleen", "hd95_mm"] == pytest.approx(0.0)


def test_label_in_another_voxel_order_is_scored_on_the_image_grid():
    """E.g. a LAS label NIfTI for a DICOM series read as LPI: same voxels, other order and affine."""
    from swinunetr_lib.infer.evaluation import label_on_grid

    rng = np.random.default_rng(0)
    label = np.zeros((12, 10, 8), dtype=np.int64)
    label[2:6, 3:8, 1:4], label[7:11, 1:4, 4:7] = 1, 2
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    affine[:3, 3] = rng.normal(size=3) * 10
    flip_x_swap_yz = np.array([[-1, 0, 0, 11], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=float)
    stored = np.ascontiguousarray(np.flip(label, 0).transpose(0, 2, 1))  # voxel (i, k, j) of the file = voxel (11 - i,
                                                                         # j, k) here
    stored_affine = affine @ flip_x_swap_yz
    assert case_metrics(stored.transpose(0, 2, 1), label, {0: "bg", 1: "a", 2: "b"}).dice.min() < 0.5  # raw: wrong
    back = label_on_grid(stored, stored_affine, label.shape, affine)
    assert np.array_equal(back, label)
    assert label_on_grid(label, affine, label.shape, affine) is label  # same grid: untouched
