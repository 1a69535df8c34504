#!/usr/bin/env bash
# The GPU plan of issue #25 (item 6; issue #29 item 5): measure what pretraining buys with the dense probe first,
# and fine-tune only if the probe's rule says the features help. One lent GPU machine, one command:
#   bash ci/gpu_plan.sh [OUT_DIR]          call 1, then call 2 if call 1 passes the rule (BUDGET_S, default 540 s:
#                                          CALL1_S=300 for call 1, the rest for call 2)
#   CALLS=1 bash ci/gpu_plan.sh [OUT_DIR]  call 1 only;  CALLS=2: call 2 only (needs call 1's encoder and verdict)
# Call 1 (~5 min): the cohort of E1 (7 phantoms at 6 mm, variability 0.5: 4 labeled, 3 held out; 97 unlabeled for
#   pretraining), unless it is there (carry runs/exp/cohort_v05); pretraining at feature 12, 16 sub-volumes per step
#   (batch 8 x 2 crops) of 64^3, bf16, SDPA window attention, its steps scaled to the seconds per step a short timing
#   run measured after its warm-up; then E1's positive control: Swin UNETR fine-tuned from scratch at feature 12 on
#   the 4 labeled cases (python -m swinunetr_lib.finetune, its steps scaled the same way to the 60 s kept for it);
#   then E1, the dense probe (swinunetr_lib.experiments.dense_probe) of that encoder against 10 random-init seeds and
#   the supervised model (--supervised), with the intensity, intensity + coordinates and atlas baselines, and the
#   verdict of the rule fixed before the run -> verdict.json. Split of the 300 s: pretraining the rest (its timing
#   run included, 40 s for its start and export), supervised 60 s, E1 150 s. Without a supervised model (failed, or
#   no time left) E1 runs without it and the log says "positive control: not run". The log ends with the rule's
#   verdict and the positive control's result (passed / FAILED / not run).
# Call 2 (~4 min), only when verdict.json says "SSL features help": 8 paired seeds x scratch / SSL at 1 labeled case
#   (fraction 0.25 of 4), >= 1,000 steps each (ci/params/label_efficiency/gpu_plan_03_finetune_btcv.yml), all 16
#   runs side by side on the GPU (label_efficiency --engine library), their steps scaled to the seconds per step of a
#   short timing sweep of the same 16 processes; then the paired gain with its 95 % interval -> paired_gain.csv.
# Every part writes as it goes and is resumable: a rerun reuses the cohort, the chosen step counts, a finished
# pretraining or supervised fine-tune (an unfinished one resumes from its checkpoint), the probe's verdict and every
# finished run. At most 8 files come back, flat in OUT_DIR: gpu_plan.log, metrics.csv (pretraining), dense_probe.csv,
# dense_probe_summary.csv, verdict.json, results.csv, paired_gain.csv, dice_vs_fraction.png.
#   DRY_RUN=1 bash ci/gpu_plan.sh /tmp/x   (every step on a CPU at the smallest sizes, call 2 whatever the verdict)
# The image has torch but not MONAI, nibabel or pydicom, and no network: `make gpu-wheels` first, and carry `.whl`.
set -u
name=gpu_plan
source ci/gpu_common.sh "$@"  # sets out, dry, budget, py; logs to $out/$name.log; defines limit, step, preflight
preflight nibabel pandas yaml
calls="${CALLS:-1 2}"
call1_end=$(( ${CALL1_S:-300} ))  # seconds since the start by which call 1 should be done (call 2 has the rest)

exp=runs/exp/gpu_plan
cohort=runs/exp/cohort_v05
cohort_args=(--n-phantoms 7 --n-validation 3 --n-unlabeled 97 --spacing "[6,6,6]" --n-msd 2 --include-real false
             --variability 0.5)
pre=(--roi-size 64 --feature-size 12 --batch-size 8 --num-samples 2 --lr 1e-3 --device cuda --precision bf16
     --sdpa-attention --progress false)
timing_steps=8 warm=3 pre_min=100 pre_max=20000
probe=(--n-seeds 10 --source encoder --per-class 500 --max-iter 60)
e1_s=150                                # seconds kept for E1 (CPU readouts on the machine's cores)
sup=(--task demo_btcv --init scratch --feature-size 12 --roi-size "[64,32,32]" --spacing "[6,6,6]" --num-samples 2
     --lr 3e-3 --val-interval 0 --log-every 5 --device cuda --precision bf16 --sdpa-attention --progress false)
sup_s=60 sup_timing=20 sup_warm=5 sup_min=50 sup_max=5000  # seconds kept for E1's positive control (both runs)
ft_params=ci/params/label_efficiency/gpu_plan_03_finetune_btcv.yml
seeds=(0 1 2 3 4 5 6 7) ft_timing=30 ft_warm=10 ft_min=1000 ft_max=20000  # fit logs every 5th step
if [ "$dry" = 1 ]; then  # the same steps at the smallest sizes on the CPU: a plumbing check, not a measurement
  exp="$out/exp" cohort="$out/cohort"
  cohort_args=(--n-phantoms 3 --n-validation 1 --n-unlabeled 1 --spacing "[9,9,9]" --n-msd 2 --include-real false
               --variability 0.5)
  pre=(--roi-size 32 --feature-size 12 --batch-size 2 --num-samples 1 --lr 1e-3 --device cpu --progress false
       --num-workers 0)
  timing_steps=2 warm=1 pre_min=1 pre_max=2
  probe=(--n-seeds 2 --source encoder --per-class 20 --max-iter 2)
  seeds=(0) ft_timing=1 ft_warm=0 ft_min=1 ft_max=2
  sup=(--task demo_btcv --init scratch --feature-size 12 --roi-size "[64,32,32]" --spacing "[6,6,6]" --num-samples 1
       --lr 3e-3 --val-interval 0 --log-every 1 --device cpu --precision fp32 --progress false)
  sup_timing=2 sup_warm=1 sup_min=1 sup_max=2
  export SWINUNETR_RUNS_DIR="$out/runs"
fi
mkdir -p "$exp"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # many processes share the cores; E1 sets its own below

choose_steps() {  # choose_steps FILE METRICS SECONDS WARM MIN MAX: the steps that fit SECONDS at the seconds per
                  # step METRICS (a glob) measured after WARM steps, within [MIN, MAX], written to FILE (a temporary
                  # name, then renamed); TIME_LIMITS=off (dry runs) gives every choice 600 s
  local file=$1 metrics=$2 left=$3
  [ "${TIME_LIMITS:-on}" = off ] && left=600
  "$py" -m swinunetr_lib.experiments.gpu_plan steps --metrics "$metrics" --seconds "$left" --skip-steps "$4" \
    --min "$5" --max "$6" > "$file.tmp" && mv "$file.tmp" "$file"
}

call1() {
  [ -f "$cohort/finetune.json" ] && [ -f "$cohort/pretrain.json" ] && echo "cohort: reused ($cohort)" || \
    STEP_LOG="$exp/cohort.log" step cohort "$(limit 120 200)" "$py" -m swinunetr_lib.data demo-cohort --out-dir "$cohort" "${cohort_args[@]}"
  if [ -f "$exp/ssl/model_swinvit.pt" ]; then
    echo "pretraining: reused ($exp/ssl)"
  else
    if [ ! -f "$exp/ssl_steps.txt" ]; then  # the step count is chosen once: a rerun resumes the same schedule
      STEP_LOG="$exp/ssl_timing.log" step "pretraining timing run ($timing_steps steps)" "$(limit 90 $(( e1_s + 60 )))" \
        "$py" -m swinunetr_lib.pretrain --data-manifest "$cohort/pretrain.json" "${pre[@]}" --max-steps "$timing_steps" \
        --warmup-steps 1 --run-dir "$exp/ssl_timing"
      # 40 s: the run's start (data, model), export
      choose_steps "$exp/ssl_steps.txt" "$exp/ssl_timing/metrics.csv" $(( call1_end - SECONDS - sup_s - e1_s - 40 )) \
        "$warm" "$pre_min" "$pre_max" || { echo "pretraining: no timing, call 1 stops"; return 1; }
    fi
    local n; n=$(cat "$exp/ssl_steps.txt")
    STEP_LOG="$exp/ssl.log" step "pretraining ($n steps)" "$(limit 600 $(( sup_s + e1_s - 10 )))" \
      "$py" -m swinunetr_lib.pretrain --data-manifest "$cohort/pretrain.json" "${pre[@]}" --max-steps "$n" \
      --warmup-steps $(( n / 20 + 1 )) --checkpoint-every $(( n / 4 + 1 )) --run-dir "$exp/ssl"
  fi
  cp "$exp/ssl/metrics.csv" "$out/metrics.csv" 2>/dev/null
  if [ -f "$exp/verdict.json" ]; then
    echo "E1: reused ($exp/verdict.json)"
  else
    local control=()  # --supervised: the positive control, when its model is there (else E1 runs without it)
    supervised && control=(--supervised "[$exp/control/model.pt]") || \
      echo "positive control: not run (no $exp/control/model.pt): E1 runs without it"
    OMP_NUM_THREADS="$(nproc)" step "E1 dense probe" "$(limit 400 0)" "$py" -m swinunetr_lib.experiments.dense_probe \
      --manifest "$cohort/finetune.json" --ssl-checkpoint "$exp/ssl/checkpoints/last.pt" "${probe[@]}" \
      "${control[@]}" --csv "$exp/dense_probe.csv" --summary "$exp/dense_probe_summary.csv" \
      --verdict "$exp/verdict.json"
  fi
  for f in dense_probe.csv dense_probe_summary.csv verdict.json; do
    [ -f "$exp/$f" ] && cp "$exp/$f" "$out/" || echo "missing: $exp/$f"
  done
}

supervised() {  # E1's positive control: Swin UNETR fine-tuned from scratch at feature 12 (the probed encoder's
                # size) on the cohort's labeled cases, in the sup_s seconds before E1's share; a timing run first,
                # then as many steps as fit (at least sup_min). Status 0 when $exp/control/model.pt is there
  if [ -f "$exp/control/model.pt" ]; then echo "supervised fine-tune: reused ($exp/control)"; return 0; fi
  local ft=("$py" -m swinunetr_lib.finetune --data-manifest "$cohort/finetune.json" "${sup[@]}") n left
  if [ ! -f "$exp/control_steps.txt" ]; then  # chosen once, as pretraining's: a rerun resumes the same schedule
    left=$(( call1_end - SECONDS - e1_s ))
    [ "${TIME_LIMITS:-on}" = off ] && left=600
    (( left >= 20 )) || { echo "supervised fine-tune: no time ($left s left before E1's $e1_s s)"; return 1; }
    STEP_LOG="$exp/control_timing.log" step "supervised timing run ($sup_timing steps)" "$(limit 60 "$e1_s")" \
      "${ft[@]}" --max-steps "$sup_timing" --warmup-steps 1 --checkpoint-every 0 --run-dir "$exp/control_timing"
    # 15 s: the run's start (data, model) and model.pt
    choose_steps "$exp/control_steps.txt" "$exp/control_timing/metrics.csv" $(( call1_end - SECONDS - e1_s - 15 )) \
      "$sup_warm" "$sup_min" "$sup_max" || { echo "supervised fine-tune: no timing"; return 1; }
  fi
  n=$(cat "$exp/control_steps.txt")
  STEP_LOG="$exp/control.log" step "supervised fine-tune ($n steps)" "$(limit 300 $(( e1_s - 10 )))" "${ft[@]}" \
    --max-steps "$n" --warmup-steps $(( n / 20 + 1 )) --checkpoint-every $(( n / 4 + 1 )) --run-dir "$exp/control"
  [ -f "$exp/control/model.pt" ]
}

sweep() {  # sweep OUTPUT STEPS: the 16 runs side by side, one process per init and seed (each run's folder:
           # OUTPUT/runs/<name>/artifacts/finetune_btcv/<name>), then one collecting call; validation 4 times in a
           # long run, once at the end of a short (timing) one
  local output=$1 n=$2 t pids=() names=()
  t=$(limit 600 20)
  "$py" - "$ft_params" "$cohort/finetune.json" "$output/params.yml" "$n" "$dry" <<'EOF'
import pathlib, sys, yaml
params = yaml.safe_load(open(sys.argv[1]))
n = int(sys.argv[4])
params.update(data_manifest=sys.argv[2], max_steps=n, val_interval=n // 4 if n >= 100 else n, warmup_steps=max(1, n // 20))
if sys.argv[5] == "1":
    params.update(device="cpu", precision="fp32")
pathlib.Path(sys.argv[3]).parent.mkdir(parents=True, exist_ok=True)
open(sys.argv[3], "w").write(yaml.safe_dump(params))
EOF
  local le=("$py" -m swinunetr_lib.experiments.label_efficiency --params "$output/params.yml" --fractions "[0.25]"
            --engine library --pretrained "$exp/ssl/model_swinvit.pt" --output "$output")
  for init in scratch ssl; do
    for s in "${seeds[@]}"; do
      timeout -k 10 "$t" "${le[@]}" --inits "[$init]" --seeds "[$s]" \
        > "$output/sweep_${init}_seed$s.log" 2>&1 &
      pids+=($!) names+=("${init}_seed$s")
    done
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}"; echo "run ${names[$i]}: rc=$?"
  done
  local all; all=$(IFS=,; echo "[${seeds[*]}]")
  STEP_LOG="$output/collect.log" step "collect $output" "$(limit 60)" "${le[@]}" \
    --inits "[scratch, ssl]" --seeds "$all"  # reuses the finished runs
}

call2() {
  [ -f "$exp/ssl/model_swinvit.pt" ] || { echo "call 2: no pretrained encoder ($exp/ssl): run call 1 first"; return 1; }
  local rc
  "$py" -m swinunetr_lib.experiments.gpu_plan gate --verdict "$exp/verdict.json"; rc=$?
  if [ "$rc" != 0 ] && [ "$dry" = 1 ]; then
    echo "call 2: the rule says no (rc=$rc); a dry run goes on to check the plumbing"
  elif [ "$rc" != 0 ]; then
    echo "call 2: not run (rc=$rc): fine-tuning is planned only when the dense probe sees a gain by the rule"
    return 0
  fi
  if [ ! -f "$exp/ft_steps.txt" ]; then
    echo "== fine-tuning timing sweep (${#seeds[@]} x 2 runs side by side, $ft_timing steps)"
    sweep "$exp/ft_timing" "$ft_timing"
    # 60 s: the runs' start, evaluation and the collecting call
    choose_steps "$exp/ft_steps.txt" "$exp/ft_timing/runs/*/artifacts/finetune_btcv/*/metrics.csv" \
      $(( budget - SECONDS - 60 )) "$ft_warm" "$ft_min" "$ft_max" || \
      { echo "fine-tuning: no timing, call 2 stops"; return 1; }
  fi
  local n; n=$(cat "$exp/ft_steps.txt")
  echo "== fine-tuning sweep (${#seeds[@]} paired seeds x scratch / SSL, 1 labeled case, $n steps each)"
  sweep "$exp/ft" "$n"
  for f in results.csv dice_vs_fraction.png; do
    [ -f "$exp/ft/$f" ] && cp "$exp/ft/$f" "$out/" || echo "missing: $exp/ft/$f"
  done
  [ -f "$exp/ft/results.csv" ] && "$py" -m swinunetr_lib.experiments.gpu_plan gain --results "$exp/ft/results.csv" \
    --csv "$out/paired_gain.csv"
}

for c in $calls; do
  echo "=== call $c"
  call"$c" || echo "call $c: stopped (rc=$?)"
done
if [ -f "$out/dense_probe_summary.csv" ]; then  # E1's rule and positive control, last in the log
  e1=(--summary "$out/dense_probe_summary.csv")
  [ -f "$out/verdict.json" ] && e1+=(--verdict "$out/verdict.json")
  "$py" -m swinunetr_lib.experiments.gpu_plan control "${e1[@]}"
fi
echo "total ${SECONDS} s"; ls "$out"
