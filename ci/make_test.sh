#!/usr/bin/env bash
# `make test` after ruff, in two stages (issue #24: the whole of it in <= 15 min on 2 cores):
#   1. the tests that read no notebook output, in PYTEST_PARALLEL processes; beside them, in the background, the
#      notebooks' smoke run (one thread: the tests' processes are single-threaded too) and then the book built from
#      it. The tests leave ~20 % of the two cores idle (processes starting, waiting on each other), which the
#      notebooks fill; the background run's output goes to runs/smoke.log and is printed when it ends.
#   2. once both are done: the browser tests and the tests that read the smoke run's outputs
#      ($SWINUNETR_SMOKE_RUNS, marker after_smoke); the tests that share runs/browser stay in one process.
# Usage (from the Makefile): PY=.venv/bin/python PYTEST_PARALLEL="-n 2" PYTEST_ARGS="..." bash ci/make_test.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PYTEST_PARALLEL=${PYTEST_PARALLEL:-}
PYTEST_ARGS=${PYTEST_ARGS:-}
log=runs/smoke.log
mkdir -p runs

# The allocator. glibc's malloc gives large freed blocks (tensors above 32 MiB, and the top of the heap) back to the
# kernel, and the next step faults them in again: on a CPU training test, ~9 M page faults and a third of the CPU
# time spent in the kernel. jemalloc told to keep freed pages (decay off) ran that test (test_train's loss-falls
# test, 2 threads) in 30 s instead of 52 s, with ~10 % more peak memory (5.7 vs 5.1 GiB on the largest test).
# Used for every stage when Debian's libjemalloc2 is there (installed here as root, like chromium; the browser tests
# pass with it preloaded). Without it the tests run as before, slower. ALLOCATOR=glibc turns it off.
jemalloc=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
alloc=()
if [ "${ALLOCATOR:-jemalloc}" = jemalloc ]; then
    bash ci/apt_install.sh libjemalloc2 "$jemalloc" "the tests' allocator" || true
    if [ -e "$jemalloc" ]; then
        alloc=(env "LD_PRELOAD=$jemalloc${LD_PRELOAD:+:$LD_PRELOAD}" MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1)
        echo "make test: the tests and the smoke run use jemalloc ($jemalloc), freed pages kept"
    else
        echo "make test: libjemalloc2 could not be installed; glibc's malloc is used"
    fi
fi

OMP_NUM_THREADS=1 "${alloc[@]}" setsid bash -c '"$0" -m swinunetr_lib.notebooks run --params ci/params/smoke --output runs/smoke \
    --no-progress --no-estimate && "$0" -m swinunetr_lib.notebooks.book --runs runs/smoke' "$PY" > "$log" 2>&1 &
smoke=$!
trap 'kill -- -$smoke 2>/dev/null' EXIT  # an interrupted or failed `make test` leaves no notebook running
echo "make test: the smoke notebooks and the book run in the background (pid $smoke, log $log)"

# shellcheck disable=SC2086  # the two option lists are word lists
"${alloc[@]}" "$PY" -m pytest -q -ra -m "not browser and not after_smoke and not gpu_dry" $PYTEST_PARALLEL $PYTEST_ARGS
status=$?
if [ "$status" -ne 0 ]; then
    echo "make test: tests failed (exit $status); the smoke run is stopped" >&2
    exit "$status"
fi
echo "make test: tests done; waiting for the smoke notebooks ($log)"
wait "$smoke"
smoke_status=$?
trap - EXIT
cat "$log"
if [ "$smoke_status" -ne 0 ]; then
    echo "make test: the smoke notebooks or the book failed (exit $smoke_status): $log" >&2
    exit "$smoke_status"
fi

bash ci/install_browser.sh || exit
dist=()
[ -n "$PYTEST_PARALLEL" ] && dist=(--dist loadgroup)
# shellcheck disable=SC2086
SWINUNETR_SMOKE_RUNS=runs/smoke "${alloc[@]}" "$PY" -m pytest -q -ra -m "browser or after_smoke" $PYTEST_PARALLEL "${dist[@]}" \
    $PYTEST_ARGS
