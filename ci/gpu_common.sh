# Sourced by the GPU scripts (ci/gpu_bench.sh, ci/gpu_plan.sh) with their arguments, after they set `name`: the
# output folder `out` (first argument, else $OUT, else runs/<name>), `dry` (DRY_RUN=1: on a CPU at the smallest
# sizes) and `budget` (BUDGET_S, default 540 s; TIME_LIMITS=off lifts every limit); everything printed is also
# written to $out/<name>.log.
# The Python is `python3` (the GPU image's), PYTHON=... to choose another; in a dry run .venv's, if present. The
# wheels in .whl/ (`make gpu-wheels`: monai, nibabel, pydicom, which the image lacks) are installed next to its
# torch when MONAI is missing there; then `preflight` checks `import torch, monai` (and CUDA unless dry) and stops
# the script with one line when either is missing. `limit CAP [RESERVE]` gives a step's time limit, `step NAME
# SECONDS cmd...` runs one step under `timeout -k` with a line as it starts and as it ends (rc, seconds).
out="${1:-${OUT:-runs/$name}}"
dry="${DRY_RUN:-0}"
budget="${BUDGET_S:-540}"
mkdir -p "$out"
exec > >(tee "$out/$name.log") 2>&1
py="${PYTHON:-python3}"
[ -z "${PYTHON:-}" ] && [ "$dry" = 1 ] && [ -x .venv/bin/python ] && py=.venv/bin/python
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null && ! timeout -k 5 60 "$py" -c "import monai, nibabel" 2>/dev/null; then
  site="${TMPDIR:-/tmp}/${name}_site"
  timeout -k 5 120 "$py" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/*.whl && export PYTHONPATH="$site:${PYTHONPATH:-}" \
    || echo "wheels: pip install from .whl/ failed (rc=$?)"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"

limit() {  # limit CAP [RESERVE]: CAP, or what is left of the budget minus RESERVE (seconds the later steps need)
            # minus 5 s, whichever is less (at least 1); TIME_LIMITS=off (the dry-run tests): no limit, so a slow
            # or loaded machine cannot fail a step
  [ "${TIME_LIMITS:-on}" = off ] && { echo 86400; return; }
  local left=$(( budget - SECONDS - ${2:-0} - 5 ))
  (( left < $1 )) && echo $(( left > 1 ? left : 1 )) || echo "$1"
}

step() {  # step NAME SECONDS cmd...: one line as it starts and one as it ends; killed 10 s after its limit;
         # STEP_LOG=file: the command's output goes there, and its last 4 lines here
  local what=$1 seconds=$2 t0=$SECONDS rc
  shift 2
  echo "== $what (limit $seconds s)"
  if [ -n "${STEP_LOG:-}" ]; then
    timeout -k 10 "$seconds" "$@" > "$STEP_LOG" 2>&1
    rc=$?
    tail -4 "$STEP_LOG"
  else
    timeout -k 10 "$seconds" "$@"
    rc=$?
  fi
  echo "$what: rc=$rc ($(( SECONDS - t0 )) s)$([ $rc = 124 ] || [ $rc = 137 ] && echo ", stopped by its time limit")"
  return $rc
}

preflight() {  # preflight [MODULE...]: torch, monai (and the modules named) import, and CUDA is there unless dry;
               # else one line and exit 1
  local mods="torch, monai${1:+, }$(IFS=,; echo "$*" | sed 's/,/, /g')"
  [ "$dry" = 1 ] || timeout -k 5 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    || echo "nvidia-smi: rc=$?"
  timeout -k 5 120 "$py" -c "
import sys
try:
    import $mods
except ImportError as e:
    sys.exit(f'preflight: {e} (put its wheel in .whl/: make gpu-wheels, and carry .whl)')
import torch
if '$dry' != '1' and not torch.cuda.is_available():
    sys.exit('preflight: torch ' + torch.__version__ + ' sees no CUDA device')
print('preflight: python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
      'monai', monai.__version__)" || { echo "preflight failed: nothing run"; exit 1; }
}
