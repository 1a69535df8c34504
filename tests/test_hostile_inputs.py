"""#27 item 6: a 2D or 3-channel scan, a full disk, a run folder that is a file: one line naming the file and the
problem (exit status 2), and no temporary file left behind."""
import errno
import json
import os

import nibabel as nib
import numpy as np
import pytest
from test_finetune import save_random_model
from test_precomputed import _file, _runs_folder, _write_tar

from swinunetr_lib.finetune.task_presets import get_preset
from swinunetr_lib.infer import predict
from swinunetr_lib.infer.predict import main as infer_main
from swinunetr_lib.notebooks import precomputed as pc
from swinunetr_lib.pretrain.run import main as pretrain_main
from swinunetr_lib.utils import files
from swinunetr_lib.utils.files import DiskFullError, atomic_torch_save

AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
FULL = "cannot write, the disk is full"


def _ct(path, shape=(40, 40, 40), channels=0):
    data = np.full(shape, -1000.0, np.float32)
    data[tuple(slice(8, n - 8) for n in shape)] = 40.0
    if channels:
        data = np.stack([data] * channels, -1)
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return path


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run a command's main; return (exit status, stderr); an error must be exactly one line, no traceback."""
    monkeypatch.delenv("SWINUNETR_TRACEBACK", raising=False)

    def run(main, prog, *argv):
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err
        if code != 0:
            assert err.startswith(f"python -m swinunetr_lib.{prog}: error: ") and err.count("\n") == 1, err
        return code, err

    return run


def _pretrain_args(manifest, run_dir, *extra):
    return ["--data-manifest", manifest, "--run-dir", run_dir, "--roi-size", "32", "--feature-size", "12",
            "--max-steps", "1", "--warmup-steps", "1", "--device", "cpu", "--progress", "false", *extra]


def _manifest(root, *names):
    (root / "m.json").write_text(json.dumps({"training": [{"image": n} for n in names]}))
    return root / "m.json"


def _leftovers(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp" in p.name)


@pytest.mark.parametrize("shape,channels,problem", [
    ((40, 40), 0, "image is 2D (shape (40, 40)), not a 3D volume; pretraining needs 3D scans"),
    ((40, 40, 40), 3, "image has 3 channels (shape (40, 40, 40) x 3), pretraining needs 1: give single-channel CT"),
])
def test_pretraining_names_a_2d_or_multichannel_scan(tmp_path, cli, shape, channels, problem):
    _ct(tmp_path / "good.nii.gz")
    bad = _ct(tmp_path / "bad.nii.gz", shape, channels)
    run_dir = tmp_path / "run"
    code, err = cli(pretrain_main, "pretrain", *_pretrain_args(_manifest(tmp_path, "good.nii.gz", "bad.nii.gz"),
                                                               run_dir))
    assert code == 2 and f"error: {bad}: {problem}" in err, err
    assert not run_dir.exists() or not any(run_dir.rglob("*"))


def test_pretraining_into_a_run_folder_that_is_a_file(tmp_path, cli):
    _ct(tmp_path / "a.nii.gz")
    (tmp_path / "run").write_text("not a folder")
    code, err = cli(pretrain_main, "pretrain", *_pretrain_args(_manifest(tmp_path, "a.nii.gz"), tmp_path / "run"))
    assert code == 2 and f"run folder {tmp_path / 'run'}: {tmp_path / 'run'} is a file, not a folder" in err, err
    assert "Errno" not in err


def _torch_save_on_a_full_disk(obj, f):
    """What torch.save does when the disk fills: part of the zip is written, then the C++ writer gives up."""
    with open(f, "wb") as out:
        out.write(b"PK\x03\x04 partial")
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")


def test_a_checkpoint_on_a_full_disk_names_the_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    """The writer of every checkpoint (fit's last.pt / best.pt, finetune's model.pt, exports): no training run
    here, the command-line printing of the same error is checked through `infer` below."""
    monkeypatch.setattr(files.torch, "save", _torch_save_on_a_full_disk)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    with pytest.raises(DiskFullError) as err:
        atomic_torch_save({"x": 1}, last)
    assert str(err.value).startswith(f"{last}: {FULL} (torch.save could not write its data; ")
    assert str(err.value).endswith("free some space and run again") and "inline_container" not in str(err.value)
    assert list(last.parent.iterdir()) == []



def test_pretraining_on_a_full_disk_names_the_checkpoint_and_leaves_no_temp_file(tmp_path, cli, monkeypatch):
    """End to end: a pretraining run whose disk fills when it writes its checkpoint ends with exit 2 and one line
    naming that file (not "enforce fail at inline_container.cc"), and leaves no half-written file."""
    _ct(tmp_path / "a.nii.gz")
    run_dir = tmp_path / "run"
    monkeypatch.setattr(files.torch, "save", _torch_save_on_a_full_disk)
    code, err = cli(pretrain_main, "pretrain", *_pretrain_args(_manifest(tmp_path, "a.nii.gz"), run_dir))
    assert code == 2 and FULL in err and "inline_container" not in err, err
    named = err.split("error: ", 1)[1].split(f": {FULL}")[0]
    assert named.startswith(str(run_dir)) and named.endswith(".pt"), err
    assert _leftovers(tmp_path) == []

@pytest.fixture(scope="module")
def ct_model(tmp_path_factory):
    preset = get_preset("demo_btcv", spacing=(6.0, 6.0, 6.0), roi_size=(64, 64, 32))
    return save_random_model(tmp_path_factory.mktemp("ckpt") / "model.pt", preset)


def test_infer_names_a_2d_scan(ct_model, tmp_path, cli):
    scan = _ct(tmp_path / "slice.nii.gz", (40, 40))
    out = tmp_path / "seg.nii.gz"
    code, err = cli(infer_main, "infer", "--checkpoint", ct_model, "--input", scan, "--output", out, "--device", "cpu")
    assert code == 2 and f"error: {scan}: image is 2D (shape (40, 40)), not a 3D volume; task demo_btcv needs " \
                          "3D scans" in err, err
    assert not out.exists()


def test_infer_on_a_full_disk_names_the_output_and_leaves_no_temp_file(ct_model, tmp_path, cli, monkeypatch):
    scan = _ct(tmp_path / "ct.nii.gz", (40, 40, 24))
    out = tmp_path / "out" / "seg.nii.gz"

    def full_disk(img, filename):
        with open(filename, "wb") as f:
            f.write(b"\x1f\x8b partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    def quick_prediction(model, preset, files, names, **kw):  # the prediction is not under test: its writing is
        return np.zeros((40, 40, 24), np.uint8), AFFINE

    monkeypatch.setattr(predict, "_predict_files", quick_prediction)
    monkeypatch.setattr(nib, "save", full_disk)
    code, err = cli(infer_main, "infer", "--checkpoint", ct_model, "--input", scan, "--output", out, "--device", "cpu")
    assert code == 2 and f"error: {out}: {FULL} (No space left on device; " in err, err
    assert "[Errno 28]" not in err and not out.exists() and _leftovers(tmp_path) == []


# --- notebooks.precomputed pack / unpack ----------------------------------------------------------------------

def _deep_folder(top, depth):
    """``top/d/d/.../d/f.txt`` ``depth`` folders deep, made one level at a time (os.makedirs recurses)."""
    folder = top
    for _ in range(depth):
        folder = folder / "d"
        folder.mkdir()
    (folder / "f.txt").write_text("x")
    return folder


def test_unpack_on_a_full_disk_names_the_file_and_leaves_nothing(tmp_path, cli, monkeypatch):
    archive = pc.pack(_runs_folder(tmp_path / "demo"), tmp_path / "usb" / "demo.tar.gz")
    dest = tmp_path / "attendee" / "precomputed"

    def full_disk(archive, member, src, dst):
        dst.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pc, "_copy_member", full_disk)
    code, err = cli(pc.main, "notebooks.precomputed", "unpack", archive, "--dest", dest)
    assert code == 2 and f"error: {dest}/SHA256SUMS: {FULL} (No space left on device; " in err, err
    assert "copy it again" not in err and "Errno" not in err
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_unpack_with_no_room_for_its_folder_or_marker_names_the_destination(tmp_path, cli, monkeypatch):
    """A full disk before anything is extracted (the temporary folder) or at the very end (the marker file) is named
    by the destination, not by "[Errno 28]" or the hidden folder it was unpacked in; nothing is left behind."""
    archive = pc.pack(_runs_folder(tmp_path / "demo"), tmp_path / "usb" / "demo.tar.gz")
    dest = tmp_path / "attendee" / "precomputed"

    def no_room(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as mp:
        mp.setattr(pc.tempfile, "mkdtemp", no_room)
        code, err = cli(pc.main, "notebooks.precomputed", "unpack", archive, "--dest", dest)
    assert code == 2 and f"error: {dest}: {FULL} (No space left on device; " in err and "Errno" not in err, err
    write_text = pc.atomic_write_text

    def full_at_the_marker(text, path):
        if os.path.basename(path) == pc.MARKER:
            with pc.atomic_path(path) as tmp:
                tmp.write_text(text)
                raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(text, path)

    monkeypatch.setattr(pc, "atomic_write_text", full_at_the_marker)
    code, err = cli(pc.main, "notebooks.precomputed", "unpack", archive, "--dest", dest)
    assert code == 2 and f"error: {dest}/{pc.MARKER}: {FULL} (No space left on device; " in err, err
    assert ".tmp" not in err and not dest.exists() and list(dest.parent.iterdir()) == []


def test_pack_on_a_full_disk_names_the_archive_and_leaves_no_temp_file(tmp_path, cli, monkeypatch):
    runs = _runs_folder(tmp_path / "demo")
    out = tmp_path / "usb" / "demo.tar.gz"

    def full_disk(tar, name, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pc, "_add_bytes", full_disk)
    code, err = cli(pc.main, "notebooks.precomputed", "pack", "--runs", runs, "--out", out)
    assert code == 2 and f"error: {out}: {FULL} (No space left on device; " in err and "Errno" not in err, err
    assert list(out.parent.iterdir()) == []


def test_unpack_refuses_a_member_nested_too_deep(tmp_path, cli):
    deep = "/".join(["d"] * 1500) + "/f.txt"
    archive = _write_tar(tmp_path / "deep.tar.gz", [_file(deep, b"x")])
    dest = tmp_path / "out"
    code, err = cli(pc.main, "notebooks.precomputed", "unpack", archive, "--dest", dest)
    assert code == 2 and f"error: {archive}: member 'd/d/d/" in err and "is nested 1501 folders deep (more than 64); " \
                                                                      "refused, nothing was unpacked" in err, err
    assert not dest.exists() and [p.name for p in tmp_path.iterdir()] == ["deep.tar.gz"]


def test_pack_names_a_runs_folder_nested_too_deep(tmp_path, cli):
    runs = _runs_folder(tmp_path / "demo")
    top = runs / "artifacts" / "ssl_pretraining"
    _deep_folder(top, pc.MAX_DEPTH + 1)
    code, err = cli(pc.main, "notebooks.precomputed", "pack", "--runs", runs, "--out", tmp_path / "a.tar.gz")
    assert code == 2 and f"error: {top}/{'d/' * pc.MAX_DEPTH}d: folders nested more than 64 deep under {top}; " \
                         "refused" in err and "Recursion" not in err, err
    assert not (tmp_path / "a.tar.gz").exists()
