"""Pretraining runs measured beforehand and committed in ``docs/results/ssl_pretraining_phantoms/`` (notebook 02
draws them): the repository's recorded results, read here so that the pretraining stage itself never reaches into
the checkout."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..paths import REPO_ROOT
from ..pretrain.run import CONFIG_FILE, PretrainConfig

RECORDED = REPO_ROOT / "docs" / "results" / "ssl_pretraining_phantoms"  # longer CPU runs, committed (notebook 02)
RECORDED_RUNS = {"paper's decoder, 32³": RECORDED / "paper_decoder_32",      # rotation and contrastive learn
                 "Swin UNETR's decoder, 64³": RECORDED / "unet_decoder_64",  # inpainting learns
                 "32³ run continued at 64³": RECORDED / "progressive_32_to_64"}  # init_from the first: rotation too


@dataclass
class RecordedPretraining:
    """A pretraining run measured beforehand and committed, with what it learned (notebook 02 draws it)."""

    config: PretrainConfig        # its settings (pretrain_config.json)
    metrics: pd.DataFrame       # fit's metrics.csv: step, loss, rotation, contrastive, reconstruction, ...
    probe: pd.DataFrame         # python -m swinunetr_lib.experiments.probe --csv, with the inpainting columns
    figure: Path                  # its reconstructions of held-out volumes (probe --figure)


def load_recorded(folder: str | Path) -> RecordedPretraining:
    """Read a recorded run's folder (``pretrain_config.json``, ``metrics.csv``, ``probe.csv``, ``reconstructions.png``;
    :data:`RECORDED_RUNS` names the committed ones, ``RECORDED/README.md`` their commands and machine); a missing
    or unreadable file is an error naming it."""
    folder = Path(folder)
    for name in (CONFIG_FILE, "metrics.csv", "probe.csv", "reconstructions.png"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: missing from the recorded pretraining run")
    try:
        config = PretrainConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text()))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{folder / CONFIG_FILE}: not a pretraining configuration ({err})") from None
    metrics, probe = pd.read_csv(folder / "metrics.csv"), pd.read_csv(folder / "probe.csv")
    for path, table, need in ((folder / "metrics.csv", metrics, {"step", "rotation", "contrastive", "reconstruction"}),
                              (folder / "probe.csv", probe, {"encoder", "rotation_accuracy", "inpainting_l1"})):
        if need - set(table.columns):
            raise ValueError(f"{path}: missing columns {sorted(need - set(table.columns))}")
    return RecordedPretraining(config, metrics, probe, folder / "reconstructions.png")
