"""Fetch the real example CT/MR scans (TotalSegmentator test files), verified by SHA-256.

The files are the ``tests/reference_files`` of github.com/wasserth/TotalSegmentator at a pinned commit
(Apache-2.0). Lookup order for each file:

1. a local mirror folder: the ``mirror_dir`` argument, else ``$SWINUNETR_EXAMPLES_MIRROR``, else
   ``../shared/data/totalsegmentator_examples`` beside the repository when it exists;
2. the cache folder (``cache_dir``, else ``$SWINUNETR_CACHE_DIR``, default ``~/.cache/swinunetr_lib``);
3. a download from the commit-pinned address into the cache.

Every file is checked against the checksum list shipped with the library; a mismatching file is
rejected (and deleted from the cache), never used.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from ..paths import EXAMPLES_MIRROR_IN_CHECKOUT
from ..utils.files import atomic_path

UPSTREAM_COMMIT = "0e65a448d557382b1e925276212b3bec7f5aff83"
UPSTREAM_URL = (
    "https://raw.githubusercontent.com/wasserth/TotalSegmentator/{commit}/tests/reference_files/{name}"
)
MIRROR_ENV = "SWINUNETR_EXAMPLES_MIRROR"
CACHE_ENV = "SWINUNETR_CACHE_DIR"
_CHECKSUM_FILE = Path(__file__).with_name("example_data_sha256sums.txt")
DEFAULT_MIRROR = EXAMPLES_MIRROR_IN_CHECKOUT


class ExampleDataError(RuntimeError):
    """An example file could not be found, fetched or verified."""


def example_checksums() -> dict[str, str]:
    """Map of relative file name (e.g. ``example_ct_dicom/CT...``) to its SHA-256 hex digest."""
    sums: dict[str, str] = {}
    for line in _CHECKSUM_FILE.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().removeprefix("./")] = digest
    return sums


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_mirror_dir(mirror_dir: str | os.PathLike[str] | None) -> Path | None:
    if mirror_dir is not None:
        return Path(mirror_dir)
    if os.environ.get(MIRROR_ENV):
        return Path(os.environ[MIRROR_ENV])
    return DEFAULT_MIRROR if DEFAULT_MIRROR.is_dir() else None


def cache_root() -> Path:
    """The suite's download cache: ``$SWINUNETR_CACHE_DIR``, default ``~/.cache/swinunetr_lib``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "swinunetr_lib"))


def cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return cache_root() / "totalsegmentator_examples"


def fetch_example(
    name: str,
    *,
    mirror_dir: str | os.PathLike[str] | None = None,
    cache: str | os.PathLike[str] | None = None,
    url_template: str = UPSTREAM_URL,
    timeout_s: float = 30.0,
) -> Path:
    """Return a verified local path to example file ``name`` (e.g. ``"example_ct.nii.gz"``).

    A folder name (``"example_ct_dicom"``) fetches every file of that series and returns the folder holding
    them all: the mirror's (or cache's) folder when every file was found there, else the cache folder, into which
    the files found elsewhere (e.g. in a partial mirror) are copied.
    """
    sums = example_checksums()
    if name.rstrip("/") in {n.split("/")[0] for n in sums if "/" in n}:
        members = sorted(n for n in sums if n.startswith(name.rstrip("/") + "/"))
        paths = [fetch_example(m, mirror_dir=mirror_dir, cache=cache, url_template=url_template,
                               timeout_s=timeout_s) for m in members]
        if all(p.parent == paths[0].parent for p in paths):
            return paths[0].parent
        # members found in different places (e.g. a partial mirror plus the cache): one folder holds them all
        for member, path in zip(members, paths, strict=True):
            dest = cache_dir(cache) / member
            if path.resolve() == dest.resolve() or (dest.is_file() and sha256_of(dest) == sums[member]):
                continue
            with atomic_path(dest) as tmp:
                shutil.copyfile(path, tmp)
        return cache_dir(cache) / name.rstrip("/")
    if name not in sums:
        raise ExampleDataError(f"unknown example file {name!r}; known files: {sorted(n for n in sums if '/' not in n)}")
    expected = sums[name]

    mirror = resolve_mirror_dir(mirror_dir)
    if mirror is not None and (mirror / name).is_file():
        found = mirror / name
        if sha256_of(found) != expected:
            raise ExampleDataError(
                f"{found}: SHA-256 does not match the pinned checksum; the mirror copy is corrupt or a different "
                "version. Replace it, or point SWINUNETR_EXAMPLES_MIRROR at a good copy."
            )
        return found

    target = cache_dir(cache) / name
    if target.is_file():
        if sha256_of(target) == expected:
            return target
        target.unlink()  # a corrupt cached copy is never used

    url = url_template.format(commit=UPSTREAM_COMMIT, name=name)
    try:
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(url, timeout=timeout_s) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
            got = sha256_of(tmp)
            if got != expected:
                raise ExampleDataError(f"{url}: downloaded file has SHA-256 {got}, expected {expected}; rejected")
    except (urllib.error.URLError, OSError, ValueError) as err:
        where = f"mirror folder {mirror} has no {name}" if mirror else f"no mirror folder (set ${MIRROR_ENV})"
        raise ExampleDataError(
            f"cannot fetch example file {name!r}: {where}, and downloading {url} failed ({err}). "
            f"Offline? Point ${MIRROR_ENV} (or mirror_dir=) at a folder holding the TotalSegmentator "
            f"example files, e.g. ../shared/data/totalsegmentator_examples."
        ) from err
    return target
