"""Files written whole or not at all (atomic writes, stale temp files), and checkpoints read without running code."""
from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Nothing half-written is ever left under the final name: the file's data is flushed to disk (fsync) before
    the rename and the folder after it, so a power cut leaves the old file or the new one. The file gets the
    permissions of a plain ``open(..., "w")`` (0666 less the umask), not ``mkstemp``'s 0600. An interrupted
    write leaves ``.<name>.<random>.tmp<suffixes>`` beside ``path`` (see :func:`remove_stale_temp_files`).
    """
    path = Path(path)
    refuse_file_in_the_way(path.parent, f"cannot write {path}")  # named, not "[Errno 17] File exists"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes), dir=path.parent)
    except OSError as err:
        raise write_error(path, err) from err
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())
        _fsync_file(tmp_path)
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except (OSError, RuntimeError) as err:  # RuntimeError: torch.save's "enforce fail at inline_container.cc"
        failed = write_error(path, err)
        if failed is err:
            raise
        raise failed from err
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


class DiskFullError(OSError):
    """A write that failed for lack of space; the message names the file and says the disk is full."""

    def __init__(self, path: str | os.PathLike[str], detail: str) -> None:
        super().__init__(f"{path}: cannot write, the disk is full ({detail}); free some space and run again")
        self.errno, self.filename = errno.ENOSPC, str(path)

    def __str__(self) -> str:  # the message, not OSError's "[Errno 28] ...: <path>"
        return str(self.args[0])


def _free_space(folder: Path) -> str:
    """``"12 MB free on /data"``, or ``"free space unknown"``."""
    try:
        return f"{shutil.disk_usage(folder).free / 1e6:.0f} MB free in {folder}"
    except OSError:
        return "free space unknown"


def write_error(path: str | os.PathLike[str], err: BaseException) -> BaseException:
    """``err`` (raised while writing ``path``) as one line naming ``path``: a full disk or quota
    (``ENOSPC``/``EDQUOT``, or torch.save's ``enforce fail at inline_container.cc`` when its stream cannot be
    written) becomes :class:`DiskFullError`; anything else (a download's error inside the block, ...) is returned
    unchanged."""
    path = Path(path)
    text = str(err)
    if isinstance(err, DiskFullError):
        return err
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(path, f"{err.strerror or 'no space left on device'}; {_free_space(path.parent)}")
    if isinstance(err, RuntimeError) and ("inline_container" in text or "PytorchStreamWriter" in text):
        return DiskFullError(path, f"torch.save could not write its data; {_free_space(path.parent)}")
    return err


def refuse_file_in_the_way(folder: str | os.PathLike[str], what: str) -> None:
    """``NotADirectoryError("<what>: <file> is a file, not a folder")`` when ``folder`` or its first existing
    ancestor is a file (``mkdir`` would say only ``[Errno 17] File exists``)."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise NotADirectoryError(f"{what}: {existing} is a file, not a folder; remove it or choose another folder")


def current_umask() -> int:
    """This process's umask (read from ``/proc`` where possible, which unlike ``os.umask`` changes nothing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    """Flush ``path``'s data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename) to the disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


# mkstemp's random part: 8 characters of [a-z0-9_]
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)*$")


def remove_stale_temp_files(*folders: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that :func:`atomic_path` left in ``folders`` when a write was interrupted
    (a kill, a power cut). Call it only while no other process writes there (e.g. holding :func:`run_dir_lock`)."""
    removed = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if _TEMP_NAME.match(p.name) and p.is_file() and not p.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed


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


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that holds more than tensors and plain values (refused: unpickling
    such a file could run code). The message names the file."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = str(path), problem


def _numpy_rng_globals() -> list[Any]:
    """Exactly what ``np.random.get_state()`` pickles to (an ndarray of uint32): checkpoints of earlier versions
    stored the NumPy RNG state that way."""
    reconstruct = np.zeros(1, np.uint32).__reduce__()[0]  # numpy.(_)core.multiarray._reconstruct
    return [reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _unpickling_detail(err: BaseException) -> str:
    """The informative part of torch's weights-only error (its boilerplate about PyTorch 2.6 dropped)."""
    boiler = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch 2.6")
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip() and not ln.strip().startswith(boiler)]
    return " ".join(lines).replace("WeightsUnpickler error: ", "") or type(err).__name__


def _unsafe_globals(path: Path, err: BaseException) -> list[str]:
    """The Python objects (``module.name``) a checkpoint needs beyond tensors and plain values; read without
    running anything."""
    try:
        found = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a zip checkpoint: read the names from the error instead
        found = []
    return found or re.findall(r"GLOBAL ([\w.]+)", str(err))


def safe_torch_load(path: str | os.PathLike[str], *, allow_numpy_rng: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` to the CPU: tensors, containers and plain values only, so loading
    never runs code from the file. Anything else raises :class:`CheckpointError` naming the file and what it
    holds. ``allow_numpy_rng`` also admits the NumPy array types of a NumPy RNG state (old ``last.pt`` files)."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_rng_globals() if allow_numpy_rng else []):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = _unsafe_globals(path, err)
        if unsafe:
            shown = ", ".join(unsafe[:5]) + (" ..." if len(unsafe) > 5 else "")
            raise CheckpointError(path, f"refused to load: the file holds Python objects ({shown}), not only tensors "
                                        "and plain values, and unpickling them could run code; use a checkpoint "
                                        "written by this library") from None
        raise CheckpointError(path, f"cannot be read as a torch checkpoint ({_unpickling_detail(err)})") from err
    except Exception as err:  # a file that is no checkpoint can fail anywhere in the unpickler
        detail = (str(err).splitlines() or [""])[0] if not isinstance(err, KeyError) else ""
        detail = detail or f"{type(err).__name__} while unpickling"
        raise CheckpointError(path, f"cannot be read as a torch checkpoint ({detail})") from err


def load_checkpoint_mapping(path: str | os.PathLike[str], kind: str = "checkpoint") -> Mapping[str, Any]:
    """:func:`safe_torch_load` of a file that must exist and hold a mapping (a state dict, or a dict holding one).
    A missing file, one that cannot be read or is unsafe, or one that holds something else is a
    :class:`CheckpointError` naming the file; ``kind`` names what was expected ("pretrained checkpoint", ...)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, f"{kind} not found")
    obj = safe_torch_load(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, f"holds a {type(obj).__name__}, not a {kind} mapping with a state dict")
    return obj
