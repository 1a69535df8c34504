#!/usr/bin/env bash
# GPU throughput check for self-supervised pretraining (issue: SSL, goal >= 45 sub-volumes/s on an H200).
# One short script for a lent GPU machine, each part under its own time limit (all together < 600 s):
#   1. the CUDA tests: SDPA window attention (memory-efficient kernel, gradients, memory) and resume on a GPU;
#   2. the SSL benchmark at the paper's size (96^3, feature 48, batch 4, bf16): MONAI attention (baseline),
#      SDPA attention, SDPA attention + torch.compile.
#   bash ci/gpu_bench.sh [OUT_DIR]       (JSON results land in OUT_DIR, default ./runs/gpu_bench)
#   DRY_RUN=1 bash ci/gpu_bench.sh /tmp/x (the same plumbing on a CPU at 64^3, feature 12, without compile)
# Without network access, put wheels of the pure-Python dependencies (monai, einops, nibabel, pydicom, and
# pytest, pluggy, iniconfig, packaging, pygments) in .whl/ first; they are installed next to the machine's torch.
set -u
out="${1:-${OUT:-runs/gpu_bench}}"
mkdir -p "$out"
if [ -d .whl ] && ! python -c "import monai, pytest" 2>/dev/null; then
  pip install --quiet --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
timeout 90 python -m pytest -q -p no:cacheprovider tests/test_window_attention.py tests/test_train.py -k "cuda or sdpa or aligned" 2>&1 | tail -5
echo "sdpa test: rc=${PIPESTATUS[0]}"
common=(ssl --roi-size 96 --feature-size 48 --batch-size 4 --precision bf16 --device cuda --steps 15 --warmup 5
        --reference-repeats 2)
if [ "${DRY_RUN:-0}" = 1 ]; then  # plumbing check on a CPU: tiny size, no compile
  common=(ssl --roi-size 64 --feature-size 12 --batch-size 1 --device cpu --steps 1 --warmup 1 --reference-repeats 1)
fi
run() {  # run NAME SECONDS [extra bench flags...]
  local name=$1 seconds=$2; shift 2
  timeout "$seconds" python -m swinunetr_lib.bench "${common[@]}" "$@" --json "$out/$name.json"
  echo "$name: rc=$?"
}
run eager 110
run sdpa 110 --sdpa-attention
[ "${DRY_RUN:-0}" = 1 ] || run sdpa_compile 270 --sdpa-attention --compile
ls "$out"
