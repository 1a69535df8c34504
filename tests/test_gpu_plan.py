"""The GPU plan's decisions (swinunetr_lib.experiments.gpu_plan): steps from a timing run's metrics.csv, the gate
on the dense probe's verdict, the paired gain; the script itself: tests/test_bench.py::test_gpu_plan_script_dry_run."""
import json

import pandas as pd
import pytest

from swinunetr_lib.experiments.dense_probe import decide
from swinunetr_lib.experiments.gpu_plan import main, seconds_per_step, steps_that_fit


def _metrics(path, seconds):
    pd.DataFrame({"step": range(1, len(seconds) + 1), "loss": 1.0, "sec_per_step": seconds}).to_csv(path, index=False)
    return path


def test_seconds_per_step_is_the_median_after_the_warm_up_over_every_file(tmp_path):
    a = _metrics(tmp_path / "a.csv", [30.0, 9.0, 1.0, 2.0, 3.0])   # steps 1-2: compilation, warm-up
    _metrics(tmp_path / "b.csv", [40.0, 8.0, 4.0, 5.0, 100.0])
    assert seconds_per_step([a], skip_steps=2) == 2.0
    assert seconds_per_step([tmp_path / "*.csv"], skip_steps=2) == 3.5  # median of 1, 2, 3, 4, 5, 100
    with pytest.raises(ValueError, match="no step after the first 5"):
        seconds_per_step([a], skip_steps=5)
    with pytest.raises(FileNotFoundError, match="missing.csv: no metrics.csv"):
        seconds_per_step([tmp_path / "missing.csv"])


def test_steps_that_fit_clamps_and_the_minimum_wins():
    assert steps_that_fit(100.0, 0.3) == 333
    assert steps_that_fit(100.0, 0.3, minimum=1000) == 1000  # >= 1,000 steps even when they do not fit
    assert steps_that_fit(-5.0, 0.3, minimum=2) == 2 and steps_that_fit(1e6, 0.1, maximum=5000) == 5000
    with pytest.raises(ValueError, match="seconds per step 0"):
        steps_that_fit(10.0, 0.0)


def test_steps_cli_prints_the_count_alone(tmp_path, capsys):
    a = _metrics(tmp_path / "metrics.csv", [10.0, 0.5, 0.5, 0.5])
    assert main(["steps", "--metrics", str(a), "--seconds", "100", "--skip-steps", "1", "--min", "10"]) == 0
    out, err = capsys.readouterr()
    assert out == "200\n" and "0.5000 s/step after 1 warm-up steps: 200 steps" in err


@pytest.mark.parametrize("ssl, helps", [([0.30, 0.31, 0.29, 0.30], True), ([0.30, 0.16, 0.29, 0.30], False)])
def test_gate_follows_the_rule_fixed_before_the_run(tmp_path, capsys, ssl, helps):
    import dataclasses

    verdict = decide(ssl, [[0.20, 0.22, 0.21]] * 4)
    path = tmp_path / "verdict.json"
    path.write_text(json.dumps(dataclasses.asdict(verdict)))
    assert main(["gate", "--verdict", str(path)]) == (0 if helps else 1)
    assert capsys.readouterr().out.startswith("rule: SSL features help" if helps else "rule: not detected")
    assert main(["gate", "--verdict", str(tmp_path / "none.json")]) == 2  # an error, not a "no"


def test_gain_cli_writes_the_paired_interval(tmp_path):
    results = pd.DataFrame({"init": ["scratch", "ssl"] * 3, "labeled_fraction": 0.25, "seed": [0, 0, 1, 1, 2, 2],
                            "n_train": 1, "mean_dice": [0.40, 0.45, 0.50, 0.52, 0.30, 0.36]})
    results.to_csv(tmp_path / "results.csv", index=False)
    assert main(["gain", "--results", str(tmp_path / "results.csv"), "--csv", str(tmp_path / "gain.csv")]) == 0
    gain = pd.read_csv(tmp_path / "gain.csv")
    assert gain["count"].tolist() == [3, 3] and gain["mean"].iloc[0] == pytest.approx(0.0433, abs=1e-4)
    assert gain["ci_low"].iloc[0] < gain["mean"].iloc[0] < gain["ci_high"].iloc[0]


def _probe_summary(path, supervised):
    """dense_probe.summarize's table, as its --summary writes it, for 2 labeled cases: random seeds 0-1 at 0.20 /
    0.25, SSL at 0.22, and each supervised encoder (name -> its Dice per labeled case)."""
    from swinunetr_lib.experiments.dense_probe import summarize

    rows = [("random", s, c, d) for c in (0, 1) for s, d in ((0, 0.20), (1, 0.25))] + \
        [("ssl", 0, c, 0.22) for c in (0, 1)] + \
        [(f"supervised {n}", -1, c, d) for n, dice in supervised.items() for c, d in enumerate(dice)]
    table = pd.DataFrame([{"encoder": e, "source": "encoder", "seed": s, "labeled_case": c, "held_out_case": "mean",
                           "organ": "mean", "dice": d} for e, s, c, d in rows])
    summarize(table)[0].to_csv(path, index=False)
    return path


@pytest.mark.parametrize("supervised, line", [
    ({"ft": [0.40, 0.35]}, "positive control: passed: supervised ft above the random band's max on 2/2 labeled "
                           "cases (mean Dice 0.375, band max 0.250)"),
    ({"ft": [0.40, 0.24]}, "positive control: FAILED (the probe does not tell a supervised encoder from random "
                           "init): supervised ft above the random band's max on 1/2 labeled cases"),
    ({}, "positive control: not run (no supervised encoder in "),
])
def test_control_says_whether_the_supervised_encoder_clears_the_random_band(tmp_path, capsys, supervised, line):
    import dataclasses

    summary = _probe_summary(tmp_path / "summary.csv", supervised)
    verdict = tmp_path / "verdict.json"
    verdict.write_text(json.dumps(dataclasses.asdict(decide([0.30, 0.31, 0.29, 0.30], [[0.20, 0.22, 0.21]] * 4))))
    assert main(["control", "--summary", str(summary), "--verdict", str(verdict)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("rule: SSL features help") and out[1].startswith(line)


def test_control_names_a_missing_or_foreign_summary(tmp_path, capsys):
    assert main(["control", "--summary", str(tmp_path / "none.csv")]) == 2
    assert "none.csv: no dense-probe summary" in capsys.readouterr().err
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "other.csv", index=False)
    assert main(["control", "--summary", str(tmp_path / "other.csv")]) == 2
    assert "other.csv: no source / random_max columns" in capsys.readouterr().err
