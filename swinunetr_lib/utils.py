"""Small shared helpers: device selection, seeding, atomic file writes, command-line error reporting."""
from __future__ import annotations

import contextlib
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; an explicit ``"cuda"`` without a GPU falls back to CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        return torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"device={device!r} is not a device; use auto, cpu, cuda or cuda:N") from None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Nothing half-written is ever left under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_folder_creatable(folder: str | os.PathLike[str], what: str) -> Path:
    """``folder``, if it is a writable folder or can be created (its first existing ancestor is a writable
    folder); else ``ValueError("<what>: ...")``. Nothing is created: for checks before any work starts."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{what}: cannot be created, {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: folder {existing} is not writable")
    return folder


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary file, then rename."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def atomic_write_text(text: str, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


# Errors a command line reports in one line (bad files, values, checkpoints); our own error classes
# (ConfigError, DicomError, InferenceError, EncoderLoadError, NotebookError, ...) derive from these.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError, RuntimeError, FloatingPointError)


def error_message(err: BaseException) -> str:
    """One readable line for ``err``: MONAI wraps a failing transform's error in
    ``RuntimeError("applying transform ...")``; we report the first error of the ``raise ... from`` chain
    that is not such a wrapper (ours name the file). KeyError messages lose their quotes."""
    current: BaseException | None = err
    seen = 0
    while current is not None and seen < 20:
        text = current.args[0] if isinstance(current, KeyError) and current.args else str(current)
        if not str(text).startswith("applying transform"):
            ours = type(current).__module__.split(".")[0] in ("swinunetr_lib", "__main__")  # also under python -m
            plain = ours or isinstance(current, (ValueError, KeyError, OSError))
            return str(text) if plain else f"{type(current).__name__}: {text}"
        current, seen = current.__cause__ or current.__context__, seen + 1
    return str(err)


def run_cli(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command's ``body``; bad input ends in ``prog: error: <one line>`` and exit status 2.

    Set ``SWINUNETR_TRACEBACK=1`` to see the full traceback instead (for bug reports).
    """
    try:
        return body() or 0
    except USER_ERRORS as err:
        if os.environ.get("SWINUNETR_TRACEBACK"):
            raise
        print(f"{prog}: error: {error_message(err)}", file=sys.stderr)
        return 2
