"""Segment a scan with a fine-tuned Swin UNETR; the label map is written on the scan's own grid.

::

    python -m swinunetr_lib.infer --checkpoint runs/.../model.pt --input scan.nii.gz --output seg.nii.gz
    python -m swinunetr_lib.infer --checkpoint model.pt --input DICOM_FOLDER --output seg.nii.gz
    python -m swinunetr_lib.infer --checkpoint model.pt --input t2.nii.gz adc.nii.gz --output seg.nii.gz --task Task05_Prostate

The checkpoint (``model.pt`` from :func:`swinunetr_lib.finetune.finetune`, or ``fit``'s
``checkpoints/best.pt`` beside ``finetune_meta.json``) records the task preset, so the same resampling,
intensity preset and ROI are rebuilt here. The prediction is made on the preset's grid by sliding-window
inference (overlap 0.5, Gaussian) and mapped back by inverting the preprocessing (MONAI ``Invertd``:
crop, resampling and reorientation undone, nearest neighbour for labels), so the output has the input's
shape and affine. Errors name the file: unreadable input, wrong channel count, checkpoint of another task.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from monai import transforms as T
from monai.data import MetaTensor

from .finetune_model import build_swinunetr
from .task_presets import TaskPreset, preprocess_transforms
from .utils import atomic_path, resolve_device

Paths = str | Path | Sequence[str | Path]


class InferenceError(RuntimeError):
    """Bad checkpoint or input for inference; the message names the file and the problem."""


def load_finetuned(checkpoint: str | Path, *, task: str | None = None,
                   device: str | torch.device = "auto") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the fine-tuned model and its metadata; refuse a checkpoint trained for another ``task``."""
    path = Path(checkpoint)
    if not path.is_file():
        raise InferenceError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001
        raise InferenceError(f"{path}: cannot be read as a torch checkpoint ({err})") from err
    if not isinstance(obj, dict):
        raise InferenceError(f"{path}: not a fine-tuning checkpoint (a {type(obj).__name__})")
    meta = obj.get("finetune")
    if meta is None:  # fit's checkpoints/{best,last}.pt: metadata lives in the run folder
        for folder in (path.parent, path.parent.parent):
            if (folder / "finetune_meta.json").is_file():
                meta = json.loads((folder / "finetune_meta.json").read_text())
                break
    state = obj.get("state_dict", obj.get("model"))
    if meta is None or state is None:
        raise InferenceError(f"{path}: no fine-tuning metadata (task, channels, classes); expected model.pt "
                             "written by swinunetr_lib.finetune or a fit checkpoint beside finetune_meta.json")
    if task is not None and meta["task"] != task:
        raise InferenceError(f"{path}: checkpoint was fine-tuned for task {meta['task']!r} "
                             f"({meta['out_channels']} classes), not {task!r}")
    model = build_swinunetr(meta["in_channels"], meta["out_channels"], feature_size=meta["feature_size"])
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise InferenceError(f"{path}: weights do not match the recorded model ({err})") from err
    return model.to(resolve_device(device)).eval(), meta


def _as_list(inputs: Paths) -> list[str]:
    return [str(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]


def _reader_for(paths: list[str]) -> str | None:
    return "PydicomReader" if any(Path(p).is_dir() for p in paths) else None


def check_inputs(inputs: Paths) -> list[str]:
    """Existing, readable image paths (NIfTI/other file or DICOM folder), else :class:`InferenceError`."""
    paths = _as_list(inputs)
    if not paths:
        raise InferenceError("no input image given")
    for p in paths:
        if not Path(p).exists():
            raise InferenceError(f"{p}: input not found")
        try:
            reader = _reader_for([p])
            T.LoadImage(image_only=True, reader=reader)(p)
        except Exception as err:  # noqa: BLE001 - report the file MONAI could not read
            raise InferenceError(f"{p}: cannot be read as an image or DICOM series ({type(err).__name__}: {err})") from err
    return paths


def predict_original_grid(model: torch.nn.Module, preset: TaskPreset, inputs: Paths, *, sw_batch_size: int = 4,
                          overlap: float = 0.5, device: str | torch.device = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Label map (X, Y, Z) uint8 on the input's voxel grid, and the input's affine (RAS, 4 x 4).

    Several single-channel files are stacked as channels; a 4D file gives its channels directly.
    """
    from .finetune import sliding_window_predict

    paths = check_inputs(inputs)
    pipeline = preprocess_transforms(preset, keys=("image",), reader=_reader_for(paths))
    src = paths[0] if len(paths) == 1 else paths
    data = pipeline({"image": src})
    image = data["image"]
    if image.shape[0] != preset.in_channels:
        raise InferenceError(f"{', '.join(paths)}: {image.shape[0]} channel(s), but task {preset.name} expects "
                             f"{preset.in_channels} ({', '.join(preset.channel_names)})")
    logits = sliding_window_predict(model, image[None].as_tensor(), preset.roi_size, sw_batch_size=sw_batch_size,
                                    overlap=overlap, device=device)
    pred = logits.argmax(1).to(torch.float32).cpu()  # (1, X', Y', Z') on the preset's grid
    data["pred"] = MetaTensor(pred, meta=dict(image.meta), applied_operations=list(image.applied_operations))
    inverted = T.Invertd(keys="pred", transform=pipeline, orig_keys="image", nearest_interp=True)(data)["pred"]
    label = np.rint(np.asarray(inverted[0])).astype(np.uint8)
    affine = np.asarray(image.meta.get("original_affine", inverted.affine), dtype=np.float64)
    return label, affine


def write_label_map(label: np.ndarray, affine: np.ndarray, path: str | Path, reference: str | Path | None = None) -> Path:
    """Write ``label`` (X, Y, Z) as NIfTI (uint8). With a NIfTI ``reference`` its header and affine are kept
    exactly (qform/sform codes included); otherwise ``affine`` is used."""
    import nibabel as nib

    path = Path(path)
    if reference is not None and Path(reference).is_file() and str(reference).endswith((".nii", ".nii.gz")):
        ref = nib.load(str(reference))
        if tuple(ref.shape[:3]) != label.shape:
            raise InferenceError(f"{reference}: shape {ref.shape[:3]} differs from the prediction {label.shape}")
        img = nib.Nifti1Image(label, ref.affine, header=ref.header.copy())
        img.set_data_dtype(np.uint8)
        img.header.set_slope_inter(1, 0)
        img.header.set_intent("label")
    else:
        img = nib.Nifti1Image(label, affine)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise InferenceError(f"{path}: output must end in .nii or .nii.gz")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def infer(checkpoint: str | Path, inputs: Paths, output: str | Path, *, task: str | None = None,
          device: str | torch.device = "auto", sw_batch_size: int = 4, overlap: float = 0.5) -> Path:
    """Segment ``inputs`` with ``checkpoint`` and write ``output``; returns its path."""
    model, meta = load_finetuned(checkpoint, task=task, device=device)
    preset = TaskPreset.from_dict(meta["preset"])
    paths = check_inputs(inputs)
    label, affine = predict_original_grid(model, preset, paths, sw_batch_size=sw_batch_size, overlap=overlap,
                                          device=device)
    return write_label_map(label, affine, output, reference=paths[0] if Path(paths[0]).is_file() else None)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m swinunetr_lib.infer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="model.pt from swinunetr_lib.finetune")
    parser.add_argument("--input", required=True, nargs="+", help="NIfTI file(s) (one per channel) or a DICOM folder")
    parser.add_argument("--output", required=True, help="label map to write (.nii.gz)")
    parser.add_argument("--task", default=None, help="refuse a checkpoint fine-tuned for another task")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sw-batch-size", type=int, default=4)
    parser.add_argument("--overlap", type=float, default=0.5)
    args = parser.parse_args(argv)
    try:
        out = infer(args.checkpoint, args.input, args.output, task=args.task, device=args.device,
                    sw_batch_size=args.sw_batch_size, overlap=args.overlap)
    except InferenceError as err:
        parser.exit(2, f"error: {err}\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
