"""Inference and evaluation of fine-tuned checkpoints, and the MONAI bundle export
(``python -m swinunetr_lib.infer``, ``python -m swinunetr_lib.infer.export``)."""
