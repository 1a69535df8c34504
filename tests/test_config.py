"""Config dataclasses reject unknown keys and wrong types, naming them."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from swinunetr_lib.config import Config, ConfigError


@dataclass
class ToyConfig(Config):
    roi_size: tuple[int, int, int] = (96, 96, 96)
    lr: float = 4e-4
    max_steps: int = 10
    device: str = "auto"
    data_manifest: str | None = None
    compile: bool = False
    seeds: list[int] | None = None


def test_defaults_and_widening():
    cfg = ToyConfig.from_dict({"lr": 1, "roi_size": [64, 64, 64]})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.roi_size == (64, 64, 64)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="max_stepz"):
        ToyConfig.from_dict({"max_stepz": 3})


@pytest.mark.parametrize("key,value", [("max_steps", "3"), ("max_steps", True), ("roi_size", [64, 64]),
                                       ("lr", "fast"), ("data_manifest", 3)])
def test_wrong_types_are_named(key, value):
    with pytest.raises(ConfigError, match=key):
        ToyConfig.from_dict({key: value})


def test_command_line_matches_function():
    parser = argparse.ArgumentParser()
    ToyConfig.add_arguments(parser)
    args = parser.parse_args(["--roi-size", "[64, 64, 64]", "--max-steps", "5", "--data-manifest", "a/b.json"])
    cfg = ToyConfig.from_args(args)
    assert cfg == ToyConfig(roi_size=(64, 64, 64), max_steps=5, data_manifest="a/b.json")


def test_bare_bool_flags_and_comma_lists():
    parser = argparse.ArgumentParser()
    ToyConfig.add_arguments(parser)
    cfg = ToyConfig.from_args(parser.parse_args(["--compile", "--seeds", "0,1,2", "--roi-size", "64,64,32"]))
    assert cfg.compile is True and cfg.seeds == [0, 1, 2] and cfg.roi_size == (64, 64, 32)
    cfg = ToyConfig.from_args(parser.parse_args(["--compile", "false", "--seeds", "[3]"]))
    assert cfg.compile is False and cfg.seeds == [3]
    assert ToyConfig.from_args(parser.parse_args(["--seeds", "4"])).seeds == [4]  # one value is a one-item list
    with pytest.raises(ConfigError, match="seeds"):
        ToyConfig.from_args(parser.parse_args(["--seeds", "0,x"]))
