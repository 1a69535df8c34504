"""Label remapping by structure name on the real TotalSegmentator example segmentation."""
import json

import nibabel as nib
import numpy as np

from swinunetr_lib.data.example_data import fetch_example
from swinunetr_lib.data.labels import (
    BTCV_LABELS,
    build_remap,
    normalise_name,
    remap_labels,
    totalseg_class_map,
    totalseg_to_btcv,
)


def test_example_seg_has_12_of_13_btcv_organs_and_esophagus_is_reported_absent():
    seg = np.asanyarray(nib.load(fetch_example("example_seg.nii.gz")).dataobj)
    btcv, report = totalseg_to_btcv(seg)
    assert len(report.present) == 12
    assert report.absent == ["esophagus"]
    assert "absent: esophagus" in report.summary()
    assert btcv.dtype == np.uint8 and set(np.unique(btcv)) == set(range(14)) - {5}
    # voxel counts carry over unchanged: TotalSegmentator liver (5) -> BTCV liver (6), aorta 52 -> 8, ...
    for src, dst in {5: 6, 1: 1, 52: 8, 63: 9, 64: 10, 7: 11, 8: 12, 9: 13}.items():
        assert (btcv == dst).sum() == (seg == src).sum() == report.present[BTCV_LABELS[dst]]
    # structures outside BTCV (lungs, vertebrae, colon, ...) become background and are listed
    assert {10, 20, 31, 117} <= set(report.unmapped_source_ids)
    assert ((btcv == 0) == ~np.isin(seg, [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 52, 63, 64])).all()


def test_remap_by_name_uses_the_class_map_ids():
    names = totalseg_class_map("total")
    table = build_remap(names, BTCV_LABELS)
    assert table.mapping == {1: 1, 2: 2, 3: 3, 4: 4, 15: 5, 5: 6, 6: 7, 52: 8, 63: 9, 64: 10, 7: 11, 8: 12, 9: 13}
    assert table.unmatched_targets == []


def test_names_normalise_and_absent_target_is_not_an_error(tmp_path):
    assert normalise_name("Right Kidney") == "kidney_right"
    assert normalise_name("portal_vein_and_splenic_vein") == "portal_and_splenic_veins"
    table = build_remap({3: "Liver", 9: "IVC", 4: "brain"}, BTCV_LABELS)
    assert table.mapping == {3: 6, 9: 9}
    label = np.array([[[0, 3, 9, 4, 4]]], dtype=np.int16)
    out, report = remap_labels(label, table)
    np.testing.assert_array_equal(out, [[[0, 6, 9, 0, 0]]])
    assert report.present == {"liver": 1, "inferior_vena_cava": 1} and len(report.absent) == 11
    assert report.unmapped_source_ids == [4]
    cm = tmp_path / "cm.json"
    cm.write_text(json.dumps({"total": {"1": "spleen"}}))
    assert totalseg_class_map("total", cm) == {1: "spleen"}


def test_one_btcv_organ_table_for_files_and_figures():
    """Data curation and figures read the same table (issue #24): same ids, and each figure name is the file name's
    words (``kidney_right`` / ``right kidney``)."""
    from swinunetr_lib.data.labels import BTCV_LABELS as data_names
    from swinunetr_lib.viz.figures import BTCV_ORGANS as figure_names

    assert sorted(data_names) == sorted(figure_names) == list(range(1, 14))
    for i, name in data_names.items():
        words = set(name.replace("_and_", " & ").replace("_", " ").split())
        assert words == set(figure_names[i].split()), (i, name, figure_names[i])
