#!/usr/bin/env bash
# The CI smoke run of the fuzzers: every target for FUZZ_SMOKE_SECONDS (default 20),
# three at a time, from the committed seeds; new inputs go to a temporary folder and are
# dropped. Fails on any crash, broken invariant or hang (the input is kept in
# fuzz/.out/<target>/ for `python fuzz/run.py TARGET INPUT` and a regression test).
set -uo pipefail
cd "$(dirname "$0")/.."
new=$(mktemp -d)
trap 'rm -rf "$new"' EXIT
# A generous per-input timeout: the smoke run shares the CPU with the other suites.
FUZZ_SECONDS=${FUZZ_SMOKE_SECONDS:-20} FUZZ_JOBS=${FUZZ_JOBS:-3} FUZZ_NICE=${FUZZ_NICE:-10} \
    FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-120} FUZZ_NEW="$new" bash scripts/fuzz.sh "$@"
