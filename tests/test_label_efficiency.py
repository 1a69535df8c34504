"""Label-efficiency sweep end to end at smoke size: papermill runs notebook 03 per setting."""
from __future__ import annotations

import pandas as pd
import pytest
import yaml

from swinunetr_lib.finetune_model import build_swinunetr
from swinunetr_lib.ssl_model import export_encoder
from swinunetr_lib.label_efficiency import LabelEfficiencyConfig, main, run_sweep, summarize_runs

from test_finetune import make_tiny_cohort


def test_summary_is_mean_and_std_over_seeds():
    df = pd.DataFrame({"init": ["ssl", "ssl", "scratch"], "labeled_fraction": [0.5, 0.5, 0.5],
                       "mean_dice": [0.6, 0.8, 0.5]})
    s = summarize_runs(df).set_index("init")
    assert s.loc["ssl", "mean"] == pytest.approx(0.7) and s.loc["ssl", "std"] == pytest.approx(0.1414, abs=1e-4)
    assert s.loc["scratch", "count"] == 1


@pytest.mark.slow
def test_sweep_runs_notebook_per_setting_and_collects(tmp_path, monkeypatch):
    monkeypatch.setenv("SWINUNETR_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("SWINUNETR_DATA_DIR", str(tmp_path / "data"))
    manifest = make_tiny_cohort(tmp_path / "cohort", n_train=2, n_val=1)
    encoder = export_encoder(build_swinunetr(1, 14, feature_size=12), tmp_path / "ssl_encoder.pt")
    params = {"data_manifest": str(manifest), "spacing": [8.0, 8.0, 8.0], "roi_size": [64, 32, 32], "feature_size": 12,
              "max_steps": 1, "val_interval": 1, "warmup_steps": 1, "device": "cpu"}
    (tmp_path / "params.yml").write_text(yaml.safe_dump(params))
    cfg = LabelEfficiencyConfig(params=str(tmp_path / "params.yml"), fractions=[0.5], inits=["scratch", "ssl"],
                                seeds=[0], pretrained=str(encoder), output=str(tmp_path / "le"))
    res = run_sweep(cfg)
    assert not res.failures and len(res.results) == 2
    assert set(res.results["init"]) == {"scratch", "ssl"} and (res.results["n_train"] == 1).all()
    assert res.results["mean_dice"].between(0, 1).all()
    assert (tmp_path / "le" / "results.csv").is_file() and res.figure.is_file()
    assert (tmp_path / "le" / "runs" / "ssl_frac0.5_seed0" / "03_finetune_btcv.ipynb").is_file()
    assert set(res.summary["init"]) == {"scratch", "ssl"}

    # finished runs are reused: the CLI only re-collects (a failure here would be a new notebook run)
    monkeypatch.setenv("SWINUNETR_DATA_DIR", str(tmp_path / "nowhere"))
    assert main(["--params", str(tmp_path / "params.yml"), "--fractions", "[0.5]", "--inits", "[scratch, ssl]",
                 "--seeds", "[0]", "--output", str(tmp_path / "le")]) == 0


def test_unknown_notebook_parameter_is_rejected(tmp_path):
    (tmp_path / "p.yml").write_text("max_step: 3\n")
    with pytest.raises(Exception, match="unknown parameter 'max_step'"):
        run_sweep(LabelEfficiencyConfig(params=str(tmp_path / "p.yml"), output=str(tmp_path / "o")))


def test_bad_inits_fail_before_any_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SWINUNETR_RUNS_DIR", str(tmp_path / "runs"))
    assert main(["--inits", "scratch,bogus", "--output", str(tmp_path / "o")]) == 2
    assert "'bogus' is not one of" in capsys.readouterr().err
    assert main(["--inits", "ssl", "--output", str(tmp_path / "o")]) == 2  # no encoder exported yet
    assert "model_swinvit.pt: pretrained encoder for init='ssl' not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
