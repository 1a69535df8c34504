"""The benchmarks (ssl, finetune, infer) run end to end at tiny size on a CPU and report consistent numbers;
ci/gpu_bench.sh runs all of them in DRY_RUN mode, ci/gpu_plan.sh the GPU plan's steps."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from swinunetr_lib.bench.common import run_variants, variants
from swinunetr_lib.bench.finetune import FinetuneBenchConfig, bench_finetune
from swinunetr_lib.bench.infer import InferBenchConfig, label_agreement
from swinunetr_lib.bench.ssl import BenchConfig, bench_ssl, main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--feature-size", "12", "--device", "cpu", "--steps", "1", "--warmup", "0"]


def _check_common(r, time_key, split, runs=("monai_eager", "ours")):
    assert r["complete"] is True and list(r["runs"]) == list(runs)
    base, ours = r["runs"]["monai_eager"], r["runs"]["ours"]
    assert r["speedup_vs_monai_eager"] > 0
    assert r["speedup_vs_monai_eager"] == pytest.approx(base[time_key] / ours[time_key])
    assert base["speedup_vs_monai_eager"] == 1.0 and base["options"]["compile"] is False
    assert set(r["split_s"]) == set(split) and all(v >= 0 for v in r["split_s"].values())
    assert sum(r["split_share"].values()) == pytest.approx(1.0, abs=1e-6)
    assert r["peak_memory_gib"] > 0 and ours["peak_memory_gib"] > 0
    assert r["goal"]["at_paper_size"] is False and r["goal"]["met"] is None


def test_bench_ssl_cli_writes_consistent_numbers(tmp_path, capsys):
    out = tmp_path / "ssl.json"
    assert main(["ssl", "--roi-size", "32", "--batch-size", "1", "--reference-repeats", "1", "--sdpa-attention",
                 *TINY, "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["benchmark"] == "ssl" and r["config"]["sdpa_attention"] is True
    _check_common(r, "step_s", {"data", "augmentation", "model"})
    assert r["runs"]["ours"]["options"] == {"precision": "float32", "sdpa_attention": True, "channels_last": False,
                                            "grad_checkpoint": False, "compile": False}
    assert r["runs"]["monai_eager"]["options"]["sdpa_attention"] is False
    assert r["subvolumes_per_s"] == pytest.approx(1 / r["step_s"])
    assert 0 < r["augment_share"] < 1
    assert r["reference_over_ours"] == pytest.approx(r["reference_augment_s"] / r["augment_alone_s"])
    # same initial weights and batch: SDPA attention computes the same loss as MONAI's attention
    assert r["final_loss"] > 0 and r["final_loss"] == pytest.approx(r["runs"]["monai_eager"]["final_loss"], rel=1e-4)
    printed = capsys.readouterr().out
    assert "monai_eager [float32]" in printed and "goal: subvolumes_per_s >= 45.0" in printed


def test_bench_finetune_channels_last_and_loader_augmentation(tmp_path):
    out = tmp_path / "finetune.json"
    assert main(["finetune", "--roi-size", "64", "--batch-size", "1", "--channels-last", "--volume-size", "64,64,64",
                 "--loader-repeats", "1", *TINY, "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    _check_common(r, "step_s", {"data", "model"})
    assert r["volumes_per_s"] == pytest.approx(1 / r["step_s"]) and r["runs"]["ours"]["options"]["channels_last"]
    assert r["final_loss"] == pytest.approx(r["runs"]["monai_eager"]["final_loss"], rel=1e-4)  # same function
    assert r["loader_augment_s"] > 0 and r["loader_workers_needed"] >= 1


def test_bench_infer_fp32_agrees_with_itself(tmp_path, capsys):
    out = tmp_path / "infer.json"
    assert main(["infer", "--roi-size", "64", "--volume-size", "64,64,64", "--precision", "fp32", "--fit-steps", "1",
                 *TINY, "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    # MONAI's own inference attention (use_flash_attention) is the second baseline, between the two
    _check_common(r, "seconds_per_volume", {"data", "model", "window_blending"}, ("monai_eager", "monai_flash", "ours"))
    assert r["runs"]["monai_flash"]["speedup_vs_monai_eager"] > 0
    assert r["windows"] == 1 and r["runs"]["monai_eager"]["options"]["sw_batch_size"] == 4
    assert r["dice_vs_fp32"] == 1.0 and r["voxel_agreement"] == 1.0 and r["dice_min_class"] == 1.0
    assert r["goal"]["dice_target"] == ">= 0.99" and r["fit_loss"] > 0 and 0 <= r["dice_vs_truth"] <= 1
    assert "Dice vs fp32 1.0000" in capsys.readouterr().out


def test_label_agreement():
    a = torch.tensor([0, 0, 1, 1, 2, 2])
    assert label_agreement(a, a, 4) == {"dice": 1.0, "dice_min_class": 1.0, "voxel_agreement": 1.0,
                                        "classes_present": 3}
    r = label_agreement(a, torch.tensor([0, 0, 1, 2, 2, 2]), 4)
    assert r["dice"] == pytest.approx((1 + 2 / 3 + 4 / 5) / 3) and r["voxel_agreement"] == pytest.approx(5 / 6)
    assert r["dice_min_class"] == pytest.approx(2 / 3)


def test_variants_add_eager_options_one_at_a_time():
    ours = {"precision": torch.bfloat16, "sw_batch_size": 12, "sdpa_attention": True, "channels_last": True,
            "compile": True}
    base = {"precision": torch.float32, "sw_batch_size": 4, "sdpa_attention": False, "channels_last": False,
            "compile": False}
    plan = variants(ours, base, InferBenchConfig(ablation=True))
    # the headline (ours) right after the baseline, before the rows a time limit may cut
    assert [n for n, _ in plan] == ["monai_eager", "ours", "+bfloat16", "+sw_batch_12", "+sdpa", "+channels_last"]
    assert plan[-1][1] == {**ours, "compile": False} and plan[0][1] == base and plan[1][1] == ours
    assert [n for n, _ in variants(ours, base, InferBenchConfig(baseline=False))] == ["ours"]
    flash = (("monai_flash", {**base, "monai_flash_attention": True}),)
    assert [n for n, _ in variants(ours, base, InferBenchConfig(), flash)] == ["monai_eager", "monai_flash", "ours"]


def test_run_variants_records_an_error_runs_the_next_and_skips_what_the_budget_cannot_hold(capsys, monkeypatch):
    """A failing variant costs its row only; the headline is summarised as soon as ours has a time; an ablation
    row longer than the budget left is skipped; the JSON callback sees every variant. (A fake clock: each
    variant "takes" its seconds.)"""
    from swinunetr_lib.bench import common

    now = [0.0]
    monkeypatch.setattr(common.time, "perf_counter", lambda: now[0])

    def measure(opts):
        if opts["fail"]:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore text")
        now[0] += opts["seconds"]
        return {"step_s": opts["seconds"] + 0.1, "first_step_s": 5.0}

    emitted, summaries = [], []
    plan = [("monai_eager", {"fail": False, "seconds": 0.4}), ("ours", {"fail": False, "seconds": 0.0}),
            ("+a", {"fail": True, "seconds": 0.0}), ("+b", {"fail": False, "seconds": 0.4}),
            ("+c", {"fail": False, "seconds": 0.0})]
    result = {"runs": {}}
    run_variants(result, plan, torch.device("cpu"), measure, lambda r: emitted.append(list(r["runs"])), "step_s",
                 lambda r: summaries.append(r["runs"]["ours"]["step_s"]), budget_s=1.0)
    runs = result["runs"]
    assert list(runs) == ["monai_eager", "ours", "+a", "+b", "+c"] and len(emitted) == 5
    assert runs["+a"]["error"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert runs["ours"]["speedup_vs_monai_eager"] == pytest.approx(0.5 / 0.1) and summaries[0] == 0.1
    # +b ran (0.6 s left >= monai_eager's 0.4 s); +c did not (0.2 s left)
    assert "step_s" in runs["+b"] and runs["+c"]["skipped"].startswith("time budget: 0 s left")
    out = capsys.readouterr().out
    assert "variant ours: start" in out and "variant +a: FAILED after" in out and "variant +c: skipped" in out
    assert "variant monai_eager: done in 0.4 s: 500.0 ms/step, first step 5.0 s (compilation ~4.5 s)" in out


@pytest.mark.parametrize("bench, cfg, match", [
    (bench_ssl, BenchConfig(roi_size=48, feature_size=12, device="cpu"), "positive multiple of 32"),
    (bench_finetune, FinetuneBenchConfig(roi_size=32, feature_size=12, device="cpu"), "at least 64"),
    (bench_ssl, BenchConfig(roi_size=32, feature_size=12, device="cpu", warmup=-1), "warmup"),
])
def test_bench_refuses_bad_options(bench, cfg, match):
    with pytest.raises(ValueError, match=match):
        bench(cfg)


def _dry_env(**extra):
    """The GPU scripts on this CPU: this Python, every step's time limit lifted (a test passes by work done,
    never by the speed of the machine)."""
    import sys

    return {**os.environ, "DRY_RUN": "1", "PYTHONPATH": str(ROOT), "TIME_LIMITS": "off", "PYTHON": sys.executable,
            **extra}


@pytest.mark.parametrize("script", ["ci/gpu_bench.sh", "ci/gpu_plan.sh", "ci/gpu_common.sh"])
def test_gpu_scripts_parse(script):
    """bash reads every line of the GPU scripts (their dry runs, marked gpu_dry, run outside make test)."""
    proc = subprocess.run(["bash", "-n", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", ["ci/gpu_bench.sh", "ci/gpu_plan.sh"])
def test_gpu_scripts_stop_at_once_with_one_line_without_torch_and_monai(tmp_path, script):
    """A Python without torch / MONAI (or without CUDA when not dry): one line, exit 1, nothing else run."""
    env = _dry_env(PYTHON="/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3")
    proc = subprocess.run(["bash", script, str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    log = next(tmp_path.glob("*.log")).read_text()
    assert proc.returncode == 1 and "preflight: No module named" in log and "preflight failed: nothing run" in log
    assert "== " not in log  # no step started


@pytest.mark.slow
@pytest.mark.gpu_dry
def test_gpu_bench_script_dry_run(tmp_path):
    """The whole GPU benchmark script on a CPU at the smallest sizes: preflight, import check, the three benchmarks
    (monai_eager, ours compiled with aot_eager, an ablation row; inference also MONAI's inference attention), the
    CUDA tests collected, the summary."""
    proc = subprocess.run(["bash", "ci/gpu_bench.sh", str(tmp_path)], cwd=ROOT, env=_dry_env(), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (tmp_path / "gpu_bench.log").read_text()
    assert "preflight: python" in log and "import check: rc=0" in log and "cuda tests: rc=0" in log
    assert log.index("bench infer: rc=0") < log.index("== cuda tests")  # the tests after the benchmarks
    for name in ("ssl", "finetune", "infer"):
        assert f"bench {name}: rc=0" in log, log[-3000:]
        r = json.loads((tmp_path / f"{name}.json").read_text())
        assert r["complete"] and r["headline"] and r["runs"]["ours"]["options"]["compile"] is True
        assert r["config"]["compile_backend"] == "aot_eager" and not r["runs"]["ours"]["options"]["channels_last"]
        first = ["monai_eager", "monai_flash"] if name == "infer" else ["monai_eager"]
        assert list(r["runs"]) == [*first, "ours", "+sdpa"]
        assert all("error" not in run and len(run["step_times_s"]) == 1 for run in r["runs"].values())
        assert "sdpa_kernel" in r and "tf32_matmul" in r and f"summary {name}: complete=True headline=True" in log
    assert "variant ours: done in" in log and "variant +sdpa: start" in log
    assert json.loads((tmp_path / "infer.json").read_text())["fit_loss"] is not None


@pytest.mark.slow
@pytest.mark.gpu_dry
def test_gpu_plan_script_dry_run(tmp_path):
    """The GPU plan on a CPU at the smallest sizes: call 1 (cohort, pretraining timing run, the steps chosen from it,
    pretraining, the supervised positive control's timing run and fine-tune, E1 with its verdict and the supervised
    model), call 2 whatever the verdict (timing sweep, steps chosen, the sweep of one seed pair, the paired gain);
    the log ends with the rule and the positive control; at most 8 files back, flat. Run again, it reuses every
    part."""
    import pandas as pd

    proc = subprocess.run(["bash", "ci/gpu_plan.sh", str(tmp_path)], cwd=ROOT, env=_dry_env(), capture_output=True,
                          text=True, timeout=1500)  # its dry run took 668 s on the 2 shared cores here
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (tmp_path / "gpu_plan.log").read_text()
    for part in ("cohort", "pretraining timing run (2 steps)", "pretraining (2 steps)",
                 "supervised timing run (2 steps)", "supervised fine-tune (2 steps)", "E1 dense probe",
                 "run scratch_seed0", "run ssl_seed0"):
        assert f"{part}: rc=0" in log, log[-3000:]
    assert log.index("supervised fine-tune (2 steps): rc=0") < log.index("== E1 dense probe")
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert set(verdict) == {"helps", "gain", "ci", "beats_every_seed", "text"} and "rule: " in log
    summary = pd.read_csv(tmp_path / "dense_probe_summary.csv")
    assert {"ssl", "random_min", "random_max", "atlas", "intensity", "supervised control",
            "supervised control above band max"} <= set(summary.columns)
    probe = pd.read_csv(tmp_path / "dense_probe.csv")  # the supervised model was read by the probe, every case
    assert sorted(probe.loc[probe.encoder == "supervised control", "labeled_case"].unique()) == \
        sorted(probe.loc[probe.encoder == "random", "labeled_case"].unique())
    lines = log.splitlines()  # the log's last lines: the rule, the positive control's result (run), the total
    end = next(i for i, x in enumerate(lines) if x.startswith("total "))
    assert lines[end - 2].startswith("rule: ") and lines[end - 1].startswith("positive control: "), lines[end - 3:]
    assert "supervised control above the random band's max on " in lines[end - 1]  # run, passed or FAILED
    results = pd.read_csv(tmp_path / "results.csv")
    assert sorted(zip(results["init"], results["seed"], strict=True)) == [("scratch", 0), ("ssl", 0)]
    assert results["steps"].eq(2).all() and results["mean_dice"].between(0, 1).all()
    assert pd.read_csv(tmp_path / "paired_gain.csv")["count"].tolist() == [1, 1]
    assert len(pd.read_csv(tmp_path / "metrics.csv")) == 2
    files = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert files == sorted(["gpu_plan.log", "metrics.csv", "dense_probe.csv", "dense_probe_summary.csv",
                            "verdict.json", "results.csv", "paired_gain.csv", "dice_vs_fraction.png"])
    proc = subprocess.run(["bash", "ci/gpu_plan.sh", str(tmp_path)], cwd=ROOT, env=_dry_env(), capture_output=True,
                          text=True, timeout=300)
    log = (tmp_path / "gpu_plan.log").read_text()
    assert proc.returncode == 0 and "cohort: reused" in log and "pretraining: reused" in log and "E1: reused" in log
    assert "== pretraining" not in log and "== supervised" not in log and "run ssl_seed0: rc=0" in log
    assert "positive control: " in log


def test_bench_data_reports_three_paths_and_the_cores_they_need(tmp_path, capsys):
    out = tmp_path / "data.json"
    assert main(["data", "--volume-size", "96,80,40", "--roi-size", "32", "--repeats", "1", "--fast-repeats", "3",
                 "--workdir", str(tmp_path / "work"), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["complete"] is True and list(r["paths"]) == ["nifti", "cache", "prepared"]
    for p in r["paths"].values():
        assert p["subvolumes_per_s"] == pytest.approx(2 / p["seconds_per_volume"])
        for rate in (25, 45):
            assert p[f"cores_for_{rate}"] == -(-rate // p["subvolumes_per_s"])  # ceil
    # the body crop removed the air and the table: the stored volume is smaller than the synthetic CT
    assert all(s <= v for s, v in zip(r["prepared_shape"], [96, 80, 40], strict=True))
    assert r["prepared_shape"][:2] != [96, 80]
    assert r["goal"]["at_paper_size"] is False and r["goal"]["met"] is None
    assert "goal: prepared subvolumes_per_s (one core) >= 45.0" in capsys.readouterr().out
