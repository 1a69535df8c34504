"""Device selection and seeding."""
from __future__ import annotations

import random

import numpy as np
import torch

_said_cpu_fallback = False


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU (and says so, once per process); an explicit device that
    is not available here (``"cuda"`` without a usable GPU, ``"cuda:3"`` on a 2-GPU machine) is a
    ``ValueError``: a run asked to use a GPU never silently runs on the CPU."""
    global _said_cpu_fallback
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if not _said_cpu_fallback:
            _said_cpu_fallback = True
            print("device=auto: no usable CUDA GPU, running on the CPU")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device={device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this PyTorch is built without CUDA" if torch.version.cuda is None
                   else "no usable CUDA GPU is visible")
            raise ValueError(f"device={device!r}: {why}; use device=cpu, or auto to take a GPU only when there is one")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                             f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device={device!r}: Apple MPS is not available here; use device=cpu or auto")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
