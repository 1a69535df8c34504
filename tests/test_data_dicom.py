"""DICOM series -> NIfTI on the real example series, checked against the reference label grid."""
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest

from swinunetr_lib.data.dicom import DicomError, dicom_series_info, dicom_to_nifti, read_dicom_series
from swinunetr_lib.data.example_data import fetch_example


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
    slices = sorted((pydicom.dcmread(f) for f in sorted(series.iterdir())),
                    key=lambda d: float(d.ImagePositionPatient[2]))
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


def test_orientation_and_out_checked_before_reading(tmp_path):
    from swinunetr_lib.data.dicom import check_nifti_out, parse_orientation

    assert parse_orientation("las") == "LAS" and parse_orientation("None") is None and parse_orientation(None) is None
    for bad in ("RRS", "RA", "XYZ", "RASL", ""):
        with pytest.raises(DicomError, match="--orientation .*L/R, A/P, S/I"):
            parse_orientation(bad, "--orientation")
    with pytest.raises(DicomError, match="orientation 'RRS'"):  # before the (missing) folder is looked at
        read_dicom_series(tmp_path / "nope", orientation="RRS")
    with pytest.raises(DicomError, match=r"x\.txt.*\.nii"):
        dicom_to_nifti(tmp_path / "nope", tmp_path / "x.txt")
    with pytest.raises(DicomError, match="is a directory"):
        check_nifti_out(tmp_path)
    assert check_nifti_out(tmp_path / "a.NII.GZ") == tmp_path / "a.NII.GZ"


def test_damaged_files_are_named_and_junk_is_ignored(series, tmp_path):
    from pydicom.uid import ExplicitVRLittleEndian

    files = sorted(series.iterdir())[:3]
    ok = tmp_path / "ok"
    ok.mkdir()
    for f in files:
        shutil.copyfile(f, ok / f.name)
    (ok / "README.txt").write_text("not dicom")  # a stray non-DICOM file is skipped, as before
    arr, _ = read_dicom_series(ok)
    assert arr.shape == (512, 512, 3)
    assert dicom_series_info(ok).unreadable == ["README.txt"] and not dicom_series_info(ok).damaged
    # an uncompressed slice whose pixel data is cut short
    ds = pydicom.dcmread(files[0])
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns, ds.BitsAllocated = 4, 4, 16
    ds.PixelData = b"\0" * 16  # 32 bytes expected
    short = tmp_path / "short"
    short.mkdir()
    ds.save_as(short / "s1.dcm", enforce_file_format=True)
    info = dicom_series_info(short)
    assert list(info.damaged) == ["s1.dcm"] and "16 of 32 bytes" in info.damaged["s1.dcm"]
    with pytest.raises(DicomError, match=r"could not be read: s1\.dcm"):
        read_dicom_series(short)


def _edited_copy(series, dest, edit=None, names=None):
    """Copy the series to ``dest``, applying ``edit(i, ds)`` to slice i (sorted by file name), optionally under
    new file names (written in that name order, so the folder's listing order follows the new names)."""
    dest.mkdir()
    files = sorted(series.iterdir())
    order = sorted(range(len(files)), key=lambda i: names[i]) if names else range(len(files))
    for i in order:
        ds = pydicom.dcmread(files[i])
        if edit is not None:
            edit(i, ds)
        ds.save_as(dest / (names[i] if names else files[i].name))
    return dest


@pytest.fixture(scope="module")
def unmodified(series):
    return read_dicom_series(series, orientation="RAS")


@pytest.mark.parametrize("case", ["shuffled", "reversed", "all_equal_shuffled_names"])
def test_instance_numbers_out_of_position_order_convert_unchanged(series, unmodified, tmp_path, case):
    """MONAI stacks slices by InstanceNumber; numbers that do not follow the slice positions must not scramble
    the volume or its affine."""
    n = len(list(series.iterdir()))
    perm = np.random.default_rng(0).permutation(n)
    assert not (np.all(np.diff(perm) > 0) or np.all(np.diff(perm) < 0))
    names = None
    if case == "shuffled":
        def edit(i, ds):
            ds.InstanceNumber = int(perm[i]) + 1
    elif case == "reversed":  # the reverse of the original order: still a consistent stack (fast path)
        def edit(i, ds):
            ds.InstanceNumber = 1000 - int(ds.InstanceNumber)
    else:
        def edit(i, ds):
            ds.InstanceNumber = 1
        names = [f"slice_{int(p):03d}.dcm" for p in perm]
    folder = _edited_copy(series, tmp_path / case, edit, names)
    arr, affine = read_dicom_series(folder, orientation="RAS")
    ref_arr, ref_affine = unmodified
    np.testing.assert_allclose(affine, ref_affine, atol=1e-6)
    np.testing.assert_array_equal(arr, ref_arr)
    assert len(list(folder.iterdir())) == n  # the copies with rewritten numbers were temporary


def test_overlong_orientation_values_do_not_give_an_identity_affine(series, unmodified, tmp_path):
    """A non-conformant ImageOrientationPatient (DS values over 16 characters) is dropped by MONAI's reader,
    which then returns an identity affine: the affine is rebuilt from the header values, with a warning."""
    def edit(i, ds):
        ds.ImageOrientationPatient = ["1.00000000000000000", "0", "0", "0", "1.00000000000000000", "0"]
    folder = _edited_copy(series, tmp_path / "iop", edit)
    with pytest.warns(UserWarning, match=r"iop.*ImageOrientationPatient.*rebuilt"):
        arr, affine = read_dicom_series(folder, orientation="RAS")
    np.testing.assert_allclose(affine, unmodified[1], atol=1e-6)
    np.testing.assert_array_equal(arr, unmodified[0])
    # without any ImageOrientationPatient the geometry is unknown: an error, not an identity affine
    def drop(i, ds):
        del ds.ImageOrientationPatient
    with pytest.raises(DicomError, match=r"no_iop.*ImageOrientationPatient"):
        read_dicom_series(_edited_copy(series, tmp_path / "no_iop", drop))


def test_consistent_series_takes_no_warning(series):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        arr, _ = read_dicom_series(series, orientation=None)
    assert arr.shape == (512, 512, 20)
