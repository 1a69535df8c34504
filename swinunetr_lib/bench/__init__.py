"""Benchmarks at the paper's size against MONAI's eager model (``python -m swinunetr_lib.bench``)."""
