"""swinunetr_lib: self-supervised pretraining and fine-tuning of Swin UNETR on 3D CT (Tang et al., CVPR 2022).

This module only re-exports the main entry points, lazily, so ``import swinunetr_lib`` stays cheap
(torch and MONAI load when a name is first used). Everything also lives in its own module. No name here is also
the name of a folder or module of the package: ``swinunetr_lib.pretrain`` is the pretraining stage (run it with
:func:`swinunetr_lib.pretrain.run.pretrain`), ``swinunetr_lib.finetune`` and ``swinunetr_lib.infer`` likewise.
"""
from __future__ import annotations

import importlib
import logging
import warnings
from typing import Any

__version__ = "0.1.0"

# MONAI's LoadImage instantiates every reader, including the GPU-only nvImageCodec DICOM reader, which
# then warns on every load that its optional plugin is missing. We never use that reader: hush that one
# notice (a logger line and a UserWarning) so real warnings stay visible in notebooks and CI logs.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register")

_EXPORTS: dict[str, str] = {
    # data
    "fetch_example": "data.example_data",
    "build_demo_cohort": "data.cohort",
    "make_abdomen_phantom": "data.phantom",
    "validate_manifest": "data.validate",
    "build_manifest": "data.manifest",
    "dicom_to_nifti": "data.dicom",
    "totalseg_to_btcv": "data.labels",
    # self-supervised pretraining
    "SSLModel": "pretrain.model",
    "export_encoder": "pretrain.model",
    "TwoViewTransform": "pretrain.transforms",
    "SSLViewTransform": "pretrain.transforms",
    "InnerCutout": "pretrain.transforms",
    "RandomAxialRotation": "pretrain.transforms",
    "RotationLoss": "pretrain.losses",
    "ContrastiveLoss": "pretrain.losses",
    "ReconstructionLoss": "pretrain.losses",
    "SSLLoss": "pretrain.losses",
    "PretrainConfig": "pretrain.run",
    # the one training loop
    "TrainConfig": "train.loop",
    "fit": "train.loop",
    # fine-tuning, evaluation, inference
    "build_finetune_model": "models.swin_unetr",
    "FinetuneConfig": "finetune.run",
    "get_preset": "finetune.task_presets",
    "evaluate": "infer.evaluation",
    # utilities
    "Config": "config",
    "resolve_device": "utils.device",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'swinunetr_lib' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
