"""Export a fine-tuned Swin UNETR as a MONAI bundle (the MONAI Model Zoo's sharing format).

::

    python -m swinunetr_lib.infer.export bundle --checkpoint runs/finetune/demo_btcv/model.pt --out bundles/demo_btcv
    python -m swinunetr_lib.infer.export bundle --checkpoint model.pt --out DIR --torchscript
    python -m monai.bundle run --config_file DIR/configs/inference.json --bundle_root DIR \\
        --datalist "['scan.nii.gz']" --output_dir seg/          # needs `pip install fire` for the command line

The bundle (``configs/metadata.json``, ``configs/inference.json``, ``models/model.pt``, ``docs/README.md``,
``LICENSE``) holds the checkpoint's weights as a plain state dict of MONAI's ``SwinUNETR`` (built by the
config's ``network_def``) and the pipeline :mod:`swinunetr_lib.infer` runs, written out in MONAI transforms:
the task preset recorded in the checkpoint's ``"finetune"`` metadata gives RAS orientation, resampling to the
preset's spacing, the foreground crop and the intensity preset (CT window scaled to [0, 1] or per-channel
MR z-score); sliding-window inference with the preset's ROI (overlap 0.5, Gaussian blending); argmax, then
``Invertd`` (nearest neighbour) back to the input's grid and ``SaveImaged`` as a uint8 NIfTI
(``<name>_seg.nii.gz``). So the bundle's label map is the one ``swinunetr_lib.infer`` writes. The run needs
only ``monai`` and ``nibabel`` (no pytorch-ignite: the config loops over the data itself).

``--torchscript`` adds ``models/model.ts``, traced with ``monai.bundle.ckpt_export`` at one ROI-sized window
(scripting fails for SwinUNETR: its forward takes keyword-only arguments). The traced graph is only valid
for ROI-sized input, which is all that sliding-window inference feeds it.

The checkpoint is read with ``torch.load(weights_only=True)``, never unpickling code. MONAI's runner evaluates
config strings that start with ``$`` (and follows ``@`` references, ``%`` macros, ``_target_`` imports), so no
checkpoint value is copied unchecked: every one that reaches a bundle file (metadata, task preset, label and
channel names, ``best_mean_dice``, ``step``, the file name) passes the typed allow-list of
:mod:`swinunetr_lib.infer.bundle_values` (numbers finite and bounded, lists of their length, names plain text
with none of ``$ @ % #`` and no markup), and the README shows names only inside code spans. A missing or
unreadable checkpoint, one without fine-tuning metadata, a value that fails that check (``<file>: <field>
<problem>``), or an existing non-empty ``--out`` folder is a one-line error (``python -m
swinunetr_lib.infer.export: error: <file>: <problem>``, exit 2), checked before anything is written. The bundle
is written to a temporary folder beside ``--out`` and renamed into place at the end, so nothing half-written is
left.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import monai
import nibabel
import numpy
import torch
from monai.bundle import ckpt_export

from ..data.example_data import sha256_of
from ..finetune.task_presets import TaskPreset
from ..utils.cli import run_cli
from ..utils.files import check_folder_creatable
from .bundle_values import BundleValueError, BundleValues, bundle_safe_value, bundle_values
from .predict import InferenceError, build_finetuned, read_finetuned

PROG = "python -m swinunetr_lib.infer.export"
OVERLAP = 0.5
SW_BATCH_SIZE = 4
ORIENTATION_LABELS = [["L", "R"], ["P", "A"], ["I", "S"]]  # as task_presets.preprocess_transforms


class ExportError(ValueError):
    """Bad checkpoint or output folder; the message names the file and the problem."""


def load_checkpoint(checkpoint: str | Path) -> tuple[dict[str, torch.Tensor], BundleValues]:
    """(state dict, checked bundle values) of a ``model.pt`` written by :func:`swinunetr_lib.finetune.run.finetune`,
    read once and checked as :func:`swinunetr_lib.infer.predict.load_finetuned` does (``weights_only=True``,
    metadata complete, weights loading into the SwinUNETR it describes) and, before the model is built, every
    value a bundle file takes from it by :func:`swinunetr_lib.infer.bundle_values.bundle_values`."""
    path = Path(checkpoint)
    try:  # the file is read once: weights, metadata, and best_mean_dice and step for metadata.json
        ckpt = read_finetuned(path)
    except InferenceError as err:
        raise ExportError(str(err)) from err
    try:
        values = bundle_values(path, ckpt.meta, ckpt.obj, meta_file=ckpt.meta_source)
    except BundleValueError as err:
        raise ExportError(str(err)) from None
    preset = values.preset
    if (preset.in_channels, preset.out_channels) != (values.in_channels, values.out_channels):
        raise ExportError(f"{ckpt.meta_source}: metadata says {values.in_channels} input / {values.out_channels} "
                          f"output channels but its preset {preset.name} {preset.in_channels} / {preset.out_channels}")
    try:
        model = build_finetuned(ckpt, device="cpu")
    except InferenceError as err:
        raise ExportError(str(err)) from err
    return model.state_dict(), values


def preprocessing_config(preset: TaskPreset) -> list[dict[str, Any]]:
    """:func:`swinunetr_lib.finetune.task_presets.preprocess_transforms` for the image alone, as bundle config items."""
    steps: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32", "track_meta": True},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS", "labels": ORIENTATION_LABELS},
    ]
    if preset.spacing is not None:
        steps.append({"_target_": "Spacingd", "keys": "image", "pixdim": list(preset.spacing), "mode": "bilinear"})
    low = float(preset.window[0]) if preset.intensity == "ct_window" else 0.0  # task_presets._foreground
    steps.append({"_target_": "CropForegroundd", "keys": "image", "source_key": "image",
                  "select_fn": f"$lambda x: x > {low!r}", "margin": 2, "allow_smaller": True})
    if preset.intensity == "ct_window":
        steps.append({"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": float(preset.window[0]),
                      "a_max": float(preset.window[1]), "b_min": 0.0, "b_max": 1.0, "clip": True})
    else:
        steps.append({"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True, "channel_wise": True})
    return steps


def inference_config(values: BundleValues) -> dict[str, Any]:
    """``configs/inference.json``: network, preprocessing, sliding window, inversion and NIfTI writing. Every
    string that starts with ``$`` or ``@`` is written here; from the checkpoint come only checked numbers and
    names (:class:`~swinunetr_lib.infer.bundle_values.BundleValues`)."""
    preset = values.preset
    predict = ("$[@postprocessing(item) for batch in @dataloader for item in monai.data.decollate_batch("
               "{**batch, 'pred': @predict(batch['image'].to(@device))})]")
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "ckpt_path": "$os.path.join(@bundle_root, 'models', 'model.pt')",
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        "dataset_dir": "$os.path.join(@bundle_root, 'data')",
        "datalist": "$sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*')))",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "task": preset.name,
        "label_names": {str(k): v for k, v in sorted(preset.labels.items())},
        "channel_names": list(preset.channel_names),
        "network_def": {"_target_": "SwinUNETR", "in_channels": values.in_channels,
                        "out_channels": values.out_channels, "feature_size": values.feature_size},
        "network": "$@network_def.to(@device).eval()",
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing_config(preset)},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]",
                    "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [int(r) for r in preset.roi_size],
                    "sw_batch_size": SW_BATCH_SIZE, "overlap": OVERLAP, "mode": "gaussian"},
        "predict": "$torch.no_grad()(lambda x: @inferer(x, @network))",
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "nearest_interp": True, "to_tensor": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
             "output_dtype": "$numpy.uint8", "resample": False, "separate_folder": False},
        ]},
        "initialize": ["$@network.load_state_dict(torch.load(@ckpt_path, map_location=@device, weights_only=True))"],
        "run": [predict],
    }


def _versions() -> dict[str, str]:
    return {"monai": monai.__version__, "torch": torch.__version__.split("+")[0], "numpy": numpy.__version__,
            "nibabel": nibabel.__version__}


def metadata(values: BundleValues, source: Path) -> dict[str, Any]:
    """``configs/metadata.json`` in the Model Zoo's layout (network_data_format with the label names), made of
    checked values only and checked once more as a whole (``"plain"``: no config syntax, no markup)."""
    v = _versions()
    preset = values.preset
    ct = preset.intensity == "ct_window"
    roi = [int(r) for r in preset.roi_size]
    labels = {str(k): n for k, n in sorted(preset.labels.items())}
    md = {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
                  "meta_schema_20240725.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by swinunetr_lib.infer.export from {values.source_name} on "
                               f"{datetime.date.today().isoformat()}"},
        "monai_version": v["monai"], "pytorch_version": v["torch"], "numpy_version": v["numpy"],
        "required_packages_version": {"nibabel": v["nibabel"]},
        "optional_packages_version": {"fire": ""},
        "name": f"Swin UNETR {preset.name} segmentation",
        "task": f"{preset.name} segmentation ({', '.join(n for k, n in sorted(preset.labels.items()) if k)})",
        "description": f"Swin UNETR (feature size {values.feature_size}) fine-tuned with swinunetr_lib on task "
                       f"{preset.name}; sliding-window inference, label map on the input's grid.",
        "authors": "swinunetr_lib", "copyright": "see LICENSE",
        "data_type": "nibabel",
        "image_classes": f"{preset.in_channels} channel(s) ({', '.join(preset.channel_names)})"
                         + (f", HU clipped to {preset.window[0]} .. {preset.window[1]} and scaled to 0 .. 1" if ct
                            else ", z-scored per channel over non-zero voxels")
                         + ("" if preset.spacing is None
                            else f", resampled to {' x '.join(map(str, preset.spacing))} mm RAS"),
        "label_classes": ", ".join(f"{k}: {n}" for k, n in labels.items()),
        "pred_classes": ", ".join(f"{k}: {n}" for k, n in labels.items()),
        "intended_use": "research only; not for clinical use",
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "hounsfield" if ct else "magnitude", "modality": preset.modality,
                "num_channels": preset.in_channels, "spatial_shape": roi, "dtype": "float32",
                "value_range": [0, 1] if ct else [], "is_patch_data": True,
                "channel_def": {str(i): n for i, n in enumerate(preset.channel_names)}}},
            "outputs": {"pred": {
                "type": "image", "format": "segmentation", "num_channels": preset.out_channels,
                "spatial_shape": roi, "dtype": "float32", "value_range": [0, 1], "is_patch_data": True,
                "channel_def": labels}},
        },
        "swinunetr_lib": {"task": preset.name, "preset": preset.to_dict(), "feature_size": values.feature_size,
                          "best_mean_dice": values.best_mean_dice, "step": values.step,
                          "source_checkpoint": values.source_name, "source_sha256": sha256_of(source),
                          "sliding_window": {"roi_size": roi, "overlap": OVERLAP, "mode": "gaussian",
                                             "sw_batch_size": SW_BATCH_SIZE}},
    }
    try:
        return bundle_safe_value("metadata.json", md, "plain")
    except BundleValueError as err:
        raise ExportError(f"{source}: {err}") from None


def _code(name: str) -> str:
    """A checked name (no backtick, no control character: :func:`bundle_safe_value`) as a Markdown code span,
    so none of its characters is read as markup."""
    return f"`{name}`"


def _readme(values: BundleValues, torchscript: bool) -> str:
    """``docs/README.md``; names from the checkpoint appear only inside code spans, numbers are checked numbers."""
    preset = values.preset
    roi = ", ".join(map(str, preset.roi_size))
    ts = ("\n`models/model.ts` is the network traced with TorchScript at one window of shape "
          f"(1, {preset.in_channels}, {roi}); it is valid for that window size only "
          "(what sliding-window inference feeds it): `torch.jit.load('models/model.ts')`.\n") if torchscript else ""
    intensity = (f"HU clipped to {preset.window[0]} .. {preset.window[1]} and scaled to 0 .. 1"
                 if preset.intensity == "ct_window" else "z-scored per channel over non-zero voxels")
    spacing = "" if preset.spacing is None else f", resampled to {' x '.join(map(str, preset.spacing))} mm RAS"
    return f"""# Swin UNETR {_code(preset.name)} segmentation

Swin UNETR (feature size {values.feature_size}) fine-tuned with swinunetr_lib on task {_code(preset.name)};
sliding-window inference, label map on the input's grid.

Exported by `python -m swinunetr_lib.infer.export bundle`; research use only, not for clinical use.

## Run

```bash
python -m monai.bundle run --config_file configs/inference.json --bundle_root . \\
    --datalist "['scan.nii.gz']" --output_dir seg
```

(the command line needs `pip install fire`; in Python: `monai.bundle.run(config_file=..., bundle_root=...,
datalist=[...], output_dir=...)`). Each input gives `<output_dir>/<name>_seg.nii.gz`, a uint8 label map with
the input's shape and affine. A multi-channel task takes a list of channel files per case
(`--datalist "[['t1.nii.gz', 't2.nii.gz']]"`). Without `--datalist`, `data/*.nii*` under the bundle root is read.

## Pipeline

- Input: {preset.in_channels} channel(s) ({', '.join(map(_code, preset.channel_names))}), {intensity}{spacing}.
- Preprocessing: RAS orientation, resampling (bilinear), crop to the body (margin 2 voxels), intensity preset.
- Sliding-window inference: ROI ({roi}), overlap {OVERLAP}, gaussian blending.
- Postprocessing: argmax, preprocessing inverted (nearest neighbour), NIfTI on the input's grid.

## Labels

{chr(10).join(f'- {k}: {_code(n)}' for k, n in sorted(preset.labels.items()))}

## Weights

`models/model.pt`: a plain state dict of `monai.networks.nets.SwinUNETR` as `network_def` builds it
(step {values.step}, best validation mean Dice {values.best_mean_dice}).
{ts}"""


LICENSE_TEXT = """Code and configuration: Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0), as
swinunetr_lib and MONAI. The model weights were trained by whoever ran swinunetr_lib.finetune: their use is \
also bound by the
licenses of the pretraining and fine-tuning data sets (e.g. BTCV, Medical Segmentation Decathlon: CC BY-SA 4.0).
Research use only; not a medical device.
"""


def check_out_dir(out: str | Path) -> Path:
    """``out`` if a bundle can be written there: absent or an empty folder, its parent creatable."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ExportError(f"{path}: output exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise ExportError(f"{path}: output folder exists and is not empty; give a new folder")
    try:
        check_folder_creatable(path.parent, f"{path}: output folder")
    except ValueError as err:
        raise ExportError(str(err)) from None
    return path


def export_bundle(checkpoint: str | Path, out: str | Path, *, torchscript: bool = False) -> Path:
    """Write the MONAI bundle of ``checkpoint`` to the folder ``out`` (absent or empty); returns ``out``."""
    out = check_out_dir(out)
    source = Path(checkpoint)
    state, values = load_checkpoint(source)
    preset = values.preset
    md = metadata(values, source)  # both configs are composed (and checked) before anything is written
    configs = {"metadata.json": md, "inference.json": inference_config(values)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for sub in ("configs", "models", "docs"):
            (tmp / sub).mkdir()
        for name, config in configs.items():
            (tmp / "configs" / name).write_text(json.dumps(config, indent=2, allow_nan=False) + "\n")
        torch.save(state, tmp / "models" / "model.pt")
        if torchscript:
            ckpt_export(net_id="network_def", filepath=str(tmp / "models" / "model.ts"),
                        ckpt_file=str(tmp / "models" / "model.pt"), meta_file=str(tmp / "configs" / "metadata.json"),
                        config_file=str(tmp / "configs" / "inference.json"), bundle_root=str(tmp), use_trace=True,
                        input_shape=[1, preset.in_channels, *preset.roi_size])
        (tmp / "docs" / "README.md").write_text(_readme(values, torchscript))
        (tmp / "LICENSE").write_text(LICENSE_TEXT)
        if out.is_dir():
            out.rmdir()  # empty (checked above); fails if something appeared meanwhile
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bundle", help="write a MONAI bundle (configs, weights, docs) of a fine-tuned checkpoint")
    b.add_argument("--checkpoint", required=True, help="model.pt from swinunetr_lib.finetune")
    b.add_argument("--out", required=True, help="bundle folder to create (must not exist, or be empty)")
    b.add_argument("--torchscript", action="store_true", help="also write models/model.ts (traced at the ROI)")
    args = parser.parse_args(argv)

    def body() -> int:
        out = export_bundle(args.checkpoint, args.out, torchscript=args.torchscript)
        print(f"wrote {out}")
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
