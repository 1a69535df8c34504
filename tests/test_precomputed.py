"""Precomputed runs: pack a generated runs folder, unpack it, find its finished runs; refuse tampered or unsafe
archives without placing anything."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import time

import pytest
import torch

from swinunetr_lib.notebooks import precomputed as pc
from swinunetr_lib.utils.files import safe_torch_load
from swinunetr_lib.utils.run_lock import LOCK_FILE


def _runs_folder(root):
    """A small runs folder laid out as `make demo` writes it (runs/demo)."""
    art = root / "artifacts"
    ssl = art / "ssl_pretraining"
    (ssl / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.arange(6.0).reshape(2, 3)}}, ssl / "model_swinvit.pt")
    torch.save({"model": {"w": torch.ones(3)}, "optimizer": {}}, ssl / "checkpoints" / "last.pt")
    (ssl / "metrics.csv").write_text("step,loss\n1,2.5\n2,1.5\n")
    msd = art / "finetune_msd" / "Task901_PhantomSpleen"
    (msd / "eval").mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.full((4,), 0.5)}}, msd / "model.pt")
    (msd / "checkpoints").mkdir()
    torch.save({"model": {"w": torch.ones(4)}, "optimizer": {"m": torch.ones(4)}}, msd / "checkpoints" / "last.pt")
    (msd / "eval" / "summary.csv").write_text("class,dice,hd95_mm,missed\nspleen,0.91,3.0,0\nmean,0.91,3.0,0\n")
    (msd / ".model.pt.ab12cd34.tmp.pt").write_bytes(b"half")  # an interrupted write's temporary file: never packed
    half = art / "finetune_btcv" / "half_run"  # no final artefact: packed, but not finished
    half.mkdir(parents=True)
    (half / "metrics.csv").write_text("step,loss\n1,3.0\n")
    (art / "data_curation" / "broken_demo").mkdir(parents=True)
    (art / "data_curation" / "broken_demo" / "a.nii.gz").write_bytes(b"broken")
    (root / "04_finetune_msd.ipynb").write_text(json.dumps({"cells": [], "nbformat": 4, "nbformat_minor": 5}))
    (root / "figures" / "04_finetune_msd").mkdir(parents=True)
    (root / "figures" / "04_finetune_msd" / "cell05_0.png").write_bytes(b"\x89PNG fake")
    return root


def _members(archive):
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def _write_tar(path, members):
    """A .tar.gz of ``members``: (TarInfo, bytes or None)."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


@pytest.fixture
def runs_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SWINUNETR_RUNS_DIR", str(tmp_path / "attendee_runs"))
    return tmp_path / "attendee_runs"


@pytest.fixture
def archive(tmp_path):
    return pc.pack(_runs_folder(tmp_path / "demo"), tmp_path / "usb" / "demo.tar.gz")


def test_pack_writes_checksummed_archive_without_training_state(archive):
    members = _members(archive)
    sums = dict(reversed(line.split("  ", 1)) for line in members["SHA256SUMS"].decode().splitlines())
    assert set(sums) == set(members) - {"SHA256SUMS"}
    for name, digest in sums.items():
        assert hashlib.sha256(members[name]).hexdigest() == digest
    assert "ssl_pretraining/model_swinvit.pt" in members and "executed/04_finetune_msd.ipynb" in members
    assert "executed/figures/04_finetune_msd/cell05_0.png" in members
    # fine-tuning's optimizer state stays out (model.pt has its weights); pretraining's last.pt holds the SSL heads
    assert "ssl_pretraining/checkpoints/last.pt" in members
    assert not [m for m in members if "finetune_msd/Task901_PhantomSpleen/checkpoints" in m]
    assert not [m for m in members if "data_curation" in m or ".tmp" in m]
    info = json.loads(members["precomputed.json"])
    assert info["runs"] == ["finetune_msd/Task901_PhantomSpleen", "ssl_pretraining"]
    assert info["files"]["finetune_btcv/half_run/metrics.csv"] == len(members["finetune_btcv/half_run/metrics.csv"])
    # beside it: the archive's own checksum first, then every member's; no temporary files left
    beside = (archive.parent / "demo.tar.gz.sha256sums").read_text().splitlines()
    assert beside[0] == f"{hashlib.sha256(archive.read_bytes()).hexdigest()}  demo.tar.gz"
    assert sorted(beside[1:]) == sorted(members["SHA256SUMS"].decode().splitlines())
    assert sorted(p.name for p in archive.parent.iterdir()) == ["demo.tar.gz", "demo.tar.gz.sha256sums"]


def test_pack_with_training_state_and_nothing_finished(tmp_path):
    runs = _runs_folder(tmp_path / "demo")
    out = pc.pack(runs, tmp_path / "full.tar.gz", include_training_state=True)
    assert "finetune_msd/Task901_PhantomSpleen/checkpoints/last.pt" in _members(out)
    empty = tmp_path / "empty" / "artifacts" / "finetune_btcv" / "x"
    empty.mkdir(parents=True)
    (empty / "metrics.csv").write_text("step\n1\n")
    with pytest.raises(pc.PrecomputedError, match="no finished run to pack"):
        pc.pack(tmp_path / "empty", tmp_path / "e.tar.gz")
    with pytest.raises(pc.PrecomputedError, match="no such runs folder"):
        pc.pack(tmp_path / "missing")
    assert not (tmp_path / "e.tar.gz").exists()


def test_unpack_round_trip_and_find_precomputed(archive, tmp_path, runs_env):
    assert pc.find_precomputed("ssl_pretraining") is None  # nothing unpacked yet
    dest = pc.unpack(archive)
    assert dest == runs_env / "precomputed"
    src = tmp_path / "demo" / "artifacts"
    for rel in ("ssl_pretraining/model_swinvit.pt", "finetune_msd/Task901_PhantomSpleen/eval/summary.csv"):
        assert (dest / rel).read_bytes() == (src / rel).read_bytes()
    found = pc.find_precomputed("finetune_msd/Task901_PhantomSpleen")
    assert found == dest / "finetune_msd" / "Task901_PhantomSpleen"
    w = safe_torch_load(found / "model.pt")["state_dict"]["w"]  # weights-only loading
    assert torch.equal(w, torch.full((4,), 0.5))
    assert pc.find_precomputed("ssl_pretraining") == dest / "ssl_pretraining"
    assert pc.find_precomputed("finetune_btcv/half_run") is None
    assert pc.find_precomputed("finetune_msd/Task09_Spleen") is None
    assert pc.finished_runs() == ["finetune_msd/Task901_PhantomSpleen", "ssl_pretraining"]
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left
    with pytest.raises(ValueError, match="expected a run folder"):
        pc.find_precomputed("../finetune_msd")


def test_half_copied_folder_is_not_finished(archive, runs_env):
    dest = pc.unpack(archive)
    metrics = dest / "ssl_pretraining" / "metrics.csv"
    metrics.write_text(metrics.read_text()[:5])  # a copy cut short
    assert pc.find_precomputed("ssl_pretraining") is None
    (dest / "finetune_msd" / "Task901_PhantomSpleen" / "model.pt").unlink()
    assert pc.find_precomputed("finetune_msd/Task901_PhantomSpleen") is None
    # a folder copied by hand (no precomputed.json): finished when its final artefact is there
    (dest / "precomputed.json").unlink()
    assert pc.find_precomputed("ssl_pretraining") == dest / "ssl_pretraining"
    (dest / "ssl_pretraining" / ".lock").write_text("123\n")  # a run still writing there
    assert pc.find_precomputed("ssl_pretraining") is None


def _tampered(archive, tmp_path, change):
    """A copy of ``archive`` whose member ``change`` holds other bytes (its SHA256SUMS kept)."""
    members = _members(archive)
    members[change] = members[change][:-1] + bytes([members[change][-1] ^ 1])
    return _write_tar(tmp_path / "tampered.tar.gz", [_file(n, d) for n, d in members.items()])


def test_tampered_archive_is_refused_and_nothing_is_placed(archive, tmp_path, runs_env):
    dest = pc.unpack(archive)
    before = sorted(p.relative_to(dest) for p in dest.rglob("*"))
    bad = _tampered(archive, tmp_path, "finetune_msd/Task901_PhantomSpleen/model.pt")
    with pytest.raises(pc.PrecomputedError, match=r"member 'finetune_msd/Task901_PhantomSpleen/model.pt' does not "
                                                  r"match its SHA-256"):
        pc.unpack(bad)
    assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]
    # the same bytes with the list beside it: the archive's own checksum catches the bad copy first
    (tmp_path / "tampered.tar.gz.sha256sums").write_text((archive.parent / "demo.tar.gz.sha256sums").read_text())
    with pytest.raises(pc.PrecomputedError, match="differs from tampered.tar.gz.sha256sums"):
        pc.unpack(bad)


def test_cli_reports_bad_archive_in_one_line(archive, tmp_path, runs_env, capsys):
    bad = _tampered(archive, tmp_path, "ssl_pretraining/metrics.csv")
    assert pc.main(["unpack", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "member 'ssl_pretraining/metrics.csv'" in err
    assert not (runs_env / "precomputed").exists()
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    assert pc.main(["unpack", str(truncated)]) == 2
    assert "not a readable .tar.gz archive" in capsys.readouterr().err
    assert pc.main(["unpack", str(archive)]) == 0
    out = capsys.readouterr().out
    assert "ssl_pretraining" in out and "finetune_msd/Task901_PhantomSpleen" in out and "half_run" not in out
    assert pc.main(["list"]) == 0 and "model_swinvit.pt" in capsys.readouterr().out
    assert pc.main(["list", str(archive)]) == 0 and "ssl_pretraining" in capsys.readouterr().out


@pytest.mark.parametrize("evil", ["/tmp/evil.txt", "../evil.txt", "ssl_pretraining/../../evil.txt", "link"])
def test_unsafe_members_are_refused(tmp_path, runs_env, evil):
    data = b"payload"
    if evil == "link":
        info = tarfile.TarInfo("ssl_pretraining/model_swinvit.pt")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        member = (info, None)
        listed = "ssl_pretraining/model_swinvit.pt"
    else:
        member, listed = _file(evil, data), evil
    sums = f"{hashlib.sha256(data).hexdigest()}  {listed}\n".encode()
    bad = _write_tar(tmp_path / "evil.tar.gz", [_file("SHA256SUMS", sums), member])
    with pytest.raises(pc.PrecomputedError, match="refused, nothing was unpacked") as err:
        pc.unpack(bad)
    assert repr(evil if evil != "link" else listed) in str(err.value)
    assert not (runs_env / "precomputed").exists() and not (tmp_path / "evil.txt").exists()
    assert not (runs_env.parent / "evil.txt").exists()


def test_unlisted_member_is_refused(archive, tmp_path, runs_env):
    members = _members(archive)
    members["ssl_pretraining/extra.py"] = b"print('hi')"
    bad = _write_tar(tmp_path / "extra.tar.gz", [_file(n, d) for n, d in members.items()])
    with pytest.raises(pc.PrecomputedError, match=r"member 'ssl_pretraining/extra.py' is not in SHA256SUMS"):
        pc.unpack(bad)
    assert not (runs_env / "precomputed").exists()


@pytest.mark.parametrize("kind", ["user_folder", "plain_file", "cwd"])
def test_unpack_never_deletes_what_it_did_not_place(archive, tmp_path, monkeypatch, capsys, kind):
    """Issue #27: --dest naming a folder of the user's files, a plain file or '.' is refused, nothing touched."""
    if kind == "plain_file":
        dest = tmp_path / "notes.txt"
        dest.write_text("mine")
    else:
        dest = tmp_path / "mine"
        (dest / "sub").mkdir(parents=True)
        (dest / "thesis.tex").write_text("years of work")
        (dest / "sub" / "data.csv").write_text("1,2\n")
    before = sorted((p.relative_to(tmp_path), p.is_file() and p.read_bytes()) for p in tmp_path.rglob("*"))
    if kind == "cwd":
        monkeypatch.chdir(dest)
        argv = ["unpack", str(archive), "--dest", "."]
    else:
        argv = ["unpack", str(archive), "--dest", str(dest)]
    assert pc.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(dest) in err and "refused" in err
    assert sorted((p.relative_to(tmp_path), p.is_file() and p.read_bytes()) for p in tmp_path.rglob("*")) == before


def test_unpack_replaces_only_a_previous_unpack(archive, tmp_path, runs_env):
    dest = pc.unpack(archive)
    marker = json.loads((dest / pc.MARKER).read_text())
    assert marker["archive_sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert "ssl_pretraining/model_swinvit.pt" in marker["files"]
    assert pc.unpack(archive) == dest  # a previous unpack is replaced
    (dest / "ssl_pretraining" / "my_notes.txt").write_text("mine")  # ... unless the user put files there
    with pytest.raises(pc.PrecomputedError, match=r"1 file\(s\) the previous unpack did not place, e.g. "
                                                  r"'ssl_pretraining/my_notes.txt'"):
        pc.unpack(archive)
    assert (dest / "ssl_pretraining" / "my_notes.txt").read_text() == "mine"
    (dest / "ssl_pretraining" / "my_notes.txt").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert pc.unpack(archive, empty) == empty and (empty / pc.MARKER).is_file()  # an empty folder is fine
    # the temporary folders of a killed unpack (pid no longer running) are removed by the next one
    stale = [runs_env / ".precomputed.999999999.abcd_123.tmp", runs_env / ".precomputed.old.999999999.abcd_123"]
    for p in stale:
        (p / "x").mkdir(parents=True)
    pc.unpack(archive)
    assert not [p for p in runs_env.iterdir() if p.name.startswith(".")]


def _lying_archive(path, declared=10 * 10**9):
    """A few hundred bytes of .tar.gz whose second member's header claims ``declared`` bytes it does not hold,
    listed in SHA256SUMS (so only the sizes can refuse it)."""
    big = tarfile.TarInfo("ssl_pretraining/big.bin")
    big.size = declared
    sums = f"{'0' * 64}  ssl_pretraining/big.bin\n".encode()
    head = tarfile.TarInfo("SHA256SUMS")
    head.size = len(sums)
    raw = head.tobuf(tarfile.GNU_FORMAT) + sums + b"\0" * (-len(sums) % 512) + big.tobuf(tarfile.GNU_FORMAT)
    path.write_bytes(gzip.compress(raw + b"\0" * 4096))
    return path


def test_declared_sizes_are_checked_before_anything_is_written(tmp_path, runs_env, capsys):
    """Issue #27: a 10 GB header in a ~300-byte archive is refused at once, in one line, writing nothing."""
    bomb = _lying_archive(tmp_path / "bomb.tar.gz")
    assert bomb.stat().st_size < 1000
    start = time.perf_counter()
    assert pc.main(["unpack", str(bomb)]) == 2
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "members declare 10.0 GB" in err and "over 1000x" in err
    assert not runs_env.exists() or not list(runs_env.iterdir())


def test_size_cap_and_free_space(archive, tmp_path, runs_env, monkeypatch, capsys):
    with pytest.raises(pc.PrecomputedError, match=r"more than the cap of 1.0 KB \(--max-gib\)"):
        pc.unpack(archive, max_bytes=1000)
    assert pc.main(["unpack", str(archive), "--max-gib", "0.000001"]) == 2
    assert "--max-gib" in capsys.readouterr().err
    usage = pc.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(pc.shutil, "disk_usage", lambda p: usage._replace(free=pc.FREE_SPACE_MARGIN + 100))
    with pytest.raises(pc.PrecomputedError, match=r"more than the 100 bytes free where it would be unpacked"):
        pc.unpack(archive)
    assert not runs_env.exists() or not list(runs_env.iterdir())


def test_check_declared_sizes_on_headers():
    def info(name, size, sparse=False):
        m = tarfile.TarInfo(name)
        m.size = size
        if sparse:
            m.type, m.sparse = tarfile.GNUTYPE_SPARSE, [(0, 0)]
        return m
    kw = {"archive_bytes": 10**6, "free_bytes": 10**12}
    assert pc.check_declared_sizes(pc.Path("a.tar.gz"), [info("a", 10**6), info("b", 5)], **kw) == 10**6 + 5
    with pytest.raises(pc.PrecomputedError, match="'b' is a sparse file"):
        pc.check_declared_sizes(pc.Path("a.tar.gz"), [info("a", 1), info("b", 10**10, sparse=True)], **kw)
    with pytest.raises(pc.PrecomputedError, match=r"declare 1.0 GB \(up to 'b'\), over 1000x"):
        pc.check_declared_sizes(pc.Path("a.tar.gz"), [info("a", 1), info("b", 10**9)], **kw)

    def endless():
        while True:
            yield info("z", 10**8)
    with pytest.raises(pc.PrecomputedError, match="more than the cap"):  # stops reading at the first header too many
        pc.check_declared_sizes(pc.Path("a.tar.gz"), endless(), archive_bytes=10**12, free_bytes=10**15)


def test_member_yielding_more_than_declared_is_refused(tmp_path):
    member = tarfile.TarInfo("x.bin")
    member.size = 5
    with pytest.raises(pc.PrecomputedError, match=r"'x.bin' holds more than the 5 bytes its header declares"):
        pc._copy_member(tmp_path / "a.tar.gz", member, io.BytesIO(b"0123456789"), io.BytesIO())


def _run(folder, artefact="model.pt", steps=3, meta=None):
    """A finished run folder: its final artefact, metrics.csv, and finetune_meta.json when ``meta``."""
    (folder / artefact).parent.mkdir(parents=True, exist_ok=True)
    (folder / artefact).write_bytes(b"weights")
    (folder / "metrics.csv").write_text("step,loss\n" + "".join(f"{s},1.0\n" for s in range(1, steps + 1)))
    if meta:
        (folder / "finetune_meta.json").write_text(json.dumps(meta))
    return folder


def test_choose_run_prefers_the_instructors_then_notebook_03s_own(tmp_path):
    runs = tmp_path / "runs"
    assert pc.choose_run("finetune_btcv", runs) is None
    sweep = _run(runs / "finetune_btcv" / f"{pc.SWEEP_RUN_PREFIX}scratch_frac1_seed0", steps=40)
    assert pc.choose_run("finetune_btcv", runs).folder == sweep  # only a sweep run: better than nothing
    own = _run(runs / "finetune_btcv" / "scratch_frac1_seed0", steps=50, meta={"feature_size": 48, "init": "scratch"})
    chosen = pc.choose_run("finetune_btcv", runs)
    assert chosen.folder == own and chosen.describe() == ("your run finetune_btcv/scratch_frac1_seed0 (50 steps, "
                                                          "feature size 48, init scratch)")
    theirs = _run(runs / "precomputed" / "finetune_btcv" / "scratch_frac1_seed0", steps=360, meta={"feature_size": 48})
    chosen = pc.choose_run("finetune_btcv", runs)
    assert chosen.folder == theirs and chosen.describe().startswith("the instructor's precomputed run finetune_btcv/"
                                                                    "scratch_frac1_seed0 (360 steps")
    assert pc.choose_run("finetune_btcv", runs, precomputed=False).folder == own
    (theirs / LOCK_FILE).write_text("1")  # a run still writing there is not finished
    assert pc.choose_run("finetune_btcv", runs).folder == own
    # pretraining: fit's checkpoint with the heads is what notebook 05 reconstructs with
    ssl = _run(runs / "precomputed" / "ssl_pretraining", artefact="model_swinvit.pt", steps=80)
    assert pc.choose_run("ssl_pretraining", runs) is None  # no checkpoints/last.pt
    (ssl / "checkpoints").mkdir()
    (ssl / "checkpoints" / "last.pt").write_bytes(b"ckpt")
    assert pc.choose_run("ssl_pretraining", runs).describe() == ("the instructor's precomputed run ssl_pretraining "
                                                                 "(80 steps)")
    with pytest.raises(ValueError, match="kind='finetune_msd'"):
        pc.choose_run("finetune_msd", runs)


def test_two_unpacks_at_once_the_second_is_refused_and_a_killed_ones_lock_is_taken_over(archive, runs_env, capsys):
    """Issue #27: an unpack holds a lock beside its destination; a second one into the same place gets one line
    naming the destination and the holder's pid, touching nothing; the lock a killed unpack left is taken over."""
    import os
    import signal
    import subprocess
    import sys

    dest = pc.precomputed_dir()
    holder = subprocess.Popen(  # another process in the middle of an unpack: it holds the lock and sleeps
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from swinunetr_lib.utils.run_lock import run_dir_lock\n"
         "with run_dir_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)",
         str(pc.unpack_lock_dir(dest))], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert pc.main(["unpack", str(archive)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(dest) in err and "another unpack" in err
        assert f"pid {holder.pid}" in err
        assert not dest.exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # killed mid-unpack: its lock file stays behind
        holder.wait()
    assert (pc.unpack_lock_dir(dest) / LOCK_FILE).is_file()
    assert pc.unpack(archive) == dest and (dest / pc.MARKER).is_file()
    assert f"took over the stale lock of pid {holder.pid}" in capsys.readouterr().out
    assert not pc.unpack_lock_dir(dest).exists()  # removed when the unpack ends
