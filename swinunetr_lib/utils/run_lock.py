"""The run folder lock: one live run per folder; the lock of a killed run is taken over."""
from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from .files import current_umask, refuse_file_in_the_way

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no file locks, runs go unprotected
    fcntl = None  # type: ignore[assignment]


class RunDirBusyError(RuntimeError):
    """Another live process holds the run folder's lock; ``owner`` is its pid as the lock file says ("" unknown)."""

    def __init__(self, message: str, owner: str = "") -> None:
        super().__init__(message)
        self.owner = owner


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
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            owner = _read_owner(fd)
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise RunDirBusyError(f"{run_dir}: in use by another run (pid {owner or 'unknown'} holds {lock}); "
                                      "wait for it to end or choose another run folder", owner) from None
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
    if fcntl is None:  # POSIX only
        yield None
        return
    created = not run_dir.exists()
    refuse_file_in_the_way(run_dir, f"run folder {run_dir}")  # named, not "[Errno 17] File exists"
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
