"""Label maps and remapping by structure name (e.g. TotalSegmentator ``total`` ids -> 13 BTCV classes).

API::

    BTCV_LABELS                                  # {1: "spleen", ..., 13: "adrenal_gland_left"}
    totalseg_class_map("total")                  # {id: name} from the example files' class_map.json
    lut = build_remap(source_names, BTCV_LABELS)  # RemapTable: source id -> target id, matched by name
    new_label, report = remap_labels(label, lut)  # report.present / report.absent (absent is not an error)

BTCV's 13 organs and their order follow the Multi-Atlas Labeling Beyond the Cranial Vault challenge
(Landman et al. 2015), as used for fine-tuning in Tang et al. 2022, Sec. 4.1.
"""
from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..utils.organs import BTCV_LABELS  # the one BTCV organ table (ids, file names, display names)
from .example_data import fetch_example

# Other spellings of the same structure, normalised (lower case, non-alphanumerics -> "_").
SYNONYMS: dict[str, str] = {
    "portal_vein_and_splenic_vein": "portal_and_splenic_veins",
    "portal_vein_splenic_vein": "portal_and_splenic_veins",
    "portal_splenic_vein": "portal_and_splenic_veins",
    "ivc": "inferior_vena_cava",
    "postcava": "inferior_vena_cava",
    "right_kidney": "kidney_right", "left_kidney": "kidney_left",
    "right_adrenal_gland": "adrenal_gland_right", "left_adrenal_gland": "adrenal_gland_left",
    "gall_bladder": "gallbladder",
}


def normalise_name(name: str) -> str:
    """``"Right Kidney"`` -> ``"kidney_right"`` (via :data:`SYNONYMS`); lower case, ``_`` separators."""
    key = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return SYNONYMS.get(key, key)


def totalseg_class_map(task: str = "total", path: str | Path | None = None) -> dict[int, str]:
    """TotalSegmentator ``{id: structure name}`` for ``task`` ("total" or "total_mr") from ``class_map.json``."""
    if path is None:
        path = fetch_example("class_map.json")
    maps = json.loads(Path(path).read_text())
    if task not in maps:
        raise KeyError(f"{path}: no task {task!r}; tasks: {sorted(maps)}")
    return {int(k): v for k, v in maps[task].items()}


@dataclasses.dataclass
class RemapTable:
    """Source id -> target id lookup built by matching names; ``unmatched_targets`` have no source."""

    mapping: dict[int, int]
    target_names: dict[int, str]
    unmatched_targets: list[str]


@dataclasses.dataclass
class RemapReport:
    """What a remap found in one case: target classes present (with voxel counts) and absent."""

    present: dict[str, int]
    absent: list[str]
    unmapped_source_ids: list[int]  # non-zero source ids without a target (folded into background)

    def summary(self) -> str:
        return (f"{len(self.present)}/{len(self.present) + len(self.absent)} classes present; "
                f"absent: {', '.join(self.absent) or 'none'}")


def build_remap(source: Mapping[int, str], target: Mapping[int, str] = BTCV_LABELS) -> RemapTable:
    """Match ``source`` and ``target`` label names (normalised, synonyms applied); 0 stays background."""
    by_name = {normalise_name(n): i for i, n in target.items()}
    mapping = {}
    for sid, name in source.items():
        tid = by_name.get(normalise_name(name))
        if tid is not None and sid != 0:
            mapping[int(sid)] = int(tid)
    matched = set(mapping.values())
    return RemapTable(mapping, dict(target), [n for i, n in target.items() if i not in matched])


def remap_labels(label: np.ndarray, table: RemapTable) -> tuple[np.ndarray, RemapReport]:
    """Map ids with ``table`` (unmatched ids -> 0); returns uint8 labels and a report of present/absent classes."""
    label = np.asarray(label)
    if label.size and (label.min() < 0 or not np.all(np.isfinite(label))):
        raise ValueError("label array holds negative or non-finite values; it is not a label map")
    ids = label.astype(np.int64)
    lut = np.zeros(max(int(ids.max(initial=0)), max(table.mapping, default=0)) + 1, np.uint8)
    for s, t in table.mapping.items():
        lut[s] = t
    out = lut[ids]
    counts = np.bincount(out.ravel(), minlength=max(table.target_names, default=0) + 1)
    present = {n: int(counts[i]) for i, n in table.target_names.items() if counts[i] > 0}
    absent = [n for i, n in table.target_names.items() if counts[i] == 0]
    src_present = set(np.unique(ids).tolist()) - {0}
    return out, RemapReport(present, absent, sorted(src_present - set(table.mapping)))


def totalseg_to_btcv(label: np.ndarray, class_map_path: str | Path | None = None) -> tuple[np.ndarray, RemapReport]:
    """TotalSegmentator ``total`` label map -> BTCV ids 0..13 (absent organs are listed in the report)."""
    return remap_labels(label, build_remap(totalseg_class_map("total", class_map_path), BTCV_LABELS))
