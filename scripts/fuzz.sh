#!/usr/bin/env bash
# Coverage-guided fuzzing of the protocol core (see fuzz/README.md).
#
#   scripts/fuzz.sh [TARGET...]          every target (or those named), FUZZ_SECONDS each
#   scripts/fuzz.sh --merge [TARGET...]  copy into fuzz/corpus/<target>/ the inputs of
#                                        FUZZ_NEW/<target>/ that add coverage (make fuzz-merge)
#
# Settings (environment):
#   FUZZ_SECONDS  time per target (default 1800: 30 minutes)
#   FUZZ_JOBS     targets run at once (default 2)
#   FUZZ_NICE     niceness of the fuzzers (default 19: the machine stays usable)
#   FUZZ_NEW      where new corpus entries go, one folder per target
#                 (default fuzz/.corpus, ignored by git; promote with `make fuzz-merge`)
#   FUZZ_OUT      logs and crash artifacts, per target (default fuzz/.out)
#   FUZZ_TIMEOUT  seconds one input may take before it counts as a hang (default 20)
#   FUZZ_ARGS     more libFuzzer options
#
# Each target starts from its committed seeds (fuzz/corpus/<target>), its past crashes
# (fuzz/regressions/<target>) and what earlier runs kept in FUZZ_NEW. The script exits non-zero when any target found a crash, a
# broken invariant, a hang or a memory blow-up; the input is in FUZZ_OUT/<target>/.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
FUZZ_SECONDS=${FUZZ_SECONDS:-1800}
FUZZ_JOBS=${FUZZ_JOBS:-2}
FUZZ_NICE=${FUZZ_NICE:-19}
FUZZ_NEW=${FUZZ_NEW:-fuzz/.corpus}
FUZZ_OUT=${FUZZ_OUT:-fuzz/.out}
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-20}
read -r -a extra_args <<<"${FUZZ_ARGS:-}"

merge=0
if [[ ${1:-} == --merge ]]; then
    merge=1
    shift
fi
targets=("$@")
if [[ ${#targets[@]} == 0 ]]; then
    read -r -a targets <<<"$("$PYTHON" -c 'import sys; sys.path.insert(0, "fuzz")
import _harness; print(*_harness.TARGETS)')"
fi

if ! "$PYTHON" -c 'import atheris' 2>/dev/null; then
    echo "FAILED: atheris is not installed (pip install -e '.[fuzz]', or make install)" >&2
    exit 1
fi

merge_one() {
    # libFuzzer's merge: only inputs adding coverage are copied into the first folder.
    local target=$1 log
    log=$(mktemp)
    mkdir -p "$FUZZ_NEW/$target"
    "$PYTHON" fuzz/run.py "$target" -merge=1 "fuzz/corpus/$target" "$FUZZ_NEW/$target" \
        >"$log" 2>&1
    # it can exit 0 after every attempt failed: trust only its own word of success
    if ! grep -q "MERGE-OUTER: successful" "$log"; then
        echo "FAILED: merging $target" >&2
        tail -n 20 "$log" >&2
        rm -f "$log"
        return 1
    fi
    printf '%-17s %s\n' "$target" "$(grep -E 'MERGE-OUTER: [0-9]+ new files' "$log")"
    rm -f "$log"
}

if [[ $merge == 1 ]]; then
    status=0
    for target in "${targets[@]}"; do
        merge_one "$target" || status=1
    done
    echo "review and commit fuzz/corpus/ (git status fuzz/corpus)"
    exit $status
fi

run_one() {
    local target=$1 out="$FUZZ_OUT/$1" new="$FUZZ_NEW/$1"
    local corpora=("$new" "fuzz/corpus/$target")
    if [[ -d fuzz/regressions/$target ]]; then
        corpora+=("fuzz/regressions/$target")  # past crashes: rerun first, built on
    fi
    rm -rf "$out"
    mkdir -p "$out" "$new"
    nice -n "$FUZZ_NICE" "$PYTHON" fuzz/run.py "$target" \
        -max_total_time="$FUZZ_SECONDS" -timeout="$FUZZ_TIMEOUT" -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$out/" "${extra_args[@]}" \
        "${corpora[@]}" >"$out/log" 2>&1
    echo $? >"$out/status"
}

echo "== fuzzing ${targets[*]}: ${FUZZ_SECONDS} s each, ${FUZZ_JOBS} at a time"
for target in "${targets[@]}"; do
    while (( $(jobs -rp | wc -l) >= FUZZ_JOBS )); do
        wait -n
    done
    run_one "$target" &
done
wait

failed=0
for target in "${targets[@]}"; do
    out="$FUZZ_OUT/$target"
    status=$(cat "$out/status" 2>/dev/null || echo "?")
    stats=$(grep -E '^#[0-9]+ +DONE' "$out/log" | tail -n 1)
    stats=${stats:-$(grep -E '^#[0-9]+' "$out/log" | tail -n 1)}
    printf '%-17s status %s  %s\n' "$target" "$status" "$stats"
    if [[ $status != 0 ]]; then
        failed=1
        echo "---- $target: the end of $out/log" >&2
        tail -n 40 "$out/log" >&2
        ls "$out" | grep -E '^(crash|timeout|oom|leak|slow-unit)-' | sed "s|^|  input: $out/|" >&2
    fi
done
if [[ $failed != 0 ]]; then
    echo "FAILED: a fuzz target found a problem (reproduce: $PYTHON fuzz/run.py TARGET INPUT)" >&2
fi
exit $failed
