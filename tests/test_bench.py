"""The SSL benchmark runs end to end at tiny size and reports consistent numbers."""
import json

import pytest

from swinunetr_lib.bench import BenchConfig, bench_ssl, main


def test_bench_cli_writes_consistent_numbers(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["ssl", "--roi-size", "64", "--feature-size", "12", "--batch-size", "1", "--device", "cpu",
                 "--steps", "1", "--warmup", "0", "--reference-repeats", "1", "--sdpa-attention",
                 "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["sdpa_attention"] is True and r["compile"] is False and r["precision"] == "float32"
    assert r["subvolumes_per_s"] == pytest.approx(1 / r["step_s"])
    assert 0 < r["augment_share"] < 1 and r["reference_over_ours"] == pytest.approx(r["reference_augment_s"] / r["augment_s"])
    assert r["final_loss"] > 0
    assert "sub-volumes / s" in capsys.readouterr().out


def test_bench_refuses_roi_not_divisible_by_32():
    with pytest.raises(ValueError, match="positive multiple of 32"):
        bench_ssl(BenchConfig(roi_size=48, feature_size=12, device="cpu"))
