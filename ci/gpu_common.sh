# Sourced by the GPU scripts (ci/gpu_bench.sh, ci/gpu_label_efficiency.sh) with their arguments, after they set
# `name`: the output folder `out` (first argument, else $OUT, else runs/<name>), `dry` (DRY_RUN=1: on a CPU at the
# smallest sizes) and `budget` (BUDGET_S, default 540 s; TIME_LIMITS=off lifts every limit); everything printed is also written to $out/<name>.log.
# Installs the wheels in .whl/ next to the machine's torch when MONAI is missing there (the device machine has
# PyTorch but no network: fetch them here with the command in docs/measured.md, "GPU checks"), puts this checkout on
# PYTHONPATH, picks the Python (.venv's in a dry run, if present) and defines `limit`.
out="${1:-${OUT:-runs/$name}}"
dry="${DRY_RUN:-0}"
budget="${BUDGET_S:-540}"
mkdir -p "$out"
exec > >(tee "$out/$name.log") 2>&1
py=python
[ "$dry" = 1 ] && [ -x .venv/bin/python ] && py=.venv/bin/python
if [ -d .whl ] && ! $py -c "import monai, nibabel" 2>/dev/null; then
  $py -m pip install --quiet --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
limit() {  # limit SECONDS: SECONDS, or what is left of the budget (minus 5 s), whichever is less (at least 1);
            # TIME_LIMITS=off (the dry-run tests): no limit, so a slow or loaded machine cannot fail a step
  [ "${TIME_LIMITS:-on}" = off ] && { echo 86400; return; }
  local left=$(( budget - SECONDS - 5 ))
  (( left < $1 )) && echo $(( left > 1 ? left : 1 )) || echo "$1"
}
