"""Typed configuration dataclasses built from plain values (nanoGPT's configurator idea).

Every entry point (pretraining, fine-tuning, inference, benchmark) has one ``@dataclass`` config that
inherits :class:`Config`. ``Config.from_dict`` rejects unknown keys and values of the wrong type with a
message that names the key, so a misspelled papermill or command-line parameter fails loudly.
``Config.add_arguments`` turns the fields into command-line options whose ``--help`` is each field's
trailing source comment (what it means, its unit, the paper's value) followed by its default.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

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
            return tuple(_check_type(f"{name}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True)))
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


def check_type(name: str, value: Any, annotation: Any) -> Any:
    """``value`` checked against a type annotation (``int``, ``list[float]``, ``str | None``...): returned with
    ints widened to float where a float is expected, else :class:`ConfigError` naming ``name``."""
    return _check_type(name, value, annotation)


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


def _comment_text(token: str) -> str:
    return token.lstrip("#").strip()


def _class_field_comments(klass: type) -> dict[str, str]:
    """``{field: comment}`` from ``klass``'s own source: the comment(s) on a field's line(s), plus the
    comment-only lines right below it that are indented deeper than the field (continuation lines).
    A blank line, code or a comment at the field's own indentation ends a field's comment. Returns ``{}``
    when the source is unavailable (built in a REPL, frozen, ...) or cannot be parsed."""
    try:
        source = textwrap.dedent(inspect.getsource(klass))
        tree = ast.parse(source)
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (OSError, TypeError, SyntaxError, tokenize.TokenError, IndentationError):
        return {}
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
    if node is None:
        return {}
    lines = source.splitlines()
    comments: dict[int, tuple[int, str]] = {}  # line number -> (column, text)
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = (tok.start[1], _comment_text(tok.string))
    result: dict[str, str] = {}
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        end = stmt.end_lineno or stmt.lineno
        parts = [comments[n][1] for n in range(stmt.lineno, end + 1) if n in comments]
        line = end + 1
        while line in comments and not lines[line - 1][:comments[line][0]].strip() \
                and comments[line][0] > stmt.col_offset:
            parts.append(comments[line][1])
            line += 1
        text = " ".join(p for p in parts if p)
        if text:
            result[stmt.target.id] = text
    return result


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """Each field's source comment for a dataclass, including fields inherited from dataclass bases
    (a subclass that redeclares a field without a comment keeps the base class's comment)."""
    result: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            result.update(_class_field_comments(klass))
    return result


def _format_default(value: Any) -> str:
    if value == "" and isinstance(value, str):
        return '""'
    return str(value)


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
        values (``--seeds 0,1,2`` is ``--seeds "[0,1,2]"``). Each option's help is the field's
        ``metadata["help"]`` or else its trailing comment in the class source, then its default:
        ``max_steps: int = 1000  # optimizer steps in total`` gives "optimizer steps in total (default: 1000)".
        """
        hints = get_type_hints(cls)
        comments = field_comments(cls)
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
            extra: dict[str, Any] = {"nargs": "?", "const": "true"} if hints[f.name] is bool else {}
            text = str(f.metadata.get("help") or comments.get(f.name, ""))
            shown = f"default: {_format_default(default)}"
            help_text = f"{text} ({shown})" if text else shown
            parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, metavar=f.name.upper(),
                                help=help_text.replace("%", "%%"), **extra)

    @classmethod
    def from_args(cls: type[C], args: argparse.Namespace) -> C:
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
