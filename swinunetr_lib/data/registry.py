"""Dataset registry (``swinunetr_lib/data/registry.json``, shipped with the package; ``data_manifests/registry.json``
in the repository links to it): BTCV, the 10 MSD tasks, the 5 pretraining collections.

API::

    reg = load_registry()                  # {name: DatasetInfo}
    info = dataset_info("Task09_Spleen")   # DatasetInfo(modality, input_channels, labels, num_training, ...)
    registry_table(kind="pretrain")        # pandas DataFrame for display
    pretraining_total()                    # 5019 = the paper code's lists (Tang et al. 2022, Sec. 4.1 says 5,050)
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

REGISTRY_PATH = Path(__file__).with_name("registry.json")  # package data; data_manifests/registry.json links here
_REQUIRED = ("name", "kind", "modality", "input_channels", "source", "licence", "download")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: str  # "pretrain" or "finetune"
    collection: str
    modality: dict[str, str]
    input_channels: int
    source: str
    licence: str
    registration_required: bool
    layout: str
    download: str
    citation: str
    notes: str = ""
    labels: dict[str, str] | None = None
    num_training: int | None = None
    num_test: int | None = None
    num_cases: int | None = None

    @property
    def num_classes(self) -> int | None:
        """Output channels of a segmentation head, background included (None for unlabeled collections)."""
        return None if self.labels is None else len(self.labels)


def load_registry(path: str | os.PathLike[str] | None = None) -> dict[str, DatasetInfo]:
    """Parse the registry; raises ``ValueError`` naming the file and the entry on a malformed entry."""
    path = Path(path) if path is not None else REGISTRY_PATH
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"dataset registry {path}: cannot read JSON ({err})") from err
    fields = {f.name for f in dataclasses.fields(DatasetInfo)}
    out = {}
    for key, entry in raw.get("datasets", {}).items():
        missing = [k for k in _REQUIRED if k not in entry]
        unknown = sorted(set(entry) - fields)
        if missing or unknown:
            raise ValueError(f"dataset registry {path}: entry {key!r} misses {missing} / has unknown keys {unknown}")
        out[key] = DatasetInfo(**entry)
    return out


def dataset_info(name: str, path: str | os.PathLike[str] | None = None) -> DatasetInfo:
    reg = load_registry(path)
    if name not in reg:
        raise KeyError(f"no dataset {name!r} in the registry; known: {sorted(reg)}")
    return reg[name]


def pretraining_total(path: str | os.PathLike[str] | None = None) -> int:
    """Sum of the pretraining collections' case counts."""
    return sum(d.num_cases or 0 for d in load_registry(path).values() if d.kind == "pretrain")


def registry_table(kind: str | None = None, path: str | os.PathLike[str] | None = None) -> Any:
    """A ``pandas.DataFrame`` with one row per dataset (optionally only ``kind``)."""
    rows = []
    for d in load_registry(path).values():
        if kind is not None and d.kind != kind:
            continue
        rows.append({"name": d.name, "kind": d.kind, "modality": ", ".join(d.modality.values()),
                     "channels": d.input_channels, "classes": d.num_classes,
                     "cases": d.num_cases if d.kind == "pretrain" else d.num_training,
                     "licence": d.licence, "registration": d.registration_required})
    df = pd.DataFrame(rows)
    if len(df):
        df["classes"] = df["classes"].astype("Int64")
    return df


@dataclasses.dataclass(frozen=True)
class ReleasedWeights:
    """A released checkpoint the suite can read (registry ``released_weights``): where to get it, what it expects,
    and its SHA-256 when one is pinned (None: not pinned yet; the user is told so, not silently trusted)."""

    name: str
    description: str
    file: str
    url: str
    source_page: str
    feature_size: int
    input_hu_window: tuple[float, float]
    pretraining_spacing_mm: tuple[float, float, float]
    sha256: str | None
    sha256_note: str = ""


def released_weights(name: str = "model_swinvit", path: str | os.PathLike[str] | None = None) -> ReleasedWeights:
    """The registry's entry ``released_weights[name]``; ``ValueError``/``KeyError`` naming the file and entry."""
    path = Path(path) if path is not None else REGISTRY_PATH
    try:
        raw = json.loads(path.read_text()).get("released_weights", {})
    except (OSError, ValueError) as err:
        raise ValueError(f"dataset registry {path}: cannot read JSON ({err})") from err
    if name not in raw:
        raise KeyError(f"no released weights {name!r} in the registry {path}; known: {sorted(raw)}")
    entry = dict(raw[name])
    try:
        entry["input_hu_window"] = tuple(entry["input_hu_window"])
        entry["pretraining_spacing_mm"] = tuple(entry["pretraining_spacing_mm"])
        return ReleasedWeights(name=name, **entry)
    except (KeyError, TypeError) as err:
        raise ValueError(f"dataset registry {path}: released_weights entry {name!r} is malformed ({err})") from err
