#!/usr/bin/env bash
# The label-efficiency experiment at the paper's feature size on one lent GPU machine (issue #14, item 1), in one
# call under BUDGET_S (default 540 s, so `run` with timeout_s=600 leaves a margin). Each part has its own time limit;
# every part is resumable, so the same command run again reuses what finished (pretraining resumes from its last
# checkpoint, the sweep skips runs that finished with the same parameters and encoder).
#   1. the cohort of `make experiment` (4 + 3 labeled phantoms at 6 mm, 96 unlabeled) in runs/exp/cohort, unless it
#      is there already (carry it: 16 MB)
#   2. pretraining at feature 48 (beside the scratch half of the sweep): 32^3 sub-volumes, 16 views per step (batch 4 x 2 crops x 2 views), 1,000 steps,
#      lr 5e-4, bf16, fused window attention                                    -> runs/exp/gpu48/ssl
#   3. the sweep: 1 / 2 / 4 labeled phantoms x scratch / SSL x seeds 0-2, notebook 03's steps at feature 48
#      (ci/params/label_efficiency/gpu48_03_finetune_btcv.yml: 300 steps, bf16) with `label_efficiency --engine
#      library` (no Jupyter there), one process per init and seed side by side on the GPU: the 3 from scratch start
#      beside the pretraining, the 3 from its encoder after it; then one call collects the 18 runs
#                                                                               -> runs/exp/gpu48/label_efficiency
#   4. the probe of that encoder on the GPU: organ probe, rotation accuracy, contrastive retrieval -> probe.csv
# Then the results are copied flat into OUT_DIR (at most 8 files come back from a device call): results.csv,
# summary.csv, dice_vs_fraction.png, probe.csv, pretraining metrics.csv and gpu_label_efficiency.log.
#   bash ci/gpu_label_efficiency.sh [OUT_DIR]          (default ./runs/gpu_label_efficiency)
#   DRY_RUN=1 bash ci/gpu_label_efficiency.sh /tmp/x   (the same steps on a CPU at the smallest sizes: a small cohort,
#                                                       feature 12, 2 steps, 1 labeled fraction, 1 seed; plumbing only)
# The machine has PyTorch but not MONAI: put wheels of monai, nibabel and pydicom in .whl/ first (see docs/measured.md,
# "GPU checks"); they are installed next to the machine's torch. The parts need no Jupyter.
set -u
name=gpu_label_efficiency
source ci/gpu_common.sh "$@"  # sets out, dry, budget, py; logs to $out/$name.log
[ "$dry" = 1 ] || nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
$py -c "import torch, monai, nibabel; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'monai', monai.__version__)" \
  || { echo "import check failed: install the missing package (see above) and rerun"; exit 1; }

exp=runs/exp/gpu48
cohort=runs/exp/cohort
params=ci/params/label_efficiency/gpu48_03_finetune_btcv.yml
cohort_args=(--n-phantoms 7 --n-validation 3 --n-unlabeled 97 --spacing "[6,6,6]" --n-msd 2 --include-real false)
pre=(--roi-size 32 --feature-size 48 --batch-size 4 --num-samples 2 --max-steps 1000 --warmup-steps 50 --lr 5e-4
     --device cuda --precision bf16 --sdpa-attention --checkpoint-every 250)
fractions="[0.25, 0.5, 1.0]"
seeds=(0 1 2)
probe=(--per-organ 4 --device cuda)
if [ "$dry" = 1 ]; then  # the same steps at the smallest sizes on the CPU: a plumbing check, not a measurement
  exp="$out/exp"
  cohort="$out/cohort"
  cohort_args=(--n-phantoms 3 --n-validation 1 --n-unlabeled 1 --spacing "[9,9,9]" --n-msd 2 --include-real false)
  pre=(--roi-size 32 --feature-size 12 --batch-size 2 --num-samples 1 --max-steps 2 --warmup-steps 1 --lr 5e-4
       --device cpu --checkpoint-every 1)
  fractions="[1.0]"
  seeds=(0)
  probe=(--per-organ 1 --device cpu)
  export SWINUNETR_RUNS_DIR="$out/runs"
fi
mkdir -p "$exp"
# the fine-tuning parameters: the committed file, with the cohort's manifest (and, dry, the smallest sizes)
$py - "$params" "$cohort/finetune.json" "$exp/finetune_params.yml" "$dry" <<'EOF'
import sys, yaml
params = yaml.safe_load(open(sys.argv[1]))
params["data_manifest"] = sys.argv[2]
if sys.argv[4] == "1":
    params.update(feature_size=12, max_steps=2, val_interval=2, warmup_steps=1, device="cpu", precision="fp32")
open(sys.argv[3], "w").write(yaml.safe_dump(params))
EOF

echo "== cohort $cohort (limit $(limit 120) s)"
[ -f "$cohort/finetune.json" ] && [ -f "$cohort/pretrain.json" ] && echo "cohort: reused" || {
  timeout "$(limit 120)" $py -m swinunetr_lib.data demo-cohort --out-dir "$cohort" "${cohort_args[@]}"
  echo "cohort: rc=$?"; }

le=($py -m swinunetr_lib.experiments.label_efficiency --params "$exp/finetune_params.yml" --fractions "$fractions" --engine library
    --pretrained "$exp/ssl/model_swinvit.pt" --output "$exp/label_efficiency")
pids=() names=()
sweep() {  # sweep INIT: one process per seed in the background, each under what is left of the budget minus 60 s
  local t=$(( budget - SECONDS - 60 ))
  (( t < 1 )) && t=1
  [ "${TIME_LIMITS:-on}" = off ] && t=86400  # the dry-run tests: a loaded machine must not time a run out
  for s in "${seeds[@]}"; do
    timeout "$t" "${le[@]}" --inits "[$1]" --seeds "[$s]" \
      > "$exp/sweep_$1_seed$s.log" 2>&1 &
    pids+=($!) names+=("$1_seed$s")
  done
}
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"  # 7 processes share the CPU cores (data loading, evaluation)
echo "== sweep from scratch, ${#seeds[@]} processes, beside the pretraining"
sweep scratch

echo "== pretraining (limit $(limit 200) s)"
[ -f "$exp/ssl/model_swinvit.pt" ] && echo "pretraining: reused" || {
  timeout "$(limit 200)" $py -m swinunetr_lib.pretrain --data-manifest "$cohort/pretrain.json" "${pre[@]}" \
    --progress false --run-dir "$exp/ssl" | tail -4
  echo "pretraining: rc=${PIPESTATUS[0]}"; }

echo "== sweep from the SSL encoder, ${#seeds[@]} processes"
sweep ssl
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"; echo "sweep ${names[$i]}: rc=$?"; grep -E "ok in|failed" "$exp/sweep_${names[$i]}.log"
done
all_seeds=$(IFS=,; echo "[${seeds[*]}]")
echo "== collecting (limit $(limit 40) s)"
timeout "$(limit 40)" "${le[@]}" --inits "[scratch, ssl]" --seeds "$all_seeds"  # finished runs are reused
echo "sweep: rc=$?"

echo "== probe (limit $(limit 90) s)"
timeout "$(limit 90)" $py -m swinunetr_lib.experiments.probe --checkpoint "$exp/ssl/checkpoints/last.pt" \
  --manifest "$cohort/finetune.json" "${probe[@]}" --csv "$exp/probe.csv"
echo "probe: rc=$?"

for f in "$exp/label_efficiency/results.csv" "$exp/label_efficiency/summary.csv" \
         "$exp/label_efficiency/dice_vs_fraction.png" "$exp/probe.csv" "$exp/ssl/metrics.csv"; do
  [ -f "$f" ] && cp "$f" "$out/" || echo "missing: $f"
done
echo "total ${SECONDS} s"; ls "$out"
