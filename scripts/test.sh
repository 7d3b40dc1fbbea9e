#!/usr/bin/env bash
# Every test of the project, called by `make test` / `make test-full` (and so by .ci/run).
#
# The Autobahn suites mostly wait on wstest, so they run in the background while mypy
# and pytest use the CPU; their log is printed when they finish. The documentation
# site is built in the background too (scripts/build-docs.sh: warnings are errors).
# The fuzzers' smoke run (every target for 20 s from the committed seeds, niced) runs
# after pytest, beside Autobahn's tail. The hostile tests (tests/hostile/, about a
# minute) run last, alone: they bound a live client's latency under a crowd, and wstest
# beside them on two cores measured wstest's bursts, not the server (a CI run failed so).
# The last lines printed are pytest's own summary lines, the main run's then the
# hostile run's.
#
#   scripts/test.sh          Autobahn cases 1.* to 10.* (server and client suites)
#   scripts/test.sh --full   all Autobahn cases, compression included
# Both modes add the extra server agents (wss://, parallel handlers, on_stream) on
# 1.* to 10.*, in a wstest run of their own beside the main suites (--extra-agents).
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
export PYTHON
autobahn_args=(--all --extra-agents)
if [[ ${1:-} == --full ]]; then
    autobahn_args+=(--full --fail-unimplemented)
fi

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

echo "== installing wstest (cached in autobahn/.wstest)"
if ! autobahn/run --install-only; then
    echo "FAILED: could not install the Autobahn testsuite" >&2
    exit 1
fi

echo "== Autobahn ${autobahn_args[*]} (in the background)"
started=$SECONDS
autobahn/run "${autobahn_args[@]}" >"$logs/autobahn.log" 2>&1 &
autobahn_pid=$!

echo "== docs: sphinx-build -W (in the background)"
bash scripts/build-docs.sh "$logs/docs-html" >"$logs/docs.log" 2>&1 &
docs_pid=$!

echo "== mypy --strict"
"$PYTHON" -m mypy
mypy_status=$?

# The compiled masking must have been built: its tests fail instead of skipping.
# (Set TRIO_GWS_REQUIRE_SPEEDUPS=0 on a machine without a C compiler.)
export TRIO_GWS_REQUIRE_SPEEDUPS=${TRIO_GWS_REQUIRE_SPEEDUPS:-1}

echo "== pytest with the pure-Python masking forced (the fallback's own pass)"
# (the files it runs: scripts/pure-python-tests.txt, shared with scripts/coverage.sh)
mapfile -t pure_python_tests < scripts/pure-python-tests.txt
TRIO_GWS_NO_SPEEDUPS=1 "$PYTHON" -m pytest -q -p no:cacheprovider "${pure_python_tests[@]}" \
    2>&1 | tail -n 3
fallback_status=${PIPESTATUS[0]}

echo "== pytest (all but the hostile tests, beside Autobahn)"
"$PYTHON" -m pytest -q -p no:cacheprovider -m "not hostile" 2>&1 | tee "$logs/pytest.log"
pytest_status=${PIPESTATUS[0]}

# After pytest, so its timing-sensitive tests keep the CPU; alongside Autobahn's tail.
echo "== fuzz smoke run (every target 20 s, from the committed seeds)"
bash scripts/fuzz-smoke.sh >"$logs/fuzz.log" 2>&1
fuzz_status=$?
cat "$logs/fuzz.log"

echo "== waiting for the docs build"
wait "$docs_pid"
docs_status=$?
cat "$logs/docs.log"
echo "== docs build finished with status $docs_status"

echo "== waiting for Autobahn"
wait "$autobahn_pid"
autobahn_status=$?
cat "$logs/autobahn.log"
echo "== Autobahn finished after $((SECONDS - started)) s with status $autobahn_status"

echo "== pytest -m hostile (alone, now that Autobahn and the fuzzers are done)"
"$PYTHON" -m pytest -q -p no:cacheprovider -m hostile 2>&1 | tee "$logs/hostile.log"
hostile_status=${PIPESTATUS[0]}

echo
echo "mypy: $([[ $mypy_status == 0 ]] && echo ok || echo FAILED)," \
    "autobahn: $([[ $autobahn_status == 0 ]] && echo ok || echo FAILED)," \
    "docs: $([[ $docs_status == 0 ]] && echo ok || echo FAILED)," \
    "pytest (pure masking): $([[ $fallback_status == 0 ]] && echo ok || echo FAILED)," \
    "fuzz smoke: $([[ $fuzz_status == 0 ]] && echo ok || echo FAILED)," \
    "pytest: $([[ $pytest_status == 0 ]] && echo ok || echo FAILED)," \
    "pytest -m hostile: $([[ $hostile_status == 0 ]] && echo ok || echo FAILED)"
# Repeat pytest's own closing lines last, so they are the run's final word on test counts.
tail -n 1 "$logs/pytest.log"
tail -n 1 "$logs/hostile.log"

if [[ $mypy_status != 0 || $pytest_status != 0 || $hostile_status != 0 || $fallback_status != 0
      || $autobahn_status != 0 || $docs_status != 0 || $fuzz_status != 0 ]]; then
    exit 1
fi
