"""Phantom generator: deterministic, all 13 BTCV organs, HU as designed, affine/spacing as requested."""
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from swinunetr_lib.data.labels import BTCV_LABELS
from swinunetr_lib.data.phantom import (
    BTCV_HU_KEY,
    HU_JITTER,
    ORGAN_HU,
    PHANTOM_DESCRIP,
    make_abdomen_phantom,
    make_msd_phantom,
    write_phantom,
)

DEMO = (3.0, 3.0, 3.0)
UNIFORM = [i for i in BTCV_LABELS if i not in (2, 3, 7)]  # kidneys (cortex+medulla) and stomach (wall/content/gas)


def test_same_seed_same_volume_other_seed_differs():
    a, b = make_abdomen_phantom(7, spacing=DEMO), make_abdomen_phantom(7, spacing=DEMO)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    c = make_abdomen_phantom(8, spacing=DEMO)
    assert (c.label != a.label).mean() > 0.005
    assert not np.array_equal(c.image, a.image)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_all_13_organs_present_and_image_is_ct_like(seed):
    ph = make_abdomen_phantom(seed, spacing=DEMO)
    counts = np.bincount(ph.label.ravel(), minlength=14)
    assert ph.label.dtype == np.uint8 and ph.label.max() == 13
    assert (counts[1:] > 100).all(), counts  # every organ has > 100 voxels (2.7 ml) at 3 mm
    assert counts[6] == counts[1:].max()  # liver is the largest organ
    assert ph.image.dtype == np.float32 and -1024 <= ph.image.min() < -900 and 300 < ph.image.max() < 1200


def test_organ_hu_exact_without_noise_and_blur():
    ph = make_abdomen_phantom(3, spacing=DEMO, noise_sd=0.0, blur_mm=0.0)
    for i in UNIFORM:
        values = ph.image[ph.label == i]
        assert np.allclose(values, ph.organ_hu(BTCV_HU_KEY[i]), atol=1e-3), BTCV_LABELS[i]
        assert abs(ph.organ_hu(BTCV_HU_KEY[i]) - ORGAN_HU[BTCV_HU_KEY[i]]) <= HU_JITTER
    kidney = ph.image[np.isin(ph.label, [2, 3])]
    designed = [ph.organ_hu("kidney_cortex"), ph.organ_hu("kidney_medulla")]
    assert np.isclose(kidney[:, None], designed, atol=1e-3).any(1).all()
    stomach = ph.image[ph.label == 7]
    designed = [ph.organ_hu("stomach_wall"), ph.organ_hu("stomach_content"), ORGAN_HU["air"]]
    assert np.isclose(stomach[:, None], designed, atol=1e-3).any(1).all()


def test_organ_hu_with_noise_and_blur_stays_within_design():
    ph = make_abdomen_phantom(5, spacing=DEMO)  # noise_sd 15 HU, blur 1.5 mm
    for i in UNIFORM:
        core = ndimage.binary_erosion(ph.label == i)
        if core.sum() < 30:  # thin structures are all partial volume at 3 mm
            continue
        assert abs(ph.image[core].mean() - ph.organ_hu(BTCV_HU_KEY[i])) < 10, BTCV_LABELS[i]
    outside = ph.image[:3, :3, :3]
    assert abs(outside.mean() + 1000) < 15 and 10 < outside.std() < 20  # air + Gaussian noise


def test_affine_spacing_shape_and_anatomy_in_world_mm():
    coarse = make_abdomen_phantom(2, spacing=DEMO)
    assert coarse.image.shape == (128, 96, 72)
    fine = make_abdomen_phantom(2, shape=(160, 120, 80), spacing=(2.0, 2.0, 2.5))
    assert fine.image.shape == fine.label.shape == (160, 120, 80)
    assert np.allclose(fine.affine[:3, :3], np.diag([2.0, 2.0, 2.5])) and fine.spacing == (2.0, 2.0, 2.5)
    assert nib.aff2axcodes(fine.affine) == ("R", "A", "S")
    # the same seed draws the same anatomy: organ centroids agree in world mm across grids
    for i in (6, 1, 2, 3, 8):
        c1 = nib.affines.apply_affine(coarse.affine, np.argwhere(coarse.label == i).mean(0))
        c2 = nib.affines.apply_affine(fine.affine, np.argwhere(fine.label == i).mean(0))
        assert np.linalg.norm(c1 - c2) < 3.0, BTCV_LABELS[i]
    # anatomical sides in RAS+: liver on the patient's right (+x), spleen left, spine posterior (-y)
    centroid = {i: nib.affines.apply_affine(coarse.affine, np.argwhere(coarse.label == i).mean(0)) for i in (1, 6, 8)}
    assert centroid[6][0] > 20 > -20 > centroid[1][0]
    assert centroid[8][1] < 0  # aorta lies posterior, in front of the spine


def test_write_phantom_roundtrip_marks_phantom(tmp_path):
    ph = make_abdomen_phantom(1, spacing=DEMO)
    write_phantom(tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz", ph)
    img, lab = nib.load(tmp_path / "img.nii.gz"), nib.load(tmp_path / "lab.nii.gz")
    assert np.allclose(img.affine, ph.affine) and np.allclose(lab.affine, ph.affine)
    assert img.header.get_zooms() == DEMO
    assert b"PHANTOM" in img.header["descrip"].tobytes() and b"PHANTOM" in lab.header["descrip"].tobytes()
    assert np.abs(np.asanyarray(img.dataobj) - ph.image).max() <= 0.5  # int16 HU on disk
    np.testing.assert_array_equal(np.asanyarray(lab.dataobj), ph.label)
    assert "PHANTOM" in PHANTOM_DESCRIP
    assert not list(tmp_path.glob(".*"))  # atomic writes leave no temporaries


def test_msd_variants(tmp_path):
    spleen = make_msd_phantom(4, "ct_single_organ", organ="spleen")
    base = make_abdomen_phantom(4, spacing=DEMO)
    np.testing.assert_array_equal(spleen.label, (base.label == 1).astype(np.uint8))
    mr = make_msd_phantom(4, "mr_multichannel", n_channels=4)
    assert mr.image.shape == (*base.label.shape, 4) and set(np.unique(mr.label)) == {0, 1, 2, 3}
    # channels carry different contrasts: liver-vs-spleen difference differs between channels
    diffs = [mr.image[..., c][mr.label == 1].mean() - mr.image[..., c][mr.label == 3].mean() for c in range(4)]
    assert np.ptp(diffs) > 50
    write_phantom(tmp_path / "mr.nii.gz", tmp_path / "mr_lab.nii.gz", mr)
    assert nib.load(tmp_path / "mr.nii.gz").shape == mr.image.shape
    with pytest.raises(ValueError, match="not a BTCV organ"):
        make_msd_phantom(0, organ="brain")
    with pytest.raises(ValueError, match="spacing"):
        make_abdomen_phantom(0, spacing=(0, 1, 1))


# sha256 (first 16 hex) of image + label bytes, computed before `variability` existed (commit 25151e6): the
# template phantoms, which committed results and the demo cohort depend on, must not change.
TEMPLATE_DIGESTS = [
    (3, dict(spacing=(12.0, 12.0, 12.0)), "986ee455dbb3cf55"),
    (5, dict(shape=(20, 16, 12), spacing=(9.0, 9.0, 9.0), noise_sd=5.0), "2ed04858a783043e"),
]


@pytest.mark.parametrize("seed,kw,digest", TEMPLATE_DIGESTS)
def test_variability_zero_draws_the_unchanged_template(seed, kw, digest):
    import hashlib

    for ph in (make_abdomen_phantom(seed, **kw), make_abdomen_phantom(seed, **kw, variability=0.0)):
        assert hashlib.sha256(ph.image.tobytes() + ph.label.tobytes()).hexdigest()[:16] == digest


def test_variability_moves_and_reshapes_each_case_deterministically():
    sp = (12.0, 12.0, 12.0)
    base = make_abdomen_phantom(3, spacing=sp)
    a, b = make_abdomen_phantom(3, spacing=sp, variability=1.0), make_abdomen_phantom(3, spacing=sp, variability=1.0)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert a.image.shape == base.image.shape and a.label.dtype == np.uint8
    assert (a.label != base.label).mean() > 0.01  # the case is posed and shaped differently
    liver = [np.argwhere(p.label == 6).mean(0) * 12.0 for p in (base, a)]
    other = make_abdomen_phantom(4, spacing=sp, variability=1.0)
    moved = [np.linalg.norm(np.argwhere(p.label == 6).mean(0) * 12.0 - liver[0]) for p in (a, other)]
    assert max(moved) > 5.0  # mm: at least one case's liver moved by more than the template jitter
    assert len(np.unique(a.label)) >= 10  # the organs are still there (the smallest may vanish at 12 mm)
    half = make_abdomen_phantom(3, spacing=sp, variability=0.5)
    assert (half.label != base.label).mean() < (a.label != base.label).mean()  # more variability, larger change
    offsets = np.array([a.hu_offsets[k] for k in a.hu_offsets])
    assert np.abs(offsets).max() > HU_JITTER  # organ HU now differ more than the template's jitter


@pytest.mark.parametrize("bad", [-0.1, 1.5, "a", True])
def test_variability_outside_0_1_is_refused(bad):
    with pytest.raises(ValueError, match="variability"):
        make_abdomen_phantom(0, spacing=(24.0, 24.0, 24.0), variability=bad)


def test_cohort_config_carries_variability_default_zero(tmp_path):
    from swinunetr_lib.data.cohort import DemoCohortConfig, build_demo_cohort

    assert DemoCohortConfig().variability == 0.0
    with pytest.raises(ValueError, match="variability"):
        build_demo_cohort(tmp_path / "c", variability=2.0, include_real=False)
    assert not (tmp_path / "c").exists()  # refused before anything is written
