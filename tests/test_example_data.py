"""The example-data fetcher: mirror first, then cache, then a verified download; bad checksums are rejected."""
from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import nibabel as nib
import pytest

from swinunetr_lib.data import example_data
from swinunetr_lib.data.example_data import ExampleDataError, example_checksums, fetch_example, sha256_of

NAME = "example_seg_mr.nii.gz"  # the smallest example file


@pytest.fixture(scope="module")
def mirror() -> Path:
    path = fetch_example(NAME).parent
    assert sha256_of(path / NAME) == example_checksums()[NAME]
    return path


@pytest.fixture()
def http_mirror(tmp_path):
    """Serve a folder on 127.0.0.1 so the real download code path runs without the internet."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/{{name}}"
    server.shutdown()


def test_mirror_file_is_verified_and_loads(mirror):
    path = fetch_example("example_ct_sm.nii.gz", mirror_dir=mirror)
    img = nib.load(path)
    assert img.shape == (122, 101, 30)
    assert img.header.get_zooms()[:3] == pytest.approx((3.0, 3.0, 3.0))


def test_dicom_folder_fetches_every_slice(mirror):
    folder = fetch_example("example_ct_dicom", mirror_dir=mirror)
    assert len(list(folder.iterdir())) == 20


def test_corrupt_mirror_file_is_rejected(tmp_path, mirror):
    bad = tmp_path / "mirror"
    bad.mkdir()
    data = (mirror / NAME).read_bytes()
    (bad / NAME).write_bytes(data[:-10] + b"0123456789")
    with pytest.raises(ExampleDataError, match="SHA-256 does not match"):
        fetch_example(NAME, mirror_dir=bad)


def test_download_verifies_and_caches(tmp_path, mirror, http_mirror):
    served, url = http_mirror
    shutil.copy(mirror / NAME, served / NAME)
    cache = tmp_path / "cache"
    got = fetch_example(NAME, mirror_dir=tmp_path / "empty", cache=cache, url_template=url)
    assert got == cache / NAME
    assert sha256_of(got) == example_checksums()[NAME]
    (served / NAME).unlink()  # second call is served from the cache, no network needed
    assert fetch_example(NAME, mirror_dir=tmp_path / "empty", cache=cache, url_template=url) == got


def test_download_with_wrong_checksum_is_rejected_and_not_cached(tmp_path, http_mirror):
    served, url = http_mirror
    (served / NAME).write_bytes(b"not the file you are looking for")
    cache = tmp_path / "cache"
    with pytest.raises(ExampleDataError, match="rejected"):
        fetch_example(NAME, mirror_dir=tmp_path / "empty", cache=cache, url_template=url)
    leftovers = list(cache.glob("*")) if cache.exists() else []
    assert leftovers == []


def test_corrupt_cached_file_is_replaced(tmp_path, mirror, http_mirror):
    served, url = http_mirror
    shutil.copy(mirror / NAME, served / NAME)
    cached = tmp_path / "cache" / NAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"garbage")
    got = fetch_example(NAME, mirror_dir=tmp_path / "empty", cache=tmp_path / "cache", url_template=url)
    assert sha256_of(got) == example_checksums()[NAME]


def test_offline_without_mirror_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv(example_data.MIRROR_ENV, raising=False)
    with pytest.raises(ExampleDataError, match="SWINUNETR_EXAMPLES_MIRROR"):
        fetch_example(NAME, mirror_dir=tmp_path / "empty", cache=tmp_path / "cache",
                      url_template="http://127.0.0.1:9/{name}", timeout_s=2)


def test_unknown_name_lists_known_files():
    with pytest.raises(ExampleDataError, match="example_ct.nii.gz"):
        fetch_example("no_such_file.nii.gz")


def test_dicom_folder_from_a_partial_mirror_is_assembled_in_the_cache(tmp_path, mirror):
    """19 slices in the mirror, the 20th only in the cache: the returned folder holds all 20."""
    members = sorted(n for n in example_checksums() if n.startswith("example_ct_dicom/"))
    assert len(members) == 20
    partial, cache = tmp_path / "mirror", tmp_path / "cache"
    for m in members[:-1]:
        (partial / m).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mirror / m, partial / m)
    (cache / members[-1]).parent.mkdir(parents=True)
    shutil.copy(mirror / members[-1], cache / members[-1])
    folder = fetch_example("example_ct_dicom", mirror_dir=partial, cache=cache,
                           url_template="http://127.0.0.1:9/{name}", timeout_s=2)
    got = sorted(p.name for p in folder.iterdir())
    assert got == [m.split("/", 1)[1] for m in members]
    sums = example_checksums()
    assert all(sha256_of(folder / n) == sums[f"example_ct_dicom/{n}"] for n in got)
    assert len(list((partial / "example_ct_dicom").iterdir())) == 19  # the mirror is left as it was
    # a second call (everything now in the cache folder) returns the same complete folder
    assert fetch_example("example_ct_dicom", mirror_dir=partial, cache=cache,
                         url_template="http://127.0.0.1:9/{name}", timeout_s=2) == folder
