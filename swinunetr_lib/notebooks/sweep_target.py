"""What a sweep runs at each point: a notebook (its parameters cell types the grid) or an experiment module (its
``Config`` dataclass types the grid), so that notebooks and experiments are swept one way.

An experiment module is swept when it declares::

    SWEEP_CONFIG = DenseProbeConfig             # the Config whose fields a grid may set (types checked)
    SWEEP_OUTPUTS = {"csv": "dense_probe.csv"}  # optional: fields the sweep sets to a file in each run's folder
    def sweep_config(params) -> Config: ...     # optional: one point's config, its values checked (ValueError)
    def run_for_sweep(params) -> dict[str, float | bool]: ...   # one run; returns the scalar results to record

``sweep_config`` is called on every point before anything runs (a missing input file or a value out of range is
then one line naming the grid file); ``run_for_sweep`` gets the point's parameters plus ``SWEEP_OUTPUTS`` (absolute
paths in the run's folder), in the run's own process. The fingerprint hashes the module's source file.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, get_type_hints

from ..config import ConfigError, check_type
from .runner import NotebookError, check_params, notebook_parameters, shown

REQUIRED = ("SWEEP_CONFIG", "run_for_sweep")
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


@dataclass(frozen=True)
class Target:
    """A notebook source (``module == ""``) or an experiment module; ``source`` is the file fingerprinted."""

    source: Path
    module: str = ""

    @property
    def label(self) -> str:
        return self.module or str(self.source)

    def _loaded(self) -> ModuleType:
        return importlib.import_module(self.module)

    def config_class(self) -> type:
        return self._loaded().SWEEP_CONFIG

    def outputs(self) -> dict[str, str]:
        """Fields the sweep sets to files in each run's folder (a module's ``SWEEP_OUTPUTS``; none for notebooks)."""
        return dict(getattr(self._loaded(), "SWEEP_OUTPUTS", {})) if self.module else {}

    def defaults(self) -> dict[str, Any]:
        """Every parameter's default value (a required Config field: None)."""
        if not self.module:
            return notebook_parameters(self.source)
        fields = dataclasses.fields(self.config_class())
        return {f.name: f.default if f.default is not dataclasses.MISSING else
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None for f in fields}

    def check(self, values: dict[str, Any], where: str) -> dict[str, Any]:
        """``values``' keys and types checked against the target's parameters; returned with ints widened to float
        where a float is declared. All problems in one :class:`NotebookError` line starting with ``where``."""
        if not self.module:
            return check_params(values, self.source, where)
        cls = self.config_class()
        hints, defaults, outputs = get_type_hints(cls), self.defaults(), self.outputs()
        values, problems = dict(values), []
        for key, value in values.items():
            if key in outputs:
                problems.append(f"parameter {key!r} is written by the sweep into each run's folder "
                                f"({outputs[key]}); leave it out")
            elif key not in hints:
                close = difflib.get_close_matches(str(key), list(defaults), n=1)
                problems.append(f"unknown parameter {shown(key)}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            else:
                try:
                    values[key] = check_type(key, value, hints[key])
                except ConfigError:
                    hint = hints[key]
                    text = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
                    problems.append(f"parameter {key!r} = {shown(value)} is a {type(value).__name__}, "
                                    f"{cls.__name__} declares {key}: {text} = {defaults[key]!r}")
        if problems:
            raise NotebookError(f"{where}: " + "; ".join(problems) + f". {self.module} accepts: "
                                f"{sorted(set(defaults) - set(outputs))}")
        return values

    def check_point(self, params: dict[str, Any], where: str, name: str) -> None:
        """A module's ``sweep_config`` on one whole point (values, input files), before anything runs."""
        check = getattr(self._loaded(), "sweep_config", None) if self.module else None
        if check is not None:
            try:
                check(params)
            except (ValueError, OSError) as err:
                raise NotebookError(f"{where}: run {name}: {' '.join(str(err).split())}") from None

    def run(self, params: dict[str, Any], folder: Path) -> dict[str, Any]:
        """A module's ``run_for_sweep`` on one point, its outputs set to files in ``folder``."""
        outputs = {k: str(folder / v) for k, v in self.outputs().items()}
        return dict(self._loaded().run_for_sweep({**params, **outputs}) or {})


def resolve_target(text: str) -> Target:
    """``notebooks/NN_topic.py`` or ``package.module`` (an experiment module declaring :data:`REQUIRED`); errors are
    one line naming ``text``."""
    path = Path(text)
    if path.suffix == ".py" or path.exists() or not MODULE_NAME.fullmatch(text):
        path = path.resolve()
        if not path.is_file() or path.suffix != ".py":
            raise NotebookError(f"{text}: no such notebook source or experiment module; expected notebooks/NN_topic.py "
                                "or package.module (e.g. swinunetr_lib.experiments.dense_probe)")
        return Target(path)
    try:
        module = importlib.import_module(text)
    except ImportError as err:
        raise NotebookError(f"{text}: cannot import this module ({err})") from None
    missing = [name for name in REQUIRED if not hasattr(module, name)]
    if missing or not getattr(module, "__file__", None):
        raise NotebookError(f"{text}: not a sweepable experiment module (it lacks {missing or ['a source file']}; "
                            f"it needs {list(REQUIRED)})")
    return Target(Path(module.__file__).resolve(), text)
