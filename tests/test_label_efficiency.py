"""Label-efficiency sweep end to end at smoke size: papermill runs notebook 03 per setting."""
from __future__ import annotations

import pandas as pd
import pytest
import yaml
from test_finetune import make_tiny_cohort

from swinunetr_lib.experiments.label_efficiency import (
    RECORDED,
    LabelEfficiencyConfig,
    load_recorded,
    main,
    paired_gain,
    plot_label_efficiency,
    run_sweep,
    summarize_runs,
)
from swinunetr_lib.models.swin_unetr import build_swinunetr
from swinunetr_lib.pretrain.model import export_encoder


def test_summary_is_mean_and_std_over_seeds():
    df = pd.DataFrame({"init": ["ssl", "ssl", "scratch"], "labeled_fraction": [0.5, 0.5, 0.5],
                       "mean_dice": [0.6, 0.8, 0.5]})
    s = summarize_runs(df).set_index("init")
    assert s.loc["ssl", "mean"] == pytest.approx(0.7) and s.loc["ssl", "std"] == pytest.approx(0.1414, abs=1e-4)
    assert s.loc["scratch", "count"] == 1


def test_gain_is_paired_by_seed_and_skips_unpaired_runs():
    """Seed 0 has both runs (gain +0.2), seed 1 both (gain 0.0), seed 2 only scratch: mean 0.1 over 2 seeds."""
    df = pd.DataFrame({"init": ["scratch", "ssl", "scratch", "ssl", "scratch"], "labeled_fraction": [0.25] * 5,
                       "seed": [0, 0, 1, 1, 2], "mean_dice": [0.3, 0.5, 0.6, 0.6, 0.9]})
    g = paired_gain(df).set_index("setting")
    assert g.loc["25 % labels", "mean"] == pytest.approx(0.1) and g.loc["25 % labels", "count"] == 2
    assert g.loc["25 % labels", "std"] == pytest.approx(0.1414, abs=1e-4)
    assert g.loc["25 % labels", "ci_low"] < 0 < g.loc["25 % labels", "ci_high"]  # 2 pairs: a wide interval
    assert paired_gain(df[df["init"] == "scratch"]).empty


def test_plot_draws_each_initialisation_the_floors_and_a_forest_of_gains(tmp_path):
    df = pd.DataFrame({"init": ["scratch", "ssl"] * 4, "labeled_fraction": [0.25, 0.25, 0.25, 0.25, 1.0, 1.0, 1.0, 1.0],
                       "seed": [0, 0, 1, 1, 0, 0, 1, 1], "mean_dice": [0.3, 0.4, 0.35, 0.45, 0.7, 0.7, 0.72, 0.71]})
    fig = plot_label_efficiency(df, tmp_path / "f.png", n_train=4, floors={"atlas (no learning)": 0.5})
    left, right = fig.axes
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["from scratch", "SSL pretrained"]
    assert any("atlas (no learning): 0.50" in t.get_text() for t in left.texts)
    ticks = [t.get_text() for t in right.get_yticklabels()]
    assert ticks[0].startswith("25 % labels (1 of 4 cases), n = 2") and ticks[2] == "pooled, n = 4"
    assert "paper: BTCV, 5,050 CTs" in ticks[3]  # the paper's point as its own row, not on our axis of cases
    assert "of 4 cases" in left.get_xlabel() and (tmp_path / "f.png").stat().st_size > 10_000
    means = [c.lines[0].get_xdata()[0] for c in right.containers]  # each errorbar's own point
    assert means[:3] == pytest.approx([0.1, -0.005, 0.0475])  # per fraction, then pooled, paired by seed


def test_recorded_experiment_has_three_seeds_per_point_and_both_inits():
    """The committed experiment (issue #14) that notebook 06 draws: every init x fraction has >= 3 seeds, both
    initialisations at each fraction, Dice in [0, 1], and a probe of both encoders."""
    rec = load_recorded()
    counts = rec.results.groupby(["init", "labeled_fraction"]).size()
    assert set(rec.results["init"]) == {"scratch", "ssl"} and (counts >= 3).all()
    assert rec.results["mean_dice"].between(0, 1).all()
    assert len(paired_gain(rec.results)) == rec.results["labeled_fraction"].nunique() + 1
    assert rec.probe is not None and rec.probe["encoder"].tolist() == ["ssl", "random init"]
    assert "python -m swinunetr_lib.experiments.label_efficiency" in rec.about
    assert "of 4 cases" in plot_label_efficiency(rec.results).axes[0].get_xlabel()  # n_train read from the runs


def test_recorded_results_name_a_missing_or_broken_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.csv: no recorded"):
        load_recorded(tmp_path)
    (tmp_path / "results.csv").write_text("init,seed\nssl,0\n")
    with pytest.raises(ValueError, match=r"results.csv: missing columns \['labeled_fraction', 'mean_dice'\]"):
        load_recorded(tmp_path)
    assert RECORDED.name == "label_efficiency_phantoms"


@pytest.mark.slow
def test_sweep_runs_notebook_per_setting_and_collects(tmp_path, monkeypatch, capsys):
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

    # the library engine (no Jupyter: a GPU machine with only PyTorch) runs the same steps: the same numbers
    lib = run_sweep(LabelEfficiencyConfig(params=str(tmp_path / "params.yml"), fractions=[0.5],
                                          inits=["scratch", "ssl"],
                                          seeds=[0], pretrained=str(encoder), output=str(tmp_path / "le_lib"),
                                          engine="library"))
    assert not lib.failures
    assert not (tmp_path / "le_lib" / "runs" / "ssl_frac0.5_seed0" / "03_finetune_btcv.ipynb").exists()
    both = res.results.merge(lib.results, on=["init", "labeled_fraction", "seed"], suffixes=("_nb", "_lib"))
    assert len(both) == 2 and both["n_train_nb"].eq(both["n_train_lib"]).all()
    for column in ("mean_dice", "val_mean_dice_resampled", "organs_missed"):
        assert both[f"{column}_lib"].to_numpy() == pytest.approx(both[f"{column}_nb"].to_numpy(), abs=1e-4), column
    with pytest.raises(ValueError, match="engine=library runs the steps of notebooks/03_finetune_btcv.py only"):
        run_sweep(LabelEfficiencyConfig(notebook="notebooks/02_ssl_pretraining.py", engine="library",
                                        output=str(tmp_path / "x")))

    # finished runs are reused: the CLI only re-collects (a failure here would be a new notebook run)
    monkeypatch.setenv("SWINUNETR_DATA_DIR", str(tmp_path / "nowhere"))
    # (the same encoder: another one would be another ssl run, and rerun it)
    assert main(["--params", str(tmp_path / "params.yml"), "--fractions", "[0.5]", "--inits", "[scratch, ssl]",
                 "--seeds", "[0]", "--pretrained", str(encoder), "--output", str(tmp_path / "le")]) == 0
    assert "2 runs: 2 finished (skipped), 0 to run" in capsys.readouterr().out


def test_the_experiment_is_a_grid_of_cases_with_the_encoder_only_where_used(tmp_path, monkeypatch):
    """The preset's grid file for the sweep verb: one case per init x fraction x seed, the encoder only in the ssl
    cases (a new encoder reruns those alone), the old run names, and the library runner for engine=library."""
    from swinunetr_lib.experiments.label_efficiency import LIBRARY_RUNNER, NOTEBOOK, sweep_grid
    from swinunetr_lib.notebooks.sweep import load_grid
    from swinunetr_lib.paths import resolve_path

    encoder = tmp_path / "enc.pt"
    encoder.write_bytes(b"weights")
    cfg = LabelEfficiencyConfig(fractions=[0.25, 1.0], inits=["scratch", "ssl"], seeds=[0, 1], pretrained=str(encoder),
                                engine="library")
    grid = sweep_grid(cfg, resolve_path(NOTEBOOK))
    assert len(grid["cases"]) == 8 and grid["runner"] == LIBRARY_RUNNER
    assert all(("pretrained" in c) == (c["init"] == "ssl") for c in grid["cases"])
    (tmp_path / "grid.yml").write_text(yaml.safe_dump(grid))
    points = load_grid(tmp_path / "grid.yml", resolve_path(NOTEBOOK)).points
    assert [p.name for p in points][:3] == ["scratch_frac0.25_seed0", "scratch_frac0.25_seed1", "scratch_frac1_seed0"]
    encoder.write_bytes(b"other weights")
    again = load_grid(tmp_path / "grid.yml", resolve_path(NOTEBOOK)).points
    assert [a.fingerprint == b.fingerprint for a, b in zip(points, again, strict=True)] == [True] * 4 + [False] * 4


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


def test_the_recorded_readme_states_the_intervals_its_results_give():
    """Typed numbers cannot drift (issues #25, #26): each row of the README's gain table is what paired_gain computes
    from the committed results.csv, rounded to 3 places."""
    import re

    rec = load_recorded()
    gain = paired_gain(rec.results).set_index("setting")
    rows = {"1 (25 %)": "25 % labels", "2 (50 %)": "50 % labels", "4 (100 %)": "100 % labels",
            "pooled (9 pairs; the fractions share seeds)": "pooled"}
    for label, setting in rows.items():
        line = next(line for line in rec.about.splitlines() if line.startswith(f"| {label} |"))
        numbers = [float(x.replace("−", "-")) for x in re.findall(r"[−+-]?\d+\.\d{3}", line)]
        g = gain.loc[setting]
        expected = [g["mean"], g["ci_low"], g["ci_high"], g["smallest_detectable"]]
        assert numbers[-4:] == pytest.approx(expected, abs=5e-4), (label, numbers, expected)
