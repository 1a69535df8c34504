"""Precomputed runs for a workshop: the instructor runs the demo once, attendees see its results at once.

    python -m swinunetr_lib.notebooks.precomputed pack [--runs runs/demo] [--out runs/demo.precomputed.tar.gz]
    python -m swinunetr_lib.notebooks.precomputed unpack ARCHIVE        # -> runs_dir()/precomputed/
    python -m swinunetr_lib.notebooks.precomputed list [ARCHIVE]        # finished runs unpacked here (or in ARCHIVE)

``pack`` reads a runs folder (``make demo`` writes ``runs/demo``: executed notebooks and ``figures/`` at its
top, the run folders under ``artifacts/``; a plain runs folder such as ``runs/notebooks`` works too) and
writes one ``.tar.gz`` holding

- the run folders as the notebooks name them under ``runs_dir()`` (``ssl_pretraining``,
  ``finetune_btcv/<run>``, ``finetune_msd/<task>``, ``label_efficiency``): final models, ``metrics.csv``,
  evaluation tables, predictions, TensorBoard logs. The ``checkpoints/`` of a run that wrote ``model.pt``
  (fine-tuning: the optimizer state for resuming, 2-3x the model's size) are left out unless
  ``--include-training-state``; pretraining keeps ``checkpoints/last.pt``, the only file holding the SSL model
  with its heads (notebook 02 reconstructs with it);
- ``executed/``: the executed notebooks and their figures;
- ``SHA256SUMS`` (``sha256sum -c`` format) and ``precomputed.json`` (what was packed, each file's size).

Beside the archive, ``<archive>.sha256sums`` lists the archive's own SHA-256 and then every member's, so
``sha256sum -c --ignore-missing <archive>.sha256sums`` checks a copy on a USB stick with standard tools.

``unpack`` checks the archive against that list when it is beside it, then extracts into a temporary
folder beside ``runs_dir()/precomputed`` and verifies every member against ``SHA256SUMS`` before anything
is placed: only plain files and folders, no absolute paths, no ``..``, no links; a member whose checksum
differs, or that the list does not name, stops the unpacking with one line naming it. The verified folder
then replaces ``runs_dir()/precomputed`` (or ``--dest``) by a rename, with a marker file ``.swinunetr_precomputed``
(the archive's SHA-256, the files placed). Unpack never deletes what it did not place: a destination that is a
file, or a folder that is neither empty nor a previous unpack holding only what that unpack placed, is refused
with one line.

A run folder is *finished* (:func:`find_precomputed`) when it holds its run's final artefact, a non-empty
file written last and atomically by the run (:data:`FINAL_ARTEFACTS`: ``model_swinvit.pt`` of pretraining,
``model.pt`` of fine-tuning, ``results.json`` of notebook 03, ``summary.csv`` beside ``results.csv`` of the
label-efficiency sweep), holds no ``.lock`` (a run still writing there), and, where ``precomputed.json`` is present (it
is after ``unpack``), every file it lists under that folder exists with its recorded size: a half-copied folder does not
qualify. Checkpoints inside are only ever read by the library's weights-only loaders
(:func:`swinunetr_lib.utils.files.safe_torch_load`), never unpickled as code.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import functools
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import IO

from ..config import Config
from ..data.example_data import sha256_of
from ..paths import absolute_from_cwd, resolve_path, runs_dir
from ..utils.cli import run_cli
from ..utils.files import DiskFullError, atomic_path, atomic_write_text, write_error
from ..utils.run_lock import LOCK_FILE, RunDirBusyError, run_dir_lock

PROG = "python -m swinunetr_lib.notebooks.precomputed"
PRECOMPUTED = "precomputed"
MAX_DEPTH = 64  # folders a member may be nested in
SUMS_FILE = "SHA256SUMS"
INFO_FILE = "precomputed.json"
EXECUTED = "executed"
# a run's final artefact: the file(s) it writes last, each atomically (a sweep's summary.csv beside its results.csv)
FINAL_ARTEFACTS = (("model_swinvit.pt",), ("model.pt",), ("results.json",), ("results.csv", "summary.csv"))
SKIPPED_TOP = ("data_curation", PRECOMPUTED)  # notebook 01's deliberately broken files; never nest archives
TRAINING_STATE = "checkpoints"
MAX_UNPACK_BYTES = 20 * 2**30  # default cap on what one unpack writes (--max-gib); the demo's runs are far below
# Deflate (gzip) cannot compress better than about 1032:1, so an honest .tar.gz never declares more than ~1032x its own
# size; above 1000x the headers claim bytes the compressed stream cannot hold (a lying or sparse header: a "zip bomb")
# or the files are nearly all zeros, which pack's runs (checkpoints, CSVs, compressed NIfTI, PNG) never are.
MAX_UNPACK_RATIO = 1000
FREE_SPACE_MARGIN = 1 * 2**30  # left free on the destination's file system after unpacking
SWEEP_RUN_PREFIX = "label_efficiency_"  # the runs notebook 06's sweep left in finetune_btcv/ before it ran
# through the sweep verb (archives packed then still hold them; a sweep now keeps its runs in its own folder)
MARKER = ".swinunetr_precomputed"  # written by unpack: the archive's SHA-256 and the files it placed (JSON)
# the temporary folders of an unpack: .<dest>.<pid>.<random>.tmp (being filled), .<dest>.old.<pid>.<random> (replaced)
_STALE_UNPACK = re.compile(r"^\.(?P<name>.+?)\.(?:old\.)?(?P<pid>\d+)\.[a-z0-9_]{8}(?:\.tmp)?$")


class PrecomputedError(ValueError):
    """An archive or runs folder that cannot be packed, unpacked or trusted; the message names it."""


def precomputed_dir() -> Path:
    """``runs_dir()/precomputed``: where ``unpack`` places the instructor's runs."""
    return runs_dir() / PRECOMPUTED


def _check_name(name: str) -> PurePosixPath:
    rel = PurePosixPath(str(name).strip("/"))
    if not str(name).strip() or rel.is_absolute() or ".." in rel.parts or str(rel) == ".":
        raise ValueError(f"precomputed run name {name!r}: expected a run folder such as 'finetune_msd/Task09_Spleen'")
    return rel


def _recorded_sizes(root: Path) -> dict[str, int] | None:
    """``{path: bytes}`` of ``root/precomputed.json``; None when there is none or it is unreadable."""
    try:
        return {str(k): int(v) for k, v in json.loads((root / INFO_FILE).read_text())["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _final_artefact(folder: Path) -> str | None:
    """The name of ``folder``'s final artefact (non-empty files), None when it has none."""
    for names in FINAL_ARTEFACTS:
        if all((folder / n).is_file() and (folder / n).stat().st_size > 0 for n in names):
            return names[-1]
    return None


def is_finished(folder: Path, root: Path | None = None) -> bool:
    """True when ``folder`` holds a finished run (see the module docstring); ``root`` is the folder whose
    ``precomputed.json`` lists the expected files (default: ``folder``'s ancestor named ``precomputed``)."""
    folder = Path(folder)
    if not folder.is_dir() or (folder / LOCK_FILE).exists():
        return False
    if _final_artefact(folder) is None:
        return False
    if root is None:
        root = next((p for p in folder.parents if p.name == PRECOMPUTED), None)
    sizes = _recorded_sizes(root) if root is not None else None
    if sizes is None:
        return True
    prefix = folder.relative_to(root).as_posix() + "/"
    for rel, size in sizes.items():
        if rel.startswith(prefix):
            f = root / rel
            if not f.is_file() or f.stat().st_size != size:
                return False
    return True


def find_precomputed(name: str) -> Path | None:
    """``runs_dir()/precomputed/<name>`` when that folder holds a finished run, else None.

    ``name`` is a run folder as the notebooks name it under ``runs_dir()``: ``"ssl_pretraining"``,
    ``"finetune_btcv/scratch_frac1_seed0"``, ``"finetune_msd/Task901_PhantomSpleen"``, ``"label_efficiency"``.
    """
    folder = precomputed_dir() / _check_name(name)
    return folder if is_finished(folder, precomputed_dir()) else None


def finished_runs(root: Path | None = None) -> list[str]:
    """Names (relative to ``root``, default ``runs_dir()/precomputed``) of every finished run folder."""
    root = Path(root) if root is not None else precomputed_dir()
    if not root.is_dir():
        return []
    return sorted(p.relative_to(root).as_posix() for p in sorted(root.rglob("*"))
                  if p.is_dir() and not p.is_symlink() and is_finished(p, root))


@dataclasses.dataclass(frozen=True)
class ShownRun:
    """A finished run a notebook shows, and whose it is."""

    folder: Path  # the run folder
    source: str   # "the instructor's precomputed run" or "your run"

    def describe(self) -> str:
        """``"the instructor's precomputed run finetune_btcv/x (360 steps, feature size 48, init scratch)"``, read
        from the run's files (``metrics.csv``; ``finetune_meta.json`` or ``pretrain_config.json``)."""
        facts = []
        try:
            steps = [int(line.split(",", 1)[0]) for line in (self.folder / "metrics.csv").read_text().splitlines()[1:]
                     if line.split(",", 1)[0].isdigit()]
            facts += [f"{max(steps)} steps"] if steps else []
        except OSError:
            pass
        for name in ("finetune_meta.json", "pretrain_config.json"):
            try:
                meta = json.loads((self.folder / name).read_text())
            except (OSError, ValueError):
                continue
            facts += [f"feature size {meta['feature_size']}"] if "feature_size" in meta else []
            facts += [f"init {meta['init']}"] if "init" in meta else []
        name = self.folder.name if self.folder.name == "ssl_pretraining" else "/".join(self.folder.parts[-2:])
        return f"{self.source} {name}" + (f" ({', '.join(facts)})" if facts else "")


def choose_run(kind: str, runs: Path | None = None, *, precomputed: bool = True) -> ShownRun | None:
    """The run a notebook should show for ``kind``: ``"ssl_pretraining"`` (a run with ``checkpoints/last.pt``, the
    SSL model with its heads) or ``"finetune_btcv"`` (a run with ``model.pt``).

    The instructor's finished run under ``runs/precomputed`` (default ``runs_dir()``) comes first when ``precomputed``;
    else the attendee's own run under ``runs``. Among several fine-tuning runs, notebook 03's own come before notebook
    06's sweep runs (``finetune_btcv/label_efficiency_*``: short, small models), then by name."""
    if kind not in ("ssl_pretraining", "finetune_btcv"):
        raise ValueError(f"kind={kind!r}: expected 'ssl_pretraining' or 'finetune_btcv'")
    runs = Path(runs) if runs is not None else runs_dir()
    need = "checkpoints/last.pt" if kind == "ssl_pretraining" else "model.pt"
    roots = ([(runs / PRECOMPUTED, "the instructor's precomputed run")] if precomputed else []) + [(runs, "your run")]
    for root, source in roots:
        top = root / kind
        folders = [top] if kind == "ssl_pretraining" else sorted(
            (p for p in top.glob("*") if p.is_dir()), key=lambda p: (p.name.startswith(SWEEP_RUN_PREFIX), p.name))
        for folder in folders:
            finished = is_finished(folder, root) if source != "your run" else True
            if finished and (folder / need).is_file() and not (folder / LOCK_FILE).exists():
                return ShownRun(folder, source)
    return None


# ------------------------------------------------------------------------------------------------ pack
@dataclasses.dataclass
class PackConfig(Config):
    runs: str = "runs/demo"               # runs folder to pack: `make demo`'s runs/demo, or a runs_dir() such as
                                          # runs/notebooks
    out: str = ""                         # archive to write; empty means <runs>.precomputed.tar.gz beside the folder
    include_training_state: bool = False  # also pack the fine-tuning runs' checkpoints/ (optimizer state for resuming;
                                          # 2-3x larger)



def _walk_files(folder: Path) -> Iterator[Path]:
    """Plain files under ``folder`` (symbolic links and hidden names such as ``.lock`` or temporary files
    skipped), in a stable order. Walked without recursion (``os.walk`` recurses before Python 3.12); folders
    nested more than :data:`MAX_DEPTH` deep are a :class:`PrecomputedError` naming the folder."""
    stack = [(folder, 0)]
    while stack:
        current, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PrecomputedError(f"{current}: folders nested more than {MAX_DEPTH} deep under {folder}; "
                                   "refused (unpack would refuse them too): remove that folder and pack again")
        entries = sorted(current.iterdir(), key=lambda p: p.name)
        for p in entries:
            if not p.name.startswith(".") and p.is_file() and not p.is_symlink():
                yield p
        stack.extend((p, depth + 1) for p in reversed(entries)
                     if not p.name.startswith(".") and p.is_dir() and not p.is_symlink())


def _is_training_state(path: Path, rel: Path) -> bool:
    """A file under a ``checkpoints/`` folder whose run also wrote ``model.pt`` (its weights are there)."""
    if TRAINING_STATE not in rel.parts[:-1]:
        return False
    run = path.parents[len(rel.parts) - 1 - rel.parts.index(TRAINING_STATE)]
    return (run / "model.pt").is_file()


def collect_files(runs: Path, *, include_training_state: bool = False) -> dict[str, Path]:
    """``{archive path: source file}`` for a runs folder: run folders at the archive's top, executed notebooks
    and their figures under ``executed/``."""
    runs = Path(runs)
    if not runs.is_dir():
        raise PrecomputedError(f"{runs}: no such runs folder (run `make demo` first, or give --runs)")
    artifacts = runs / "artifacts" if (runs / "artifacts").is_dir() else runs
    files: dict[str, Path] = {}
    for top in sorted(p for p in artifacts.iterdir() if p.is_dir() and not p.is_symlink()):
        if top.name in SKIPPED_TOP or top.name.startswith(".") or artifacts == runs and top.name in ("data", "figures"):
            continue
        for f in _walk_files(top):
            rel = f.relative_to(artifacts)
            if include_training_state or not _is_training_state(f, rel):
                files[rel.as_posix()] = f
    if artifacts != runs:
        for nb in sorted(runs.glob("[0-9][0-9]_*.ipynb")):
            files[f"{EXECUTED}/{nb.name}"] = nb
        if (runs / "figures").is_dir():
            for f in _walk_files(runs / "figures"):
                files[f"{EXECUTED}/figures/{f.relative_to(runs / 'figures').as_posix()}"] = f
    return files


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def pack(runs: str | os.PathLike[str] = "runs/demo", out: str | os.PathLike[str] | None = None, *,
         include_training_state: bool = False, compresslevel: int = 6) -> Path:
    """Write the finished runs of ``runs`` into one ``.tar.gz`` (atomically) with ``SHA256SUMS`` inside and
    ``<out>.sha256sums`` beside it; returns the archive's path. ``compresslevel``: gzip's 1 (fastest) to 9."""
    runs = resolve_path(runs)
    files = collect_files(runs, include_training_state=include_training_state)
    folders = {path.parent: PurePosixPath(rel).parent.as_posix() for rel, path in files.items() if "/" in rel}
    finished = sorted(name for folder, name in folders.items()
                      if not name.startswith(EXECUTED) and _final_artefact(folder)
                      and not (folder / LOCK_FILE).exists())
    if not finished:
        artefacts = ", ".join(n[-1] for n in FINAL_ARTEFACTS)
        raise PrecomputedError(f"{runs}: no finished run to pack (none holds {artefacts}); run `make demo` first")
    out = resolve_path(out) if out else runs.with_name(runs.name + ".precomputed.tar.gz")
    if out.resolve().is_relative_to(runs.resolve()):
        raise PrecomputedError(f"{out}: the archive must not be written inside the runs folder {runs}")
    sums = {rel: sha256_of(path) for rel, path in files.items()}
    info = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "source": str(runs), "runs": finished,
            "include_training_state": include_training_state,
            "files": {rel: path.stat().st_size for rel, path in files.items()}}
    info_bytes = (json.dumps(info, indent=1) + "\n").encode()
    sums = {INFO_FILE: hashlib.sha256(info_bytes).hexdigest(), **sums}
    sums_text = "".join(f"{digest}  {rel}\n" for rel, digest in sums.items())
    with atomic_path(out) as tmp:
        with tarfile.open(tmp, "w:gz", compresslevel=compresslevel) as tar:
            _add_bytes(tar, SUMS_FILE, sums_text.encode())
            _add_bytes(tar, INFO_FILE, info_bytes)
            for rel, path in files.items():
                member = tar.gettarinfo(str(path), arcname=rel)
                member.uid = member.gid = 0
                member.uname = member.gname = ""
                member.mode = 0o644
                with open(path, "rb") as f:
                    tar.addfile(member, f)
        archive_sum = sha256_of(tmp)
    beside = Path(f"{out}.sha256sums")
    atomic_write_text(f"{archive_sum}  {out.name}\n" + sums_text, beside)
    return out


# ---------------------------------------------------------------------------------------------- unpack
def _safe_member_name(archive: Path, member: tarfile.TarInfo) -> PurePosixPath:
    rel = PurePosixPath(member.name)
    kind = "a link" if member.issym() or member.islnk() else "not a plain file or folder"
    if not (member.isfile() or member.isdir()):
        raise PrecomputedError(f"{archive}: member {member.name!r} is {kind}; refused, nothing was unpacked")
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or member.name.startswith(("/", "\\")) \
            or any(":" in p or "\\" in p for p in rel.parts):
        raise PrecomputedError(f"{archive}: member {member.name!r} points outside the folder; refused, "
                               "nothing was unpacked")
    if len(rel.parts) > MAX_DEPTH:  # Python's recursive mkdir would end in a RecursionError
        raise PrecomputedError(f"{archive}: member {member.name[:60]!r}... is nested {len(rel.parts)} folders deep "
                               f"(more than {MAX_DEPTH}); refused, nothing was unpacked")
    return PurePosixPath(*[p for p in rel.parts if p != "."])


def _read_sums(archive: Path, text: str) -> dict[str, str]:
    sums = {}
    for line in text.splitlines():
        if line.strip():
            digest, _, rel = line.partition("  ")
            if len(digest) != 64 or not rel:
                raise PrecomputedError(f"{archive}: {SUMS_FILE} line {line[:80]!r} is not '<sha256>  <path>'")
            sums[rel.strip()] = digest.lower()
    return sums


def verify_beside(archive: Path) -> bool:
    """Check ``archive`` against the first line of ``<archive>.sha256sums`` when that file exists; returns
    whether it was checked. A mismatch is a :class:`PrecomputedError` (a bad copy: copy it again)."""
    beside = Path(f"{archive}.sha256sums")
    if not beside.is_file():
        return False
    first = (beside.read_text().splitlines() or [""])[0].split()
    if len(first) != 2 or len(first[0]) != 64:
        raise PrecomputedError(f"{beside}: first line is not '<sha256>  {archive.name}'")
    if sha256_of(archive) != first[0].lower():
        raise PrecomputedError(f"{archive}: SHA-256 differs from {beside.name} (corrupt or incomplete copy); "
                               "copy the archive again")
    return True


def _previous_unpack(dest: Path) -> list[str] | None:
    """The files (relative paths) a previous :func:`unpack` placed at ``dest``, read from its marker; None when
    ``dest`` holds no readable marker."""
    try:
        files = json.loads((dest / MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [str(f) for f in files] if isinstance(files, list) else None


def check_destination(dest: Path) -> None:
    """Refuse a ``dest`` whose contents :func:`unpack` would destroy: a file or link, or a folder that is neither
    empty nor a previous unpack (its :data:`MARKER`), or a previous unpack holding files the archive did not put
    there. One line naming ``dest`` and what to do."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise PrecomputedError(f"{dest}: exists and is not a folder; refused, give --dest a new or empty folder")
    if not dest.is_dir() or not any(dest.iterdir()):
        return
    placed = _previous_unpack(dest)
    if placed is None:
        raise PrecomputedError(f"{dest}: exists and is not a previous unpack (no {MARKER}); refused so that nothing "
                               "there is deleted: give --dest a new or empty folder, or move its contents away")
    ours = set(placed) | {MARKER}
    extra = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")
                   if not p.is_dir() or p.is_symlink())
    extra = [rel for rel in extra if rel not in ours]
    if extra:
        raise PrecomputedError(f"{dest}: holds {len(extra)} file(s) the previous unpack did not place, e.g. "
                               f"{extra[0]!r}; refused so that they are not deleted: move them away or give another "
                               "--dest")


def remove_stale_unpack_folders(dest: Path) -> list[Path]:
    """Delete the temporary folders beside ``dest`` that an earlier :func:`unpack` left when it was killed
    (``.<dest>.<pid>.<random>.tmp`` and ``.<dest>.old.<pid>.<random>``), only those whose process has ended."""
    removed = []
    if not dest.parent.is_dir():
        return removed
    for p in dest.parent.iterdir():
        m = _STALE_UNPACK.match(p.name)
        if m and m["name"] == dest.name and p.is_dir() and not p.is_symlink() and not _pid_alive(int(m["pid"])):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's live process (PermissionError), or a pid we cannot ask about
        return True
    return True


def _size_text(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def check_declared_sizes(archive: Path, members: Iterable[tarfile.TarInfo], *, archive_bytes: int,
                         free_bytes: int, max_bytes: int = MAX_UNPACK_BYTES,
                         max_ratio: float = MAX_UNPACK_RATIO) -> int:
    """The total size the ``members`` declare (their headers' ``TarInfo.size``), read before anything is written;
    :class:`PrecomputedError` (one line) as soon as the running total exceeds ``max_bytes``, ``free_bytes``, or
    ``max_ratio`` times ``archive_bytes`` (see :data:`MAX_UNPACK_RATIO` for why), or a member is sparse (it
    declares bytes the archive does not hold; pack never writes one) or is unsafe (:func:`_safe_member_name`).
    ``members`` may be a lazy ``TarFile``: a refused header stops the reading there."""
    total = 0
    for member in members:
        _safe_member_name(archive, member)
        if member.issparse() or member.type == tarfile.GNUTYPE_SPARSE:
            raise PrecomputedError(f"{archive}: member {member.name!r} is a sparse file (declares "
                                   f"{_size_text(member.size)} the archive does not hold); refused, nothing was "
                                   "unpacked")
        total += max(0, member.size)
        limit = None
        if total > max_bytes:
            limit = f"more than the cap of {_size_text(max_bytes)} (--max-gib)"
        elif total > free_bytes:
            limit = f"more than the {_size_text(max(free_bytes, 0))} free where it would be unpacked"
        elif total > max_ratio * archive_bytes:
            limit = (f"over {max_ratio:g}x the archive's {_size_text(archive_bytes)}, a lying header or "
                     "files of nothing but zeros")
        if limit:
            raise PrecomputedError(f"{archive}: members declare {_size_text(total)} (up to {member.name!r}), "
                                   f"{limit}; refused, nothing was unpacked")
    return total


def _copy_member(archive: Path, member: tarfile.TarInfo, src: IO[bytes], dst: IO[bytes]) -> str:
    """Copy ``src`` to ``dst`` and return its SHA-256; :class:`PrecomputedError` when it yields more bytes than
    ``member``'s header declares."""
    h = hashlib.sha256()
    written = 0
    for chunk in iter(functools.partial(src.read, 1 << 20), b""):
        written += len(chunk)
        if written > member.size:
            raise PrecomputedError(f"{archive}: member {member.name!r} holds more than the {_size_text(member.size)} "
                                   "its header declares; refused, nothing was unpacked")
        h.update(chunk)
        dst.write(chunk)
    return h.hexdigest()


def unpack(archive: str | os.PathLike[str], dest: str | os.PathLike[str] | None = None, *,
           max_bytes: int = MAX_UNPACK_BYTES, max_ratio: float = MAX_UNPACK_RATIO) -> Path:
    """Verify every member of ``archive`` and place it at ``dest`` (default ``runs_dir()/precomputed``); returns
    ``dest``. Nothing is placed unless every check passes.

    ``dest`` must be new, an empty folder, or a previous unpack (it holds :data:`MARKER`, written by this function
    with the archive's SHA-256 and the files it placed) holding only what that unpack placed: then it is replaced.
    Anything else is refused (:func:`check_destination`), so an unpack never deletes a file it did not put there.

    Before anything is written the members' declared sizes are checked (:func:`check_declared_sizes`: at most
    ``max_bytes``, the free space of ``dest``'s file system less :data:`FREE_SPACE_MARGIN`, ``max_ratio`` times the
    archive's size); while extracting, a member yielding more than it declared stops the unpacking. A refusal
    leaves nothing behind."""
    archive = Path(archive)
    if not archive.is_file():
        raise PrecomputedError(f"{archive}: no such archive (the instructor's `make pack` writes it)")
    dest = Path(dest) if dest is not None else precomputed_dir()
    check_destination(dest)
    verify_beside(archive)
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock_dir = unpack_lock_dir(dest)
    try:
        with run_dir_lock(lock_dir):  # one unpack at a time into one destination
            return _unpack_locked(archive, dest, max_bytes=max_bytes, max_ratio=max_ratio)
    except RunDirBusyError as err:
        raise PrecomputedError(f"{dest}: another unpack into it is running (pid {err.owner or 'unknown'}); wait for "
                               "it to end, then run this again") from None
    finally:
        with contextlib.suppress(OSError):
            lock_dir.rmdir()  # a killed unpack's folder, once its lock is taken over (only when empty)


def unpack_lock_dir(dest: Path) -> Path:
    """The folder beside ``dest`` whose ``.lock`` an unpack holds (created and removed by the unpack; left
    behind only by a killed one, whose lock the next unpack takes over)."""
    return dest.parent / f".{dest.name}.unpacking"


def _unpack_locked(archive: Path, dest: Path, *, max_bytes: int, max_ratio: float) -> Path:
    check_destination(dest)  # again, now that no other unpack can be placing it
    remove_stale_unpack_folders(dest)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            check_declared_sizes(archive, tar, archive_bytes=archive.stat().st_size, max_bytes=max_bytes,
                                 max_ratio=max_ratio,
                                 free_bytes=shutil.disk_usage(dest.parent).free - FREE_SPACE_MARGIN)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise PrecomputedError(f"{archive}: not a readable .tar.gz archive ({err}); copy it again") from None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=".tmp", dir=dest.parent))
    except OSError as err:  # a full disk names the destination, not "[Errno 28]"
        failed = write_error(dest, err)
        if failed is err:
            raise
        raise failed from None
    try:
        got: dict[str, str] = {}
        sums_text, rel = None, PurePosixPath()
        listed: dict[str, str] | None = None  # SHA256SUMS once read (pack writes it first)
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    rel = _safe_member_name(archive, member)
                    target = tmp.joinpath(*rel.parts)
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    if rel.as_posix() in got or rel.as_posix() == MARKER:
                        raise PrecomputedError(f"{archive}: member {member.name!r} appears twice or is reserved; "
                                               "refused, nothing was unpacked")
                    if listed is not None and rel.as_posix() not in listed:
                        raise PrecomputedError(f"{archive}: member {rel.as_posix()!r} is not in {SUMS_FILE}; "
                                               "refused, nothing was unpacked")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(target, "wb") as f:
                        got[rel.as_posix()] = _copy_member(archive, member, src, f)
                    if rel.as_posix() == SUMS_FILE:
                        sums_text = target.read_text()
                        listed = _read_sums(archive, sums_text)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
            if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):  # the writing failed
                raise write_error(dest / rel, err) from None
            raise PrecomputedError(f"{archive}: not a readable .tar.gz archive ({err}); copy it again") from None
        if sums_text is None:
            raise PrecomputedError(f"{archive}: has no {SUMS_FILE}; not an archive written by `make pack`")
        sums = _read_sums(archive, sums_text)
        for rel, digest in got.items():
            if rel == SUMS_FILE:
                continue
            if rel not in sums:
                raise PrecomputedError(f"{archive}: member {rel!r} is not in {SUMS_FILE}; "
                                       "refused, nothing was unpacked")
            if digest != sums[rel]:
                raise PrecomputedError(f"{archive}: member {rel!r} does not match its SHA-256 in {SUMS_FILE} "
                                       "(corrupt or altered); refused, nothing was unpacked")
        missing = sorted(set(sums) - set(got))
        if missing:
            raise PrecomputedError(f"{archive}: {len(missing)} file(s) of {SUMS_FILE} missing, e.g. {missing[0]!r}; "
                                   "refused, nothing was unpacked")
        marker = {"archive": archive.name, "archive_sha256": sha256_of(archive), "files": sorted(got)}
        try:
            atomic_write_text(json.dumps(marker, indent=1) + "\n", tmp / MARKER)
        except DiskFullError as err:  # named where it would have gone, not by the hidden folder it was written in
            raise write_error(dest / MARKER, err.__cause__ or err) from None
        check_destination(dest)  # again: something may have been written there while we were extracting
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.{os.getpid()}.", dir=dest.parent))
            os.replace(dest, old / dest.name)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def archive_info(archive: str | os.PathLike[str]) -> dict:
    """``precomputed.json`` of an archive (read without extracting anything else)."""
    archive = Path(archive)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.name == INFO_FILE and member.isfile():
                    with contextlib.closing(tar.extractfile(member)) as f:
                        return json.loads(f.read())
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as err:
        raise PrecomputedError(f"{archive}: not a readable .tar.gz archive ({err})") from None
    raise PrecomputedError(f"{archive}: has no {INFO_FILE}; not an archive written by `make pack`")


def describe(root: Path) -> str:
    """One line per finished run under ``root``: name, final artefact, size."""
    lines = []
    for name in finished_runs(root):
        folder = root / name
        artefact = _final_artefact(folder)
        mb = sum(f.stat().st_size for f in _walk_files(folder)) / 1e6
        lines.append(f"  {name:<52} {artefact:<17} {mb:8.1f} MB")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    PackConfig.add_arguments(sub.add_parser("pack", help="pack a runs folder into one archive with checksums"))
    p = sub.add_parser("unpack", help="verify an archive and place it in runs_dir()/precomputed")
    p.add_argument("archive", help="the .tar.gz written by pack")
    p.add_argument("--dest", default="", help="target folder (default: runs_dir()/precomputed)")
    p.add_argument("--max-gib", type=float, default=MAX_UNPACK_BYTES / 2**30,
                   help="refuse an archive whose files declare more than this many GiB (default: %(default)g)")
    p = sub.add_parser("list", help="finished runs unpacked here, or packed in ARCHIVE")
    p.add_argument("archive", nargs="?", default="", help="an archive written by pack")
    args = absolute_from_cwd(parser.parse_args(argv), "runs", "out", "archive", "dest")

    def body() -> int:
        if args.command == "pack":
            cfg = PackConfig.from_args(args)
            out = pack(cfg.runs, cfg.out or None, include_training_state=cfg.include_training_state)
            info = archive_info(out)
            print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {len(info['files'])} files, "
                  f"{len(info['runs'])} finished runs) and {out.name}.sha256sums")
            print(f"attendees: make unpack ARCHIVE={out}")
            return 0
        if args.command == "unpack":
            dest = unpack(args.archive, args.dest or None, max_bytes=int(args.max_gib * 2**30))
            print(f"unpacked {args.archive} into {dest}, every file verified:")
            print(describe(dest) or "  (no finished run)")
            return 0
        if args.archive:
            info = archive_info(args.archive)
            print(f"{args.archive}: packed {info.get('created', '?')} from {info.get('source', '?')}, "
                  f"{len(info.get('files', {}))} files")
            print("\n".join(f"  {r}" for r in info.get("runs", [])))
            return 0
        root = precomputed_dir()
        print(f"{root}:\n" + (describe(root) or "  no finished run (attendees: make unpack ARCHIVE=...)"))
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
