"""Shared fixtures. Tests run on the real example scans (through the mirror folder) and on phantoms."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def example_ct_sm():
    from swinunetr_lib.example_data import fetch_example

    return fetch_example("example_ct_sm.nii.gz")


@pytest.fixture(scope="session")
def example_seg():
    from swinunetr_lib.example_data import fetch_example

    return fetch_example("example_seg.nii.gz")
