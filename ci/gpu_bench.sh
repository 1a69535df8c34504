#!/usr/bin/env bash
# GPU throughput at the paper's size (issue #16): pretraining, fine-tuning and inference, side by side.
# One call on a lent GPU machine (one H200), all parts under their own time limit and the whole under
# BUDGET_S (default 540 s, so `run` with timeout_s=600 leaves a margin):
#   1. the CUDA tests: SDPA window attention (memory-efficient kernel, gradients, memory) and resume on a GPU;
#   2. bench ssl      96^3, feature 48, batch 4 (x 2 views), bf16   goal >= 45 sub-volumes/s
#   3. bench finetune 96^3, feature 48, batch 4, 14 classes, bf16   goal >= 50 volumes/s
#   4. bench infer    320x320x192, ROI 96^3, overlap 0.5, Gaussian  goal <= 0.5 s/volume, Dice(bf16, fp32) >= 0.99
#                     (weights first fitted for 300 steps to the synthetic volume's label bands: random weights
#                     give near-tied logits and a noise label map, where bf16 flips labels without meaning)
# Each benchmark times MONAI's plain eager model ("monai_eager"), with --ablation our eager options added
# one at a time, and last our path ("ours": bf16, SDPA window attention, channels-last, regional
# torch.compile; inference also 12 windows per call); JSON per benchmark lands in OUT_DIR (rewritten
# after every variant, so a time limit still leaves the finished ones), the printed tables and a
# summary in OUT_DIR/gpu_bench.log.
#   bash ci/gpu_bench.sh [OUT_DIR]        (default ./runs/gpu_bench)
#   DRY_RUN=1 bash ci/gpu_bench.sh /tmp/x (the same flags on a CPU at the smallest sizes, 1 step, no ablation,
#                                          compile traced with the "eager" backend, tests only collected)
# Without network access, put wheels of the pure-Python dependencies (monai, einops, nibabel, pydicom, and
# pytest, pluggy, iniconfig, packaging, pygments) in .whl/ first; they are installed next to the machine's torch.
set -u
name=gpu_bench
source ci/gpu_common.sh "$@"  # sets out, dry, budget, py; logs to $out/$name.log
[ "$dry" = 1 ] || nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
$py -c "import torch, monai; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'monai', monai.__version__)"
$py -c "import swinunetr_lib.bench, swinunetr_lib.bench.finetune, swinunetr_lib.bench.infer, swinunetr_lib.finetune" \
  || echo "import check failed: install the missing package (see above) and rerun"

tests=(tests/test_window_attention.py tests/test_train.py -k "cuda or sdpa or aligned")
[ "$dry" = 1 ] && tests+=(--collect-only)
timeout "$(limit 60)" $py -m pytest -q -p no:cacheprovider "${tests[@]}" 2>&1 | tail -5
echo "cuda tests: rc=${PIPESTATUS[0]}"

ours=(--precision bf16 --sdpa-attention --channels-last --compile --ablation)
size=(--device cuda --feature-size 48 --roi-size 96)
ssl=(--batch-size 4 --steps 15 --warmup 3 --reference-repeats 2)
ft=(--batch-size 4 --steps 15 --warmup 3)
inf=(--volume-size 320,320,192 --sw-batch-size 12 --steps 2 --warmup 1 --fit-steps 300)
if [ "$dry" = 1 ]; then  # the same flags at the smallest sizes on the CPU, one variant each besides monai_eager,
  # compile only traced (backend "eager"), no warm-up step: a plumbing check, not a measurement
  ours=(--precision auto --sdpa-attention --channels-last --compile --compile-backend eager --ablation false)
  size=(--device cpu --feature-size 12 --steps 1 --warmup 0)
  ssl=(--roi-size 32 --batch-size 1 --reference-repeats 1)
  ft=(--roi-size 64 --batch-size 1 --volume-size 64,64,64 --loader-repeats 1)
  inf=(--roi-size 64 --volume-size 64,64,64 --sw-batch-size 2 --fit-steps 1)
fi
bench() {  # bench NAME SECONDS [flags...]
  local name=$1 seconds; seconds=$(limit "$2"); shift 2
  echo "== bench $name (limit ${seconds} s)"
  timeout "$seconds" $py -m swinunetr_lib.bench "$name" "${size[@]}" "${ours[@]}" "$@" --json "$out/$name.json"
  echo "bench $name: rc=$?"
}
bench ssl 150 "${ssl[@]}"
bench finetune 140 "${ft[@]}"
bench infer 160 "${inf[@]}"
$py - "$out" <<'EOF'
import json, pathlib, sys
for name in ("ssl", "finetune", "infer"):
    p = pathlib.Path(sys.argv[1]) / f"{name}.json"
    if not p.is_file():
        print(f"summary {name}: no result"); continue
    r = json.loads(p.read_text())
    runs = {k: f"{v.get('seconds_per_volume', v.get('step_s', 0)):.4f}s x{v.get('speedup_vs_monai_eager', 1):.2f}"
            for k, v in r["runs"].items()}
    g = r.get("goal", {})
    print(f"summary {name}: complete={r['complete']} {g.get('metric')}={r.get(g.get('metric'))} goal {g.get('target')}"
          f" met={g.get('met')} dice={r.get('dice_vs_fp32')} runs={runs}")
EOF
echo "total ${SECONDS} s"; ls "$out"
