#!/usr/bin/env bash
# GPU throughput at the paper's size (issues #16, #29): pretraining, fine-tuning and inference, side by side. One
# call on a lent GPU machine, the whole under BUDGET_S (default 540 s, so `run` with timeout_s=600 leaves a margin):
#   1. bench ssl      96^3, feature 48, batch 4 (x 2 views), bf16   goal >= 45 sub-volumes/s
#   2. bench finetune 96^3, feature 48, batch 4, 14 classes, bf16   goal >= 50 volumes/s
#   3. bench infer    320x320x192, ROI 96^3, overlap 0.5, Gaussian  goal <= 0.5 s/volume, Dice(bf16, fp32) >= 0.99
#                     (weights first fitted for 300 steps to the synthetic volume's label bands; the goal counts only
#                     after a trained fit)
#   4. the CUDA-only tests (~10 s): the SDPA kernel with the bias, cuDNN autotuning, resume on a GPU.
# Each benchmark runs, in this order, MONAI's plain eager model ("monai_eager"; inference also "monai_flash", MONAI's
# own inference attention), then "ours" (the headline: bf16, SDPA window attention, regional torch.compile;
# inference also 12 windows per call; no channels-last: slower on the H200), then the ablation rows (our eager
# options one at a time), skipped when the time left would not hold them. One line per variant as it starts and
# ends (with its compilation time); a failing variant is recorded with its error and the next one runs; the JSON is
# rewritten after every variant (ssl.json, finetune.json, infer.json in OUT_DIR), the tables and a summary line per
# benchmark go to OUT_DIR/gpu_bench.log. Time limits follow the time left: each benchmark gets at most its cap and
# leaves what the later steps need.
#   bash ci/gpu_bench.sh [OUT_DIR]        (default ./runs/gpu_bench)
#   DRY_RUN=1 bash ci/gpu_bench.sh /tmp/x (every step on a CPU at the smallest sizes: 1 step, compile with the
#                                          "aot_eager" backend (forward and backward traced), tests collected only)
# The image has torch but not MONAI, nibabel or pydicom, and no network: `make gpu-wheels` first, and carry `.whl`.
set -u
name=gpu_bench
source ci/gpu_common.sh "$@"  # sets out, dry, budget, py; logs to $out/$name.log; defines limit, step, preflight
preflight
step "import check" "$(limit 60)" "$py" -c "import swinunetr_lib.bench.ssl, swinunetr_lib.bench.finetune, \
swinunetr_lib.bench.infer" || { echo "import check failed: nothing run"; exit 1; }

ours=(--precision bf16 --sdpa-attention --compile --ablation)
size=(--device cuda --feature-size 48 --roi-size 96)
ssl=(--batch-size 4 --steps 15 --warmup 3 --reference-repeats 2)
ft=(--batch-size 4 --steps 15 --warmup 3)
inf=(--volume-size 320,320,192 --sw-batch-size 12 --steps 3 --warmup 1 --fit-steps 300)
tests=(tests/test_window_attention.py tests/test_train.py -k cuda)  # the CUDA-only tests; the CPU ones run in CI
if [ "$dry" = 1 ]; then  # the same steps at the smallest sizes on the CPU: a plumbing check, not a measurement
  ours=(--precision auto --sdpa-attention --compile --compile-backend aot_eager --ablation)
  size=(--device cpu --feature-size 12 --steps 1 --warmup 0)
  ssl=(--roi-size 32 --batch-size 1 --reference-repeats 1)
  ft=(--roi-size 64 --batch-size 1 --volume-size 64,64,64 --loader-repeats 1)
  inf=(--roi-size 64 --volume-size 64,64,64 --sw-batch-size 4 --fit-steps 2)
  tests+=(--collect-only)
fi
bench() {  # bench NAME CAP RESERVE [flags...]: the benchmark under its limit; it skips ablation rows by itself
  local what=$1 seconds; seconds=$(limit "$2" "$3"); shift 3
  step "bench $what" "$seconds" "$py" -m swinunetr_lib.bench "$what" "${size[@]}" "${ours[@]}" "$@" \
    --budget-s $(( seconds > 30 ? seconds - 20 : seconds )) --json "$out/$what.json"
}
bench ssl 190 275 "${ssl[@]}"       # reserve: finetune 130 + infer 120 + tests 25
bench finetune 180 145 "${ft[@]}"   # reserve: infer 120 + tests 25
bench infer 180 25 "${inf[@]}"
step "cuda tests" "$(limit 60)" "$py" -m pytest -q -p no:cacheprovider "${tests[@]}"
"$py" - "$out" <<'EOF'
import json, pathlib, sys
for name in ("ssl", "finetune", "infer"):
    p = pathlib.Path(sys.argv[1]) / f"{name}.json"
    if not p.is_file():
        print(f"summary {name}: no result"); continue
    r = json.loads(p.read_text())
    runs = {k: (f"{v.get('seconds_per_volume', v.get('step_s', 0)):.4f}s x{v.get('speedup_vs_monai_eager', 1):.2f}"
                if "error" not in v and "skipped" not in v else ("error" if "error" in v else "skipped"))
            for k, v in r["runs"].items()}
    g = r.get("goal", {})
    print(f"summary {name}: complete={r['complete']} headline={r.get('headline')} {g.get('metric')}="
          f"{r.get(g.get('metric'))} goal {g.get('target')} met={g.get('met')} dice={r.get('dice_vs_fp32')} "
          f"sdpa={r.get('sdpa_kernel')} tf32={r.get('tf32_matmul')} runs={runs}")
EOF
echo "total ${SECONDS} s"; ls "$out"
