"""The package's re-exports resolve, and importing it stays cheap."""
from __future__ import annotations

import subprocess
import sys

import swinunetr_lib


def test_every_export_resolves():
    for name in swinunetr_lib.__all__:
        assert getattr(swinunetr_lib, name) is not None, name


def test_import_does_not_load_torch():
    code = "import sys, swinunetr_lib; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
