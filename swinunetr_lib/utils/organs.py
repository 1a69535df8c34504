"""The 13 BTCV organs, one table: label id, the name used in files and tables, the name shown in figures.

Ids and order are those of the Multi-Atlas Labeling Beyond the Cranial Vault challenge (BTCV / Synapse; Landman et
al. 2015), which Tang et al. 2022 fine-tune on (Sec. 4.1, Table 1). Data curation (:mod:`swinunetr_lib.data.labels`)
and figures (:mod:`swinunetr_lib.viz.figures`) both read it here, on the ground floor, since neither may import the
other.
"""
from __future__ import annotations

# id: (name in files and tables, name in figures)
_BTCV_ORGAN_TABLE: dict[int, tuple[str, str]] = {
    1: ("spleen", "spleen"),
    2: ("kidney_right", "right kidney"),
    3: ("kidney_left", "left kidney"),
    4: ("gallbladder", "gallbladder"),
    5: ("esophagus", "esophagus"),
    6: ("liver", "liver"),
    7: ("stomach", "stomach"),
    8: ("aorta", "aorta"),
    9: ("inferior_vena_cava", "inferior vena cava"),
    10: ("portal_and_splenic_veins", "portal & splenic veins"),
    11: ("pancreas", "pancreas"),
    12: ("adrenal_gland_right", "right adrenal gland"),
    13: ("adrenal_gland_left", "left adrenal gland"),
}

BTCV_LABELS: dict[int, str] = {i: names[0] for i, names in _BTCV_ORGAN_TABLE.items()}
"""BTCV label id -> organ name as written in files, manifests and results tables (``kidney_right``)."""

BTCV_ORGANS: dict[int, str] = {i: names[1] for i, names in _BTCV_ORGAN_TABLE.items()}
"""BTCV label id -> organ name as shown in figures and legends (``right kidney``)."""
