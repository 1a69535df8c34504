"""DICOM series -> NIfTI on the real example series, checked against the reference label grid."""
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest

from swinunetr_lib.data.dicom import DicomError, dicom_series_info, dicom_to_nifti, read_dicom_series
from swinunetr_lib.example_data import fetch_example


@pytest.fixture(scope="module")
def series():
    return fetch_example("example_ct_dicom")


@pytest.fixture(scope="module")
def reference():
    ref = nib.load(fetch_example("example_seg_dicom.nii.gz"))
    return ref, np.asanyarray(ref.dataobj)


def test_geometry_matches_reference_label_grid(series, reference):
    ref, seg = reference
    arr, affine = read_dicom_series(series, orientation="".join(nib.aff2axcodes(ref.affine)))  # "LAS"
    assert arr.shape == seg.shape == (512, 512, 20)
    np.testing.assert_allclose(affine, ref.affine, atol=1e-4)
    # canonical RAS output lands on the same world grid as the reference reoriented to RAS
    ras, ras_affine = read_dicom_series(series, orientation="RAS")
    canon = nib.as_closest_canonical(ref)
    np.testing.assert_allclose(ras_affine, canon.affine, atol=1e-4)
    np.testing.assert_array_equal(ras, arr[::-1])  # LAS -> RAS flips only the first axis


def test_hu_values_equal_rescaled_pixels_and_are_plausible(series, reference):
    _, seg = reference
    arr, _ = read_dicom_series(series, orientation="LPS")  # DICOM's own voxel order: undo nothing
    slices = sorted((pydicom.dcmread(f) for f in sorted(series.iterdir())), key=lambda d: float(d.ImagePositionPatient[2]))
    manual = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in slices], -1)
    np.testing.assert_array_equal(arr, manual.transpose(1, 0, 2))  # pixel_array is (rows=y, cols=x)
    las, _ = read_dicom_series(series, orientation="LAS")
    assert -1100 <= las.min() <= -1000 and 1000 < las.max() < 4000
    assert -1050 < np.median(las[seg == 0][::50]) < -900  # mostly air around the body
    assert 40 < np.median(las[seg == 5]) < 160  # liver (TotalSegmentator id 5), contrast-enhanced soft tissue
    assert 100 < np.median(las[seg == 52]) < 350  # aorta with contrast


def test_dicom_to_nifti_writes_int16_hu(series, tmp_path):
    result = dicom_to_nifti(series, tmp_path / "ct.nii.gz")
    img = nib.load(result.path)
    assert img.get_data_dtype() == np.int16 and img.shape == (512, 512, 20)
    assert result.orientation == "RAS" and nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert result.spacing == pytest.approx((0.9765625, 0.9765625, 2.0))
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1


def test_bad_folders_raise_clear_errors(series, tmp_path):
    with pytest.raises(DicomError, match="not a folder"):
        read_dicom_series(tmp_path / "nope")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("not dicom")
    with pytest.raises(DicomError, match="no readable DICOM"):
        read_dicom_series(tmp_path / "junk")
    files = sorted(series.iterdir())
    gap = tmp_path / "gap"
    gap.mkdir()
    for f in files[:3] + files[4:6]:  # one slice missing
        shutil.copy(f, gap / f.name)
    with pytest.raises(DicomError, match="not evenly spaced"):
        read_dicom_series(gap)
    two = tmp_path / "two"
    two.mkdir()
    for i, f in enumerate(files[:4]):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = "1.2.3.4" if i < 2 else "1.2.3.5"
        ds.save_as(two / f.name)
    assert dicom_series_info(two).series_uids == {"1.2.3.4": 2, "1.2.3.5": 2}
    with pytest.raises(DicomError, match="holds 2 series"):
        read_dicom_series(two)
    arr, _ = read_dicom_series(two, series_uid="1.2.3.5")
    assert arr.shape == (512, 512, 2)
