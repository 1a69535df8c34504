"""The package's re-exports resolve, and importing it stays cheap."""
from __future__ import annotations

import pkgutil
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


def test_importing_monai_compiles_no_iri_grammars():
    """MONAI imports jsonschema's format checkers; jsonschema 4.25+ (with the format-nongpl extra Jupyter asks for)
    then imports rfc3987_syntax, which compiles ~35 Earley grammars: ~2 s more in every process that imports
    MONAI. pyproject.toml keeps jsonschema below 4.25 until it imports that lazily."""
    import jsonschema._format  # noqa: F401  (what monai.bundle imports; the checkers are built at its import)
    import monai.bundle  # noqa: F401

    assert "rfc3987_syntax" not in sys.modules


def test_no_export_has_the_name_of_a_module():
    """One name, one thing: ``from swinunetr_lib import finetune`` must not give the function or the module
    depending on what was imported first (issue #24)."""
    modules = {m.name for m in pkgutil.iter_modules(swinunetr_lib.__path__)}
    clash = sorted(set(swinunetr_lib.__all__) & modules)
    assert not clash, f"exported under the name of a module of the package: {clash}"
    assert "pretrain" in modules and "finetune" in modules and "infer" in modules  # the check sees the stages


def test_an_export_is_the_same_object_whatever_was_imported_first():
    code = ("import importlib, sys, swinunetr_lib\n"
            "first = {n: getattr(swinunetr_lib, n) for n in swinunetr_lib.__all__}\n"
            "for m in ('pretrain.run', 'finetune.run', 'infer.predict', 'infer.evaluation'):\n"
            "    importlib.import_module('swinunetr_lib.' + m)\n"
            "print(all(getattr(swinunetr_lib, n) is v for n, v in first.items()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
