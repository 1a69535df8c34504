#!/usr/bin/env bash
# GPU throughput check for self-supervised pretraining (issue: SSL, goal >= 45 sub-volumes/s on an H200).
# One short script for a lent GPU machine: the paper's size (96^3, feature 48, batch 4, bf16), eager and
# torch.compile'd, each under its own time limit so one slow compile cannot eat the whole budget.
#   bash ci/gpu_bench.sh [OUT_DIR]       (JSON results land in OUT_DIR, default ./runs/gpu_bench)
# Without network access, put wheels of the pure-Python dependencies (monai, einops, nibabel, pydicom) in
# .whl/ first; they are installed next to the machine's own torch.
set -u
out="${1:-${OUT:-runs/gpu_bench}}"
mkdir -p "$out"
if [ -d .whl ] && ! python -c "import monai" 2>/dev/null; then
  pip install --quiet --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
common=(ssl --roi-size 96 --feature-size 48 --batch-size 4 --precision bf16 --device cuda --steps 15 --warmup 5)
timeout 180 python -m swinunetr_lib.bench "${common[@]}" --json "$out/eager.json"
echo "eager: rc=$?"
timeout 360 python -m swinunetr_lib.bench "${common[@]}" --compile --json "$out/compile.json"
echo "compile: rc=$?"
