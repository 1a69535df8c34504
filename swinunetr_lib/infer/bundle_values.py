"""Checkpoint values that may go into a MONAI bundle: typed, bounded, and never MONAI config syntax.

MONAI's config parser runs a string value that starts with ``$`` as Python, follows ``@`` references, expands
``%`` macros, rewrites ``#`` into its ``::`` id separator and imports and calls any mapping's ``_target_``. A
checkpoint is data from whoever trained it, so nothing it holds is copied into a bundle unchecked: every
value passes :func:`bundle_safe_value`, an allow-list of types and shapes (not an escaping scheme):

- ``"int"``: a Python ``int`` (not a bool) within bounds; ``"float"``: an int or float, finite, within bounds;
- ``"name"``: plain text of 1 to 128 characters with no control characters, none of ``$ @ % #`` (config
  syntax), ``` ` < > [ ] \\ ``` (markup) and neither ``_target_`` nor ``::``; optionally one of a few choices;
- ``"ints"``, ``"floats"``, ``"names"``: a list or tuple of those, of a given length;
- ``"labels"``: class id (int or decimal string, ``0 .. n-1``) -> name;
- ``"plain"``: nested lists and dicts (names as keys) of the scalars above, None, bools and text (names of up
  to 10,000 characters, possibly empty): what a whole ``metadata.json`` may hold.

:func:`bundle_values` checks every field the exporter writes (the fine-tuning metadata, its task preset,
``best_mean_dice``, ``step``, the checkpoint's file name) and returns them rebuilt from the checked values
only. A value that fails is a :class:`BundleValueError`: one line, ``<file>: <field> <problem>``.
"""
from __future__ import annotations

import dataclasses
import math
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..finetune.task_presets import TaskPreset

NAME_MAX = 128         # characters of a name (label, channel, task, file)
TEXT_MAX = 10_000      # characters of a "plain" text value (metadata.json's composed descriptions)
ITEMS_MAX = 1024       # items of a list or mapping without a fixed length
DEPTH_MAX = 8          # nesting of a "plain" value
INT_MAX = 2**31 - 1
FORBIDDEN_CHARS = "$@%#`<>[]\\"
FORBIDDEN_PARTS = ("_target_", "::")
KINDS = ("int", "float", "name", "ints", "floats", "names", "labels", "plain")
_CLASS_ID = re.compile(r"[0-9]{1,9}")


class BundleValueError(ValueError):
    """A checkpoint value that may not go into a bundle; the message is ``[<file>: ]<field> <problem>``."""


def _show(value: Any) -> str:
    """``value`` for a one-line message: its type and a short repr."""
    text = " ".join(repr(value).split())
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _check_text(field: str, value: Any, longest: int, empty: bool) -> str:
    if not isinstance(value, str):
        raise BundleValueError(f"{field} must be text, not the {_show(value)}")
    if not value and not empty:
        raise BundleValueError(f"{field} is empty")
    if len(value) > longest:
        raise BundleValueError(f"{field} is {len(value)} characters long (at most {longest})")
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            raise BundleValueError(f"{field} holds the control or unassigned character U+{ord(ch):04X}")
        if ch in FORBIDDEN_CHARS:
            raise BundleValueError(f"{field} holds {ch!r} ({_show(value)}): a MONAI config or the README would read "
                                   f"it as syntax; names may not hold any of {FORBIDDEN_CHARS}")
    for part in FORBIDDEN_PARTS:
        if part in value:
            raise BundleValueError(f"{field} holds {part!r} ({_show(value)}), MONAI config syntax")
    return value


def _check_number(field: str, value: Any, kind: str, low: float | None, high: float | None) -> int | float:
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise BundleValueError(f"{field} must be a whole number, not the {_show(value)}")
    if kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise BundleValueError(f"{field} must be a number, not the {_show(value)}")
    number = int(value) if kind == "int" else float(value)
    if not math.isfinite(number):
        raise BundleValueError(f"{field} must be a finite number, not {number!r}")
    low = -INT_MAX if low is None and kind == "int" else low
    high = INT_MAX if high is None and kind == "int" else high
    if (low is not None and number < low) or (high is not None and number > high):
        raise BundleValueError(f"{field} is {number!r}, outside [{low}, {high}]")
    return number


def _check_items(field: str, value: Any, length: int | None) -> list[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise BundleValueError(f"{field} must be a list, not the {_show(value)}")
    if length is not None and len(value) != length:
        raise BundleValueError(f"{field} has {len(value)} items, not {length}")
    if len(value) > ITEMS_MAX:
        raise BundleValueError(f"{field} has {len(value)} items (at most {ITEMS_MAX})")
    return list(value)


def _check_labels(field: str, value: Any) -> dict[int, str]:
    if not isinstance(value, Mapping) or not value:
        raise BundleValueError(f"{field} must be a non-empty mapping of class ids to names, not the {_show(value)}")
    if len(value) > ITEMS_MAX:
        raise BundleValueError(f"{field} has {len(value)} classes (at most {ITEMS_MAX})")
    labels: dict[int, str] = {}
    for key, name in value.items():
        if isinstance(key, str) and _CLASS_ID.fullmatch(key):
            key_id = int(key)
        elif isinstance(key, int) and not isinstance(key, bool):
            key_id = key
        else:
            raise BundleValueError(f"{field} key must be a class id (0, 1, ...), not the {_show(key)}")
        if not 0 <= key_id < len(value) or key_id in labels:
            raise BundleValueError(f"{field} key {key_id} is out of order: class ids must be 0 .. {len(value) - 1}, "
                                   "each once")
        labels[key_id] = _check_text(f"{field}[{key_id}]", name, NAME_MAX, empty=False)
    return dict(sorted(labels.items()))


def _check_plain(field: str, value: Any, depth: int) -> Any:
    if depth > DEPTH_MAX:
        raise BundleValueError(f"{field} is nested more than {DEPTH_MAX} levels deep")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return _check_number(field, value, "int", None, None)
    if isinstance(value, float):
        return _check_number(field, value, "float", None, None)
    if isinstance(value, str):
        return _check_text(field, value, TEXT_MAX, empty=True)
    if isinstance(value, Mapping):
        if len(value) > ITEMS_MAX:
            raise BundleValueError(f"{field} has {len(value)} keys (at most {ITEMS_MAX})")
        return {_check_text(f"{field} key", k, NAME_MAX, empty=False): _check_plain(f"{field}.{k}", v, depth + 1)
                for k, v in value.items()}
    return [_check_plain(f"{field}[{i}]", v, depth + 1) for i, v in enumerate(_check_items(field, value, None))]


def bundle_safe_value(field: str, value: Any, kind: str, *, length: int | None = None, low: float | None = None,
                      high: float | None = None, choices: tuple[str, ...] = (), optional: bool = False) -> Any:
    """``value`` checked as ``kind`` (see the module's docstring) and normalised (ints, floats, lists, a sorted
    ``{int: name}``); ``length`` fixes a list's length, ``low``/``high`` bound numbers (inclusive), ``choices``
    lists a name's allowed values, ``optional`` lets None through. Anything else raises :class:`BundleValueError`
    ``"<field> <problem>"``."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    if value is None and optional:
        return None
    if kind in ("int", "float"):
        return _check_number(field, value, kind, low, high)
    if kind == "name":
        name = _check_text(field, value, NAME_MAX, empty=False)
        if choices and name not in choices:
            raise BundleValueError(f"{field} is {name!r}, not one of {', '.join(choices)}")
        return name
    if kind == "labels":
        return _check_labels(field, value)
    if kind == "plain":
        return _check_plain(field, value, 0)
    item = kind[:-1]
    return [bundle_safe_value(f"{field}[{i}]", v, item, low=low, high=high, choices=choices)
            for i, v in enumerate(_check_items(field, value, length))]


# Every field of a TaskPreset: (kind, options). A field without an entry here is refused (fail closed).
PRESET_FIELDS: dict[str, tuple[str, dict[str, Any]]] = {
    "name": ("name", {}),
    "modality": ("name", {"choices": ("CT", "MR")}),
    "labels": ("labels", {}),
    "in_channels": ("int", {"low": 1, "high": 64}),
    "channel_names": ("names", {}),  # one per input channel (length set from in_channels)
    "spacing": ("floats", {"length": 3, "low": 1e-3, "high": 1e3, "optional": True}),
    "intensity": ("name", {"choices": ("ct_window", "mr_zscore")}),
    "window": ("floats", {"length": 2, "low": -1e6, "high": 1e6}),
    "roi_size": ("ints", {"length": 3, "low": 1, "high": 4096}),
    "num_samples": ("int", {"low": 1, "high": 4096}),
    "pos": ("float", {"low": 0.0, "high": 1e6}),
    "neg": ("float", {"low": 0.0, "high": 1e6}),
    "flip_prob": ("float", {"low": 0.0, "high": 1.0}),
    "rot90_prob": ("float", {"low": 0.0, "high": 1.0}),
    "scale_intensity_prob": ("float", {"low": 0.0, "high": 1.0}),
    "shift_intensity_prob": ("float", {"low": 0.0, "high": 1.0}),
}
# The fine-tuning metadata's model fields.
MODEL_FIELDS: dict[str, tuple[str, dict[str, Any]]] = {
    "in_channels": ("int", {"low": 1, "high": 64}),
    "out_channels": ("int", {"low": 1, "high": ITEMS_MAX}),
    "feature_size": ("int", {"low": 1, "high": 4096}),
}


@dataclasses.dataclass(frozen=True)
class BundleValues:
    """Every value from a checkpoint that a bundle holds, each one through :func:`bundle_safe_value`."""

    preset: TaskPreset              # rebuilt from checked fields only
    in_channels: int
    out_channels: int
    feature_size: int
    best_mean_dice: float | None
    step: int | None
    source_name: str                # the checkpoint's file name


def checked_preset(recorded: Any) -> TaskPreset:
    """The task preset recorded in fine-tuning metadata (``preset``), every field checked by
    :data:`PRESET_FIELDS`; an unknown field is refused, a missing one takes :class:`TaskPreset`'s default."""
    if not isinstance(recorded, Mapping):
        raise BundleValueError(f"preset must be a mapping of task preset fields, not the {_show(recorded)}")
    fields = {f.name: f for f in dataclasses.fields(TaskPreset)}
    for key in recorded:
        if key not in fields:
            raise BundleValueError(f"preset has the unknown field {_show(key)}")
    checked: dict[str, Any] = {}
    for name, spec in fields.items():
        if name not in recorded:
            if spec.default is dataclasses.MISSING:
                raise BundleValueError(f"preset.{name} is missing")
            continue
        if name not in PRESET_FIELDS:
            raise BundleValueError(f"preset.{name} has no bundle check in this version")
        kind, options = PRESET_FIELDS[name]
        if name == "channel_names":
            options = {**options, "length": checked.get("in_channels", fields["in_channels"].default)}
        value = bundle_safe_value(f"preset.{name}", recorded[name], kind, **options)
        checked[name] = tuple(value) if isinstance(value, list) else value
    window = checked.get("window", fields["window"].default)
    if not window[0] < window[1]:
        raise BundleValueError(f"preset.window {list(window)} must rise (low < high)")
    return TaskPreset(**checked)


def bundle_values(checkpoint: str | Path, meta: Mapping[str, Any], obj: Mapping[str, Any], *,
                  meta_file: str | Path | None = None) -> BundleValues:
    """The bundle's values from a fine-tuning checkpoint: ``meta`` (its ``"finetune"`` metadata, read from
    ``meta_file``, default the checkpoint) and ``obj`` (the whole checkpoint: ``best_mean_dice``, ``step``).
    A value that fails is a :class:`BundleValueError` ``"<file>: <field> <problem>"``."""
    path = Path(checkpoint)
    where = str(meta_file if meta_file is not None else path)
    try:
        model = {k: bundle_safe_value(k, meta.get(k), kind, **opts) for k, (kind, opts) in MODEL_FIELDS.items()}
        preset = checked_preset(meta.get("preset"))
    except BundleValueError as err:
        raise BundleValueError(f"{where}: {err}") from None
    try:
        dice = bundle_safe_value("best_mean_dice", obj.get("best_mean_dice"), "float", low=0.0, high=1.0,
                                 optional=True)
        step = bundle_safe_value("step", obj.get("step"), "int", low=0, optional=True)
        name = bundle_safe_value("file name", path.name, "name")
    except BundleValueError as err:
        raise BundleValueError(f"{path}: {err}") from None
    return BundleValues(preset, model["in_channels"], model["out_channels"], model["feature_size"], dice, step, name)
