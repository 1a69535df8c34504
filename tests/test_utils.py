"""Shared helpers: device selection, safe checkpoint loading, atomic writes."""
from __future__ import annotations

import pytest
import torch

from swinunetr_lib.utils import device as device_module
from swinunetr_lib.utils.device import resolve_device
from swinunetr_lib.utils.files import atomic_write_text

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")


@no_gpu
def test_an_explicit_gpu_that_is_not_there_is_an_error_and_auto_says_it_falls_back(monkeypatch, capsys):
    for name in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(ValueError, match=rf"device='{name}': .*(without CUDA|no usable CUDA GPU).*device=cpu"):
            resolve_device(name)
    with pytest.raises(ValueError, match="'tpu' is not a device"):
        resolve_device("tpu")
    monkeypatch.setattr(device_module, "_said_cpu_fallback", False)
    assert resolve_device("auto") == resolve_device("auto") == torch.device("cpu")
    assert capsys.readouterr().out == "device=auto: no usable CUDA GPU, running on the CPU\n"  # one line, once
    assert resolve_device("cpu") == torch.device("cpu")


def test_safe_load_refuses_code_and_keeps_plain_checkpoints(tmp_path, booby_trap):
    from swinunetr_lib.utils.files import CheckpointError, safe_torch_load

    marker = booby_trap(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError,
                       match=r"evil.pt: refused to load: the file holds Python objects \(posix.system\)"):
        safe_torch_load(tmp_path / "evil.pt")
    assert not marker.exists()
    plain = {"state_dict": {"module.patch_embed.proj.weight": torch.ones(2)}, "meta": {"roi": [96, 96, 96], "x": None}}
    torch.save(plain, tmp_path / "plain.pt")
    loaded = safe_torch_load(tmp_path / "plain.pt")
    assert loaded["meta"] == plain["meta"] and torch.equal(loaded["state_dict"]["module.patch_embed.proj.weight"],
                                                           torch.ones(2))
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="text.pt: cannot be read as a torch checkpoint"):
        safe_torch_load(tmp_path / "text.pt")


def test_atomic_writes_are_synced_and_get_the_umask_not_0600(tmp_path, monkeypatch):
    import os

    synced, real_fsync = [], os.fsync

    def recording_fsync(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    old = os.umask(0o022)
    try:
        path = atomic_write_text("x", tmp_path / "out.txt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644 and path.read_text() == "x"
    # the data before the rename (the temporary file), then the folder that records the rename
    assert len(synced) == 2 and ".out.txt." in synced[0] and synced[1] == str(tmp_path.resolve()), synced
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
