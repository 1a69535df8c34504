"""Shared fixtures. Tests run on the real example scans (through the mirror folder) and on phantoms."""
from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs the tests in parallel processes (pytest-xdist, PYTEST_WORKERS): each gets one thread, and
    # so do the processes it starts (commands, notebook kernels), so that the workers share the cores without
    # OpenMP threads spinning against each other.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def example_ct_sm():
    from swinunetr_lib.data.example_data import fetch_example

    return fetch_example("example_ct_sm.nii.gz")


@pytest.fixture(scope="session")
def example_seg():
    from swinunetr_lib.data.example_data import fetch_example

    return fetch_example("example_seg.nii.gz")


class RunsCommand:
    """An object whose unpickling runs a shell command (it creates a marker file): what a malicious
    checkpoint holds. ``torch.load(weights_only=False)`` would run it; a safe loader must refuse it."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        import shlex

        return (os.system, (f"touch {shlex.quote(self.marker)}",))


@pytest.fixture
def booby_trap(tmp_path):
    """``make(path, build)``: save ``build(trap)`` (default ``{"state_dict": {...}, "extra": trap}``) to ``path``
    with ``torch.save``; returns the marker file that exists only if something unpickled the trap."""
    marker = tmp_path / "booby_trap_went_off"

    def make(path, build=None):
        trap = RunsCommand(marker)
        obj = build(trap) if build is not None else {"state_dict": {"w": torch.zeros(1)}, "extra": trap}
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, path)
        assert not marker.exists()
        return marker

    return make
