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


@dataclass
class HelpConfig(Config):
    max_steps: int = 1000     # optimizer steps in total
    lr: float = 4e-4          # peak AdamW learning rate
                              # (paper: 4e-4, i.e. 100 % of it)
    seed: int = 0
    # a heading comment at the field's own indentation belongs to no field

    device: str = "auto"      # auto | cpu | cuda
    out: str = ""


@dataclass
class ChildConfig(HelpConfig):
    roi_size: int = 96        # cubic sub-volume side in voxels (paper: 96)
    seed: int = 1


def _help(cls) -> str:
    parser = argparse.ArgumentParser(prog="x")
    cls.add_arguments(parser)
    return " ".join(parser.format_help().split())  # argparse wraps lines


def test_help_is_the_field_comment_with_its_default():
    text = _help(HelpConfig)
    assert "--max-steps MAX_STEPS optimizer steps in total (default: 1000)" in text
    # continuation comment lines belong to the field above; "%" survives argparse's formatting
    assert "--lr LR peak AdamW learning rate (paper: 4e-4, i.e. 100 % of it) (default: 0.0004)" in text
    assert "--seed SEED default: 0" in text and "heading" not in text  # no comment: just the default
    assert "--device DEVICE auto | cpu | cuda (default: auto)" in text
    assert '--out OUT default: ""' in text


def test_help_of_inherited_fields_and_without_source():
    text = _help(ChildConfig)
    assert "optimizer steps in total (default: 1000)" in text
    assert "cubic sub-volume side in voxels (paper: 96) (default: 96)" in text
    assert "--seed SEED default: 1" in text
    # a dataclass built at run time has no source: every option still gets its default
    from dataclasses import field, make_dataclass

    Made = make_dataclass("Made", [("steps", int, field(default=3)), ("tag", str, field(default="a"))], bases=(Config,))
    text = _help(Made)
    assert "--steps STEPS default: 3" in text and "--tag TAG default: a" in text


def test_finetune_help_explains_each_option(capsys):
    import importlib

    finetune = importlib.import_module("swinunetr_lib.finetune.run")
    with pytest.raises(SystemExit) as exit_:
        finetune.main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--overlap OVERLAP sliding-window overlap, 0 <= overlap < 1 (paper: 0.5, Gaussian blending) " \
           "(default: 0.5)" in text
    assert "--max-steps MAX_STEPS optimizer steps in total (MONAI's BTCV tutorial: 30000) (default: 30000)" in text
    # every option of every command's config says what it means, not only its default
    for module, name in [("finetune.run", "FinetuneConfig"), ("pretrain.run", "PretrainConfig"),
                         ("bench.ssl", "BenchConfig"), ("bench.finetune", "FinetuneBenchConfig"),
                         ("bench.infer", "InferBenchConfig"), ("experiments.label_efficiency", "LabelEfficiencyConfig"),
                         ("data.cohort", "DemoCohortConfig")]:
        parser = argparse.ArgumentParser()
        getattr(importlib.import_module(f"swinunetr_lib.{module}"), name).add_arguments(parser)
        for action in parser._actions[1:]:
            assert "(default: " in action.help and not action.help.startswith("default:"), (name, action.dest)
