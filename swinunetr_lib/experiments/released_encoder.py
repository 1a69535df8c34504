"""The paper's own artifact through the dense probe (issue #25, item 5): the released 5,050-CT encoder
(``model_swinvit.pt``, feature size 48) against random initialisation, on the two labeled real CTs that ship with
the suite's examples.

    python -m swinunetr_lib.experiments.released_encoder --pretrained model_swinvit.pt --out runs/released_encoder

What it does:

1. **The encoder.** ``--pretrained`` is the downloaded file; without it the file is taken from the cache
   (``~/.cache/swinunetr_lib/released_weights/model_swinvit.pt``) or downloaded there once from the registry's URL
   (``swinunetr_lib/data/registry.json``, ``released_weights``), written to a temporary name and renamed. Its
   SHA-256 is printed and checked against the registry's where one is pinned (a mismatch stops the command); where
   none is pinned it says so. The file is read weights-only and every encoder tensor must load.
2. **The cases.** The two real CTs with organ labels of the example data (TotalSegmentator's test files, found
   through ``$SWINUNETR_EXAMPLES_MIRROR`` or downloaded and checked against their pinned checksums): the
   abdominal NIfTI (``example_ct_sm`` + ``example_seg``) and the DICOM series (``example_ct_dicom`` +
   ``example_seg_dicom``, a LAS label brought onto the series' grid). Labels are mapped to the 13 BTCV organs
   (12 present in the first, fewer in the second: absent organs are not scored). Both are resampled to
   ``--spacing`` (default 3 mm: both fit a CPU's memory at feature 48; the encoder was pretrained at 1.5 x 1.5 x 2
   mm, pass that on a machine with ~40 GB to spare) and written as NIfTI under ``<out>/cases``.
3. **The probe** (:func:`swinunetr_lib.experiments.dense_probe.run_dense_probe`): a linear readout trained on one
   patient, scored on the other, both ways round; the released encoder against ``--n-seeds`` random encoders of
   the same size (the band), the intensity and intensity + coordinates baselines and the atlas (the other
   patient's label map copied, no learning; the two volumes are padded to one grid with their centres aligned,
   not registered, so it is a weak floor here). The decision rule of the dense probe is applied and printed.

**Two patients make a demonstration, not a measurement**: the interval over two replicates (one degree of
freedom) is wide, and both are TotalSegmentator's model outputs, not manual labels. The files say so.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd

from ..config import Config
from ..data.dicom import read_dicom_series
from ..data.example_data import cache_root, fetch_example, sha256_of
from ..data.labels import totalseg_to_btcv
from ..data.registry import ReleasedWeights, released_weights
from ..infer.evaluation import label_on_grid, load_label
from ..models.swin_unetr import encoder_feature_size, read_encoder_checkpoint
from ..paths import absolute_from_cwd
from ..utils.cli import run_cli
from ..utils.files import atomic_path, atomic_write_text
from .dense_probe import Case, run_dense_probe, summarize

DEMONSTRATION = ("2 patients: a demonstration, not a measurement (the interval over 2 replicates has 1 degree of "
                 "freedom; the labels are TotalSegmentator's model outputs, not manual annotations)")
# (case name, image example, label example): the two labeled real CTs of the example data
REAL_CASES = (("example_ct_sm", "example_ct_sm.nii.gz", "example_seg.nii.gz"),
              ("example_ct_dicom", "example_ct_dicom", "example_seg_dicom.nii.gz"))


class ReleasedEncoderError(RuntimeError):
    """The released encoder cannot be found, fetched or trusted; the message names the file or address."""


def weights_cache_dir() -> Path:
    """``$SWINUNETR_CACHE_DIR/released_weights`` (default ``~/.cache/swinunetr_lib/released_weights``)."""
    return cache_root() / "released_weights"


def check_sha256(path: Path, info: ReleasedWeights, say: Callable[[str], None] = print) -> str:
    """The file's SHA-256, checked against the registry's where one is pinned (else said so)."""
    digest = sha256_of(path)
    if info.sha256 and digest != info.sha256:
        raise ReleasedEncoderError(f"{path}: SHA-256 {digest} differs from the registry's {info.sha256} for "
                                   f"{info.file}; a corrupt or different file: download it again from {info.url}")
    say(f"{path}: SHA-256 {digest} " + ("(matches the registry)" if info.sha256 else
                                        f"(no checksum pinned in the registry: {info.sha256_note})"))
    return digest


def get_released_encoder(pretrained: str | os.PathLike[str] | None = None, *, info: ReleasedWeights | None = None,
                         url: str | None = None, cache: str | os.PathLike[str] | None = None,
                         timeout_s: float = 60.0, say: Callable[[str], None] = print) -> Path:
    """A local, checked copy of the released encoder: ``pretrained`` when given, else the cached copy, else a
    download of ``url`` (default: the registry's) into the cache, atomically (a failed download leaves nothing)."""
    info = info or released_weights()
    if pretrained:
        path = Path(pretrained)
        if not path.is_file():
            raise ReleasedEncoderError(f"{path}: no such file (download {info.file} once from {info.url})")
        check_sha256(path, info, say)
        return path
    target = Path(cache) if cache is not None else weights_cache_dir()
    target = target / info.file
    if not target.is_file():
        url = url or info.url
        say(f"downloading {url} -> {target} (once)")
        try:
            with atomic_path(target) as tmp:
                with urllib.request.urlopen(url, timeout=timeout_s) as response, open(tmp, "wb") as out:
                    shutil.copyfileobj(response, out)
                if info.sha256 and sha256_of(tmp) != info.sha256:
                    raise ReleasedEncoderError(f"{url}: the downloaded file's SHA-256 differs from the registry's "
                                               f"{info.sha256}; rejected, nothing kept")
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise ReleasedEncoderError(f"cannot download {url} to {target} ({err}); offline? download {info.file} "
                                       "elsewhere and pass it with --pretrained") from None
    check_sha256(target, info, say)
    return target


def _write_pair(image: np.ndarray, label: np.ndarray, affine: np.ndarray, folder: Path, name: str) -> dict:
    """Write (HU image, BTCV label) on one grid as NIfTI; return the manifest-style entry."""
    entry = {}
    for key, arr, dtype in (("image", image, np.float32), ("label", label, np.uint8)):
        path = folder / f"{name}_{key}.nii.gz"
        with atomic_path(path) as tmp:  # the temporary name keeps .nii.gz: nibabel writes by suffix
            nib.save(nib.Nifti1Image(arr.astype(dtype), affine), tmp)
        entry[key] = str(path)
    return entry


def prepare_real_cases(out_dir: str | os.PathLike[str], spacing: Sequence[float] = (3.0, 3.0, 3.0), *,
                       mirror_dir: str | os.PathLike[str] | None = None,
                       say: Callable[[str], None] = print) -> tuple[list[Case], list[str]]:
    """The two labeled real CTs as (HU (X, Y, Z) float32, BTCV label (X, Y, Z) int64) in RAS at ``spacing`` mm,
    with their names; the original-grid pairs are written under ``out_dir`` (NIfTI)."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    steps = Compose([LoadImaged(keys=["image", "label"], image_only=True),
                     EnsureChannelFirstd(keys=["image", "label"]),
                     Orientationd(keys=["image", "label"], axcodes="RAS"),
                     Spacingd(keys=["image", "label"], pixdim=tuple(spacing), mode=("bilinear", "nearest"))])
    cases, names = [], []
    for name, image_name, label_name in REAL_CASES:
        image_path = fetch_example(image_name, mirror_dir=mirror_dir)
        if image_path.is_dir():
            hu, affine = read_dicom_series(image_path, orientation="RAS")
        else:
            img = nib.load(str(image_path))
            hu, affine = np.asarray(img.dataobj, np.float32), img.affine
        label, label_affine = load_label(fetch_example(label_name, mirror_dir=mirror_dir))
        label = label_on_grid(label, label_affine, hu.shape, affine)  # the DICOM's LAS label onto its series
        btcv, report = totalseg_to_btcv(label)
        say(f"{name}: {hu.shape} voxels, {report.summary()}")
        entry = _write_pair(hu, btcv, affine, folder, name)
        d = steps(entry)
        img_r, lab_r = np.asarray(d["image"][0], np.float32), np.rint(np.asarray(d["label"][0])).astype(np.int64)
        cases.append((img_r, lab_r))
        names.append(name)
    return pad_to_common_grid(cases), names


def pad_to_common_grid(cases: Sequence[Case], air_hu: float = -1024.0) -> list[Case]:
    """Each case zero-padded (air in the image, background in the label), centred, to the largest extent of all
    cases per axis, so that the atlas (one patient's label map copied onto the other) can be scored: their volume
    centres are aligned, nothing is registered: a deliberately weak no-learning baseline for different patients."""
    shape = np.max([img.shape for img, _ in cases], axis=0)
    out = []
    for img, lab in cases:
        pads = [((n - m) // 2, n - m - (n - m) // 2) for n, m in zip(shape, img.shape, strict=True)]
        out.append((np.pad(img, pads, constant_values=air_hu), np.pad(lab, pads, constant_values=0)))
    return out


@dataclasses.dataclass
class ReleasedEncoderConfig(Config):
    pretrained: str = ""                  # the downloaded model_swinvit.pt; "" = the cached copy, else download it
    out: str = "runs/released_encoder"    # folder for the prepared cases, dense_probe.csv, summary.csv, verdict.txt
    spacing: list[float] = dataclasses.field(default_factory=lambda: [3.0, 3.0, 3.0])  # mm (pretraining: 1.5 x 1.5
                                          # x 2.0, which needs ~40 GB of memory for the features at feature 48)
    n_seeds: int = 5                      # random-init seeds of the band, at the encoder's feature size
    per_class: int = 1000                 # training voxels per class of the labeled patient
    max_iter: int = 100                   # L-BFGS iterations of each readout
    url: str = ""                         # download address; "" = the registry's (a local mirror: file:///...)


def run_released_encoder_probe(cfg: ReleasedEncoderConfig, say: Callable[[str], None] = print
                               ) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The dense probe of the released encoder on the two real CTs, each patient labeled in turn; writes
    ``dense_probe.csv``, ``summary.csv`` and ``verdict.txt`` to ``cfg.out``; returns (table, summary, verdict)."""
    if cfg.n_seeds < 2 or len(cfg.spacing) != 3 or min(cfg.spacing) <= 0:
        raise ValueError(f"n_seeds={cfg.n_seeds} must be >= 2 and spacing={cfg.spacing} three positive numbers (mm)")
    info = released_weights()
    weights = get_released_encoder(cfg.pretrained or None, info=info, url=cfg.url or None, say=say)
    size = encoder_feature_size(read_encoder_checkpoint(weights))  # weights-only; None: no Swin UNETR encoder
    if size is None:
        raise ReleasedEncoderError(f"{weights}: no Swin UNETR encoder found (no 5-D patch embedding)")
    if size != info.feature_size:
        say(f"note: {weights} has feature size {size}, the released encoder {info.feature_size}: not the paper's file")
    out = Path(cfg.out)
    cases, names = prepare_real_cases(out / "cases", cfg.spacing, say=say)
    table, _, _ = run_dense_probe(cases, None, ssl_checkpoint=weights, n_seeds=cfg.n_seeds,  # each labeled in turn
                                  per_class=cfg.per_class, max_iter=cfg.max_iter, held_names=names, say=say)
    table.insert(4, "labeled_patient", [names[int(c)] for c in table["labeled_case"]])
    summary, verdict = summarize(table, "encoder")
    summary.insert(1, "labeled_patient", [names[int(c)] for c in summary["labeled_case"]])
    text = "\n".join([f"encoder {weights} (feature size {size}) vs {cfg.n_seeds} random seeds of that size, "
                      f"spacing {cfg.spacing} mm", verdict.text if verdict else "no verdict", DEMONSTRATION])
    atomic_write_text(table.round(4).to_csv(index=False), out / "dense_probe.csv")
    atomic_write_text(summary.round(4).to_csv(index=False), out / "summary.csv")
    atomic_write_text(text + "\n", out / "verdict.txt")
    return table, summary, text


def main(argv: Sequence[str] | None = None) -> int:
    prog = "python -m swinunetr_lib.experiments.released_encoder"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ReleasedEncoderConfig.add_arguments(parser)
    args = absolute_from_cwd(parser.parse_args(argv), "pretrained", "out")

    def body() -> int:
        _, summary, text = run_released_encoder_probe(ReleasedEncoderConfig.from_args(args),
                                                      say=lambda m: print(m, flush=True))
        print(summary.round(3).to_string(index=False))
        print(text)
        return 0

    return run_cli(prog, body)


if __name__ == "__main__":
    raise SystemExit(main())
