"""Small shared helpers: device selection, seeding, atomic file writes, safe checkpoint loading, the run
folder lock, command-line error reporting."""
from __future__ import annotations

import contextlib
import errno
import os
import pickle
import random
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

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
            why = "this PyTorch is built without CUDA" if torch.version.cuda is None else "no usable CUDA GPU is visible"
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Nothing half-written is ever left under the final name: the file's data is flushed to disk (fsync) before
    the rename and the folder after it, so a power cut leaves the old file or the new one. The file gets the
    permissions of a plain ``open(..., "w")`` (0666 less the umask), not ``mkstemp``'s 0600. An interrupted
    write leaves ``.<name>.<random>.tmp<suffixes>`` beside ``path`` (see :func:`remove_stale_temp_files`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())
        _fsync_file(tmp_path)
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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
    except Exception:  # noqa: BLE001 - not a zip checkpoint: read the names from the error instead
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
    except Exception as err:  # noqa: BLE001 - a file that is no checkpoint can fail anywhere in the unpickler
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


class RunDirBusyError(RuntimeError):
    """Another live process holds the run folder's lock."""


LOCK_FILE = ".lock"
_held_locks: dict[Path, int] = {}  # run folders this process holds (nested holds are free)


def _read_owner(fd: int) -> str:
    """The pid written in an open lock file, or "" when there is none."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 64).decode("ascii", "replace").strip()
    except OSError:
        return ""


def _pid_running(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return False
    return True


def _open_locked(lock: Path, run_dir: Path) -> int | None:
    """An fd holding ``flock`` on ``lock`` (the very file at that path), None where file locks are unsupported;
    :class:`RunDirBusyError` when a live process holds it."""
    import fcntl

    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            owner = _read_owner(fd)
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise RunDirBusyError(f"{run_dir}: in use by another run (pid {owner or 'unknown'} holds {lock}); "
                                      "wait for it to end or choose another run folder") from None
            print(f"{run_dir}: cannot lock {lock} ({err.strerror}); continuing without protection against a "
                  "second run in this folder")
            return None
        try:  # its previous holder may have deleted the file between our open and flock: lock the current file
            st, cur = os.fstat(fd), os.stat(lock)
            if (st.st_dev, st.st_ino) == (cur.st_dev, cur.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def run_dir_lock(run_dir: str | os.PathLike[str]) -> Iterator[Path | None]:
    """Hold ``run_dir/.lock`` while the block runs, so that two runs never write one run folder.

    ``fcntl.flock`` on the file: the kernel releases it when the process ends, however it ends, so the lock of
    a dead process (the file is left behind by a kill) is taken over, with one printed line. A second live run
    gets :class:`RunDirBusyError` naming the holder's pid. Only rank 0 (``$RANK``, unset: 0) locks; nested holds
    by the same process are free. On exit the lock file is removed, and ``run_dir`` too when this call created
    it and nothing was written there. Yields the lock file (None where nothing is locked)."""
    run_dir = Path(run_dir)
    key = run_dir.resolve()
    if int(os.environ.get("RANK", "0") or 0) != 0 or key in _held_locks:
        _held_locks[key] = _held_locks.get(key, 0) + 1
        try:
            yield None
        finally:
            _held_locks[key] -= 1
            if not _held_locks[key]:
                del _held_locks[key]
        return
    try:
        import fcntl  # noqa: F401 - POSIX only
    except ImportError:
        yield None
        return
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK_FILE
    fd = _open_locked(lock, run_dir)
    if fd is None:
        yield None
        return
    try:
        previous = _read_owner(fd)
        if previous and previous != str(os.getpid()):
            state = "still running but not holding it" if _pid_running(previous) else "no longer running"
            print(f"{run_dir}: took over the stale lock of pid {previous} ({state})")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held_locks[key] = 1
        yield lock
    finally:
        _held_locks.pop(key, None)
        with contextlib.suppress(OSError):
            lock.unlink()  # while still holding it; a waiting opener notices the new inode and retries
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only when empty


class RunInterrupted(KeyboardInterrupt):
    """A run stopped on SIGINT / SIGTERM after writing its checkpoint; the same call (command) resumes it.
    :func:`run_cli` prints the message in one line and exits with 128 + the signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "interrupted"


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
    """Run a command's ``body``; bad input ends in ``prog: error: <one line>`` and exit status 2. A run stopped
    by SIGINT / SIGTERM (:class:`RunInterrupted`, its checkpoint written) prints one line and exits with
    128 + the signal number; Ctrl-C elsewhere prints ``prog: interrupted`` (exit status 130).

    Set ``SWINUNETR_TRACEBACK=1`` to see the full traceback instead (for bug reports).
    """
    try:
        return body() or 0
    except USER_ERRORS as err:
        if os.environ.get("SWINUNETR_TRACEBACK"):
            raise
        print(f"{prog}: error: {error_message(err)}", file=sys.stderr)
        return 2
    except RunInterrupted as err:  # the checkpoint is written: say so, no traceback
        print(f"{prog}: {err}", file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        if os.environ.get("SWINUNETR_TRACEBACK"):
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
