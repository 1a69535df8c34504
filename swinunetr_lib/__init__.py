"""swinunetr_lib: self-supervised pretraining and fine-tuning of Swin UNETR on 3D CT (Tang et al., CVPR 2022).

This module only re-exports the main entry points, lazily, so ``import swinunetr_lib`` stays cheap
(torch and MONAI load when a name is first used). Everything also lives in its own module.
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
    "fetch_example": "example_data",
    "build_demo_cohort": "data.cohort",
    "make_abdomen_phantom": "data.phantom",
    "validate_manifest": "data.validate",
    "build_manifest": "data.manifest",
    "dicom_to_nifti": "data.dicom",
    "totalseg_to_btcv": "data.labels",
    # self-supervised pretraining
    "SSLModel": "ssl_model",
    "export_encoder": "ssl_model",
    "TwoViewTransform": "ssl_transforms",
    "SSLViewTransform": "ssl_transforms",
    "InnerCutout": "ssl_transforms",
    "RandomAxialRotation": "ssl_transforms",
    "RotationLoss": "losses",
    "ContrastiveLoss": "losses",
    "ReconstructionLoss": "losses",
    "SSLLoss": "losses",
    "PretrainConfig": "pretrain",
    "pretrain": "pretrain",
    # the one training loop
    "TrainConfig": "train",
    "fit": "train",
    # fine-tuning, evaluation, inference
    "build_finetune_model": "finetune_model",
    "FinetuneConfig": "finetune",
    "finetune": "finetune",
    "get_preset": "task_presets",
    "evaluate": "evaluate",
    "infer": "infer",
    # utilities
    "Config": "config",
    "resolve_device": "utils",
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
