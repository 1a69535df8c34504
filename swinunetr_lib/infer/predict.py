"""Segment a scan with a fine-tuned Swin UNETR; the label map is written on the scan's own grid.

::

    python -m swinunetr_lib.infer --checkpoint runs/.../model.pt --input scan.nii.gz --output seg.nii.gz
    python -m swinunetr_lib.infer --checkpoint model.pt --input DICOM_FOLDER --output seg.nii.gz
    python -m swinunetr_lib.infer --checkpoint model.pt --input t2.nii.gz adc.nii.gz --output seg.nii.gz \\
        --task Task05_Prostate

The checkpoint (``model.pt`` from :func:`swinunetr_lib.finetune.run.finetune`, or ``fit``'s
``checkpoints/best.pt`` beside ``finetune_meta.json``) records the task preset, so the same resampling,
intensity preset and ROI are rebuilt here. The prediction is made on the preset's grid by sliding-window
inference (overlap 0.5, Gaussian) and mapped back by inverting the preprocessing (MONAI ``Invertd``:
crop, resampling and reorientation undone, nearest neighbour for labels), so the output has the input's
shape and affine. A DICOM folder is read as ``python -m swinunetr_lib.data dicom-to-nifti`` reads it (slices
by position, per-slice rescale; :mod:`swinunetr_lib.data.dicom`) and the label map lies on that NIfTI's grid
(RAS); the top of a TCIA download tree gives its single CT series, several series are listed.
Errors name the file: unreadable input, wrong channel count, checkpoint of another task.
Options, the output path and the inputs' presence are checked before the checkpoint is loaded; on the
command line every such error is one line (``... infer: error: <file>: <problem>``, exit status 2) and
nothing is written.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai import transforms as T
from monai.data import MetaTensor

from ..config import Config, field_comments
from ..data.dicom import DicomError, dicom_series_info, dicom_to_nifti, locate_series
from ..data.loading import data_error_in
from ..finetune.sliding_window import InferenceError, check_window_options, sliding_window_predict
from ..finetune.task_presets import TaskPreset, preprocess_transforms
from ..models.swin_unetr import build_swinunetr
from ..utils.cli import error_message, run_cli
from ..utils.device import resolve_device
from ..utils.files import CheckpointError, atomic_path, check_folder_creatable, load_checkpoint_mapping

Paths = str | Path | Sequence[str | Path]


# What load_finetuned needs from the metadata (finetune writes them all).
REQUIRED_META = ("task", "in_channels", "out_channels", "feature_size", "preset")


def _read_meta(path: Path, obj: dict[str, Any]) -> tuple[Any, str]:
    """The fine-tuning metadata and where it came from (the checkpoint, or fit's finetune_meta.json)."""
    if obj.get("finetune") is not None:
        return obj["finetune"], str(path)
    for folder in (path.parent, path.parent.parent):  # fit's checkpoints/{best,last}.pt: meta in the run folder
        meta_file = folder / "finetune_meta.json"
        if meta_file.is_file():
            try:
                return json.loads(meta_file.read_text()), str(meta_file)
            except (OSError, UnicodeDecodeError, ValueError) as err:
                raise InferenceError(f"{meta_file}: cannot be read as JSON ({err})") from err
    return None, str(path)


def _check_weights(path: Path, model: torch.nn.Module, state: Any, meta: dict[str, Any]) -> None:
    """One line naming the checkpoint when its tensors do not fit the model its metadata describes."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InferenceError(f"{path}: 'state_dict' is not a mapping of names to tensors")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
                  if k in state and state[k].shape != own[k].shape]
    if not (missing or unexpected or mismatched):
        return
    if mismatched:
        k, theirs, ours = mismatched[0]
        first = f"first mismatch: {k} is {theirs} in the checkpoint but {ours} in the model"
    else:
        first = f"first {'missing' if missing else 'unexpected'}: {(missing or unexpected)[0]}"
    raise InferenceError(
        f"{path}: weights do not fit the model its metadata records (feature_size={meta['feature_size']}, "
        f"in_channels={meta['in_channels']}, out_channels={meta['out_channels']}): {len(mismatched)} tensor(s) "
        f"of another shape, {len(missing)} missing, {len(unexpected)} unexpected; {first} "
        "- the weights were trained with another feature_size or channel count")


@dataclasses.dataclass
class FinetunedCheckpoint:
    """A fine-tuning checkpoint read once: the whole object (``state_dict``, ``best_mean_dice``, ``step``...),
    its weights, its metadata and the file the metadata came from (the checkpoint or ``finetune_meta.json``)."""

    path: Path
    obj: dict[str, Any]
    state: Any
    meta: dict[str, Any]
    meta_source: str


def read_finetuned(checkpoint: str | Path) -> FinetunedCheckpoint:
    """Read ``checkpoint`` (tensors and plain values only) and check that its metadata is complete; every
    problem is an :class:`InferenceError` naming the file."""
    path = Path(checkpoint)
    try:  # tensors and plain values only: a checkpoint that would run code when unpickled is refused
        obj = load_checkpoint_mapping(path)
    except CheckpointError as err:
        raise InferenceError(str(err)) from err
    meta, meta_source = _read_meta(path, obj)
    state = obj.get("state_dict", obj.get("model"))
    if meta is None or state is None:
        raise InferenceError(f"{path}: no fine-tuning metadata (task, channels, classes); expected model.pt "
                             "written by swinunetr_lib.finetune or a fit checkpoint beside finetune_meta.json")
    if not isinstance(meta, dict):
        raise InferenceError(f"{meta_source}: fine-tuning metadata is a {type(meta).__name__}, not a mapping")
    lacking = [k for k in REQUIRED_META if k not in meta]
    if lacking:
        raise InferenceError(f"{meta_source}: fine-tuning metadata lacks {', '.join(lacking)} "
                             f"(has: {', '.join(map(str, meta)) or 'nothing'})")
    return FinetunedCheckpoint(path, obj, state, meta, meta_source)


def build_finetuned(ckpt: FinetunedCheckpoint, *, device: str | torch.device = "auto") -> torch.nn.Module:
    """The SwinUNETR that ``ckpt``'s metadata describes, with its weights, on ``device``, in eval mode."""
    meta = ckpt.meta
    try:
        model = build_swinunetr(meta["in_channels"], meta["out_channels"], feature_size=meta["feature_size"])
    except Exception as err:  # a model the metadata cannot describe
        raise InferenceError(f"{ckpt.meta_source}: metadata describes no valid model (in_channels="
                             f"{meta['in_channels']!r}, out_channels={meta['out_channels']!r}, feature_size="
                             f"{meta['feature_size']!r}: "
                             f"{str(err).splitlines()[0] if str(err) else type(err).__name__})") from err
    _check_weights(ckpt.path, model, ckpt.state, meta)
    try:
        model.load_state_dict(ckpt.state)
    except RuntimeError as err:
        raise InferenceError(f"{ckpt.path}: weights do not match the recorded model "
                             f"({str(err).splitlines()[0]})") from err
    return model.to(resolve_device(device)).eval()


def load_finetuned(checkpoint: str | Path, *, task: str | None = None,
                   device: str | torch.device = "auto") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the fine-tuned model and its metadata; refuse a checkpoint trained for another ``task``.

    Every problem (missing file, missing metadata keys, weights of another shape) is an
    :class:`InferenceError` whose message names the checkpoint.
    """
    ckpt = read_finetuned(checkpoint)
    meta = ckpt.meta
    if task is not None and meta["task"] != task:
        raise InferenceError(f"{ckpt.path}: checkpoint was fine-tuned for task {meta['task']!r} "
                             f"({meta['out_channels']} classes), not {task!r}")
    return build_finetuned(ckpt, device=device), meta


def check_output(output: str | Path, inputs: Paths = ()) -> Path:
    """The output path, if a label map can be written there: ``.nii``/``.nii.gz``, not a folder, not one of
    ``inputs``, and its folder existing or creatable (nothing is created here)."""
    path = Path(output)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise InferenceError(f"{path}: output must end in .nii or .nii.gz")
    if path.is_dir():
        raise InferenceError(f"{path}: output is a folder; give a file name such as {path / 'seg.nii.gz'}")
    for src in _as_list(inputs):
        if path.exists() and Path(src).exists() and os.path.samefile(path, src):
            raise InferenceError(f"{path}: output would overwrite the input scan")
    try:
        check_folder_creatable(path.parent, f"{path}: output folder")
    except ValueError as err:
        raise InferenceError(str(err)) from None
    return path


def _as_list(inputs: Paths) -> list[str]:
    return [str(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]


def locate_inputs(inputs: Paths, *, say: bool = True, series_uid: str | None = None) -> list[str]:
    """The inputs, with the top of a DICOM download tree (TCIA ``Patient/Study/Series/``) replaced by its single
    CT series folder (:func:`swinunetr_lib.data.dicom.locate_series`; printed when ``say``); several series
    there are an error that lists them."""
    out = []
    for p in _as_list(inputs):
        if Path(p).is_dir():
            try:
                located, note = locate_series(p, series_uid)
            except DicomError as err:
                raise InferenceError(str(err)) from None
            if note and say:
                print(note)
            p = str(located)
        out.append(p)
    return out


@contextlib.contextmanager
def dicom_as_nifti(paths: Sequence[str], series_uid: str | None = None) -> Iterator[list[str]]:
    """``paths`` with each DICOM series folder replaced by a temporary NIfTI written by
    :func:`swinunetr_lib.data.dicom.dicom_to_nifti` (HU, RAS: slices ordered by position, rescaled slice by
    slice), the one DICOM reading path of every command; files pass unchanged. The NIfTI files are deleted
    when the block ends."""
    if not any(Path(p).is_dir() for p in paths):
        yield list(paths)
        return
    with tempfile.TemporaryDirectory(prefix="swinunetr_dicom_") as tmp:
        out = []
        for i, p in enumerate(paths):
            if Path(p).is_dir():
                try:
                    p = str(dicom_to_nifti(p, Path(tmp) / f"series{i}.nii.gz", series_uid=series_uid).path)
                except DicomError as err:
                    raise InferenceError(str(err)) from None
            out.append(p)
        yield out


def check_input_paths(inputs: Paths, series_uid: str | None = None) -> list[str]:
    """Cheap checks (no image is read): every input exists, and a folder holds one DICOM series, or the one
    ``series_uid`` names (or is the top of a download tree with a single CT series below it)."""
    paths = _as_list(inputs)
    if not paths:
        raise InferenceError("no input image given")
    for p in paths:
        if not Path(p).exists():
            raise InferenceError(f"{p}: input not found")
        if Path(p).is_dir():
            info = dicom_series_info(locate_inputs([p], say=False, series_uid=series_uid)[0])
            if not info.series_uids:
                detail = (f" ({info.n_files} file(s), none readable as DICOM, e.g. {', '.join(info.unreadable[:3])})"
                          if info.n_files else " (the folder is empty)")
                raise InferenceError(f"{p}: no DICOM files{detail}")
            if series_uid is not None and series_uid not in info.series_uids:
                raise InferenceError(f"{p}: no series {series_uid!r} (--series-uid); series found: {info.listing()}")
            if series_uid is None and len(info.series_uids) > 1:
                raise InferenceError(f"{p}: holds {len(info.series_uids)} DICOM series: {info.listing()}; choose one "
                                     "with --series-uid UID")
    return paths


def predict_original_grid(model: torch.nn.Module, preset: TaskPreset, inputs: Paths, *, sw_batch_size: int = 4,
                          overlap: float = 0.5, device: str | torch.device = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Label map (X, Y, Z) uint8 on the input's voxel grid, and the input's affine (RAS, 4 x 4).

    Several single-channel files are stacked as channels; a 4D file gives its channels directly. A DICOM
    series folder is read as ``data dicom-to-nifti`` reads it (its grid: RAS).
    """
    check_window_options(sw_batch_size, overlap)
    paths = check_input_paths(inputs)
    with dicom_as_nifti(locate_inputs(paths, say=False)) as files:
        return _predict_files(model, preset, files, paths, sw_batch_size=sw_batch_size, overlap=overlap,
                              device=device)


def _predict_files(model: torch.nn.Module, preset: TaskPreset, files: list[str], names: list[str], *,
                   sw_batch_size: int, overlap: float, device: str | torch.device) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict_original_grid` on NIfTI ``files``; messages name the inputs as given (``names``)."""
    pipeline = preprocess_transforms(preset, keys=("image",))
    try:  # the pipeline's loader names the file it could not read; no separate read beforehand
        data = pipeline({"image": files[0] if len(files) == 1 else files})
    except Exception as err:  # report it as this module's error, in one line
        bad = data_error_in(err)  # e.g. NaN voxels: the scan was read, its values are unusable
        if bad is not None:
            shown = dict(zip(files, names, strict=True)).get(bad.path, ", ".join(names) if len(files) > 1 else bad.path)
            raise InferenceError(f"{shown}: {bad.problem}") from err
        raise InferenceError(f"{', '.join(names)}: cannot be read as an image or DICOM series "
                             f"({error_message(err)})") from err
    image = data["image"]
    if image.shape[0] != preset.in_channels:
        raise InferenceError(f"{', '.join(names)}: {image.shape[0]} channel(s), but task {preset.name} expects "
                             f"{preset.in_channels} ({', '.join(preset.channel_names)})")
    logits = sliding_window_predict(model, image[None].as_tensor(), preset.roi_size, sw_batch_size=sw_batch_size,
                                    overlap=overlap, device=device)
    pred = logits.argmax(1).to(torch.float32).cpu()  # (1, X', Y', Z') on the preset's grid
    data["pred"] = MetaTensor(pred, meta=dict(image.meta), applied_operations=list(image.applied_operations))
    inverted = T.Invertd(keys="pred", transform=pipeline, orig_keys="image", nearest_interp=True)(data)["pred"]
    label = np.rint(np.asarray(inverted[0])).astype(np.uint8)
    affine = np.asarray(image.meta.get("original_affine", inverted.affine), dtype=np.float64)
    return label, affine


def write_label_map(label: np.ndarray, affine: np.ndarray, path: str | Path,
                    reference: str | Path | None = None) -> Path:
    """Write ``label`` (X, Y, Z) as NIfTI (uint8). With a NIfTI ``reference`` its header and affine are kept
    exactly (qform/sform codes included); otherwise ``affine`` is used."""
    path = Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise InferenceError(f"{path}: output must end in .nii or .nii.gz")
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
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def infer(checkpoint: str | Path, inputs: Paths, output: str | Path, *, task: str | None = None,
          device: str | torch.device = "auto", sw_batch_size: int = 4, overlap: float = 0.5,
          series_uid: str | None = None) -> Path:
    """Segment ``inputs`` with ``checkpoint`` and write ``output``; returns its path. ``series_uid`` chooses the
    series of a DICOM folder that holds several.

    Options, device, output path and inputs' presence are checked before the checkpoint is loaded;
    ``output`` is only written (atomically) once the prediction succeeded.
    """
    check_window_options(sw_batch_size, overlap)
    resolve_device(device)  # ValueError for a name that is no device
    check_output(output, inputs)
    paths = check_input_paths(locate_inputs(inputs, series_uid=series_uid), series_uid)
    model, meta = load_finetuned(checkpoint, task=task, device=device)
    try:
        preset = TaskPreset.from_dict(meta["preset"])
    except Exception as err:  # a preset this version cannot rebuild
        raise InferenceError(f"{checkpoint}: recorded task preset cannot be rebuilt "
                             f"({type(err).__name__}: {err})") from err
    with dicom_as_nifti(paths, series_uid) as files:  # DICOM: the label map lies on dicom-to-nifti's grid and header
        label, affine = _predict_files(model, preset, files, paths, sw_batch_size=sw_batch_size, overlap=overlap,
                                       device=device)
        return write_label_map(label, affine, output, reference=files[0])


PROG = "python -m swinunetr_lib.infer"


@dataclasses.dataclass
class InferConfig(Config):
    checkpoint: str                       # model.pt from swinunetr_lib.finetune (or fit's checkpoints/best.pt beside
                                          # finetune_meta.json)
    input: list[str]                      # the scan: NIfTI file(s), one per channel in the task's order (several files
                                          # follow one --input), or a DICOM series folder
    output: str                           # label map to write (.nii or .nii.gz), on the input's grid
    task: str = ""                        # refuse a checkpoint fine-tuned for another task; "" = any task
    device: str = "auto"                  # auto | cpu | cuda | cuda:N (auto: CUDA if present)
    sw_batch_size: int = 4                # windows per forward pass in sliding-window inference (>= 1)
    overlap: float = 0.5                  # sliding-window overlap, 0 <= overlap < 1 (paper: 0.5, Gaussian blending)
    series_uid: str = ""                  # the SeriesInstanceUID to read when a DICOM --input folder holds several


def _parser() -> argparse.ArgumentParser:
    """``--help`` from :class:`InferConfig`'s field comments; ``--input`` takes one file per channel."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0], conflict_handler="resolve")
    InferConfig.add_arguments(parser)
    parser.add_argument("--input", dest="input", nargs="+", default=argparse.SUPPRESS, metavar="INPUT",
                        help=f"{field_comments(InferConfig)['input']} (default: required)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    missing = [f"--{k}" for k in ("checkpoint", "input", "output") if not getattr(args, k, None)]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")

    def body() -> int:
        cfg = InferConfig.from_args(args)
        check_window_options(cfg.sw_batch_size, cfg.overlap, cli=True)
        try:
            resolve_device(cfg.device)
        except ValueError as err:  # "device='x': ..." -> "--device 'x': ..."; a GPU that is not there stays an error
            detail = str(err).split(": ", 1)[-1] if str(err).startswith("device=") and ": " in str(err) else str(err)
            if "is not a device" in str(err):
                detail = "is not a device; use auto, cpu, cuda or cuda:N"
                raise InferenceError(f"--device {cfg.device!r} {detail}") from None
            raise InferenceError(f"--device {cfg.device!r}: {detail}") from None
        out = infer(cfg.checkpoint, cfg.input, cfg.output, task=cfg.task or None, device=cfg.device,
                    sw_batch_size=cfg.sw_batch_size, overlap=cfg.overlap, series_uid=cfg.series_uid or None)
        print(f"wrote {out}")
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
