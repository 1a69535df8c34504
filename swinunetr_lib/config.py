"""Typed configuration dataclasses built from plain values (nanoGPT's configurator idea).

Every entry point (pretraining, fine-tuning, inference, benchmark) has one ``@dataclass`` config that
inherits :class:`Config`. ``Config.from_dict`` rejects unknown keys and values of the wrong type with a
message that names the key, so a misspelled papermill or command-line parameter fails loudly.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Mapping, TypeVar, Union, get_args, get_origin, get_type_hints

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A configuration value is unknown or has the wrong type."""


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    """Return ``value`` (ints widened to float where a float is expected) or raise :class:`ConfigError`."""
    origin = get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for option in get_args(annotation):
            try:
                return _check_type(name, value, option)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{name}={value!r} matches none of {annotation}")
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"{name}={value!r} should be None")
    if origin is typing.Literal:
        if value in get_args(annotation):
            return value
        raise ConfigError(f"{name}={value!r} must be one of {list(get_args(annotation))}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}={value!r} should be a {origin.__name__}")
        args = get_args(annotation)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{name}={value!r} should have {len(args)} items")
            return tuple(_check_type(f"{name}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        checked = [_check_type(f"{name}[{i}]", v, item) for i, v in enumerate(value)]
        return tuple(checked) if origin is tuple else checked
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}={value!r} should be a mapping")
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} should be an int, not a bool")
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ConfigError(f"{name}={value!r} should be of type {annotation.__name__}, got {type(value).__name__}")
    return value


def _is_list_type(annotation: Any) -> bool:
    """True for list/tuple annotations, also inside ``X | None``."""
    if get_origin(annotation) in (list, tuple):
        return True
    return get_origin(annotation) in (Union, types.UnionType) and any(_is_list_type(a) for a in get_args(annotation))


def _only_list_type(annotation: Any) -> bool:
    """True for ``list[X]`` and ``list[X] | None`` (not for ``int | list[int]``, where a scalar is valid)."""
    if get_origin(annotation) in (list, tuple):
        return True
    options = [a for a in get_args(annotation) if a is not type(None)]
    return get_origin(annotation) in (Union, types.UnionType) and bool(options) and all(
        get_origin(a) in (list, tuple) for a in options)


@dataclasses.dataclass
class Config:
    """Base class: subclasses are plain dataclasses whose defaults are the paper's values."""

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any]) -> C:
        """Build a config from plain values; unknown keys and wrong types raise :class:`ConfigError`."""
        hints = get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown parameter(s) {unknown}; known parameters are {sorted(names)}"
            )
        checked = {k: _check_type(f"{cls.__name__}.{k}", v, hints[k]) for k, v in values.items()}
        return cls(**checked)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add one ``--name`` option per field; values are parsed as YAML (``--roi-size "[64,64,64]"``).

        A bool option given alone means true (``--compile``); list options also take comma-separated
        values (``--seeds 0,1,2`` is ``--seeds "[0,1,2]"``).
        """
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
            extra: dict[str, Any] = {"nargs": "?", "const": "true"} if hints[f.name] is bool else {}
            parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, metavar=f.name.upper(),
                                help=f"default: {default}", **extra)

    @classmethod
    def from_args(cls: type[C], args: argparse.Namespace) -> C:
        import yaml

        raw = {k: yaml.safe_load(v) if isinstance(v, str) else v for k, v in vars(args).items()
               if k in {f.name for f in dataclasses.fields(cls)}}
        # YAML reads a bare path like "runs/x" as a string already; keep strings that YAML turns into other types
        hints = get_type_hints(cls)
        for k, v in vars(args).items():
            if k in raw and hints.get(k) is str:
                raw[k] = v
            elif k in raw and isinstance(raw[k], str) and "," in raw[k] and _is_list_type(hints.get(k)):
                raw[k] = [yaml.safe_load(part.strip()) for part in raw[k].split(",")]
            elif k in raw and raw[k] is not None and not isinstance(raw[k], (list, tuple)) \
                    and _only_list_type(hints.get(k)):
                raw[k] = [raw[k]]  # "--seeds 0" is "--seeds [0]"
            elif k in raw and isinstance(raw[k], str) and float in get_args(hints.get(k)) + (hints.get(k),):
                try:  # YAML 1.1 reads "1e-3" (no dot) as a string
                    raw[k] = float(raw[k])
                except ValueError:
                    pass
        return cls.from_dict(raw)
