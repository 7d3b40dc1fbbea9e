#!/usr/bin/env bash
# Branch coverage of trio_gws, called by `make coverage`: a developer's tool, not CI's
# (it runs the suite twice more). The suite without the hostile tests, then the
# pure-Python pass (the files scripts/test.sh runs with TRIO_GWS_NO_SPEEDUPS=1, whose
# fallback paths the compiled run skips), combined into one report: the terminal's
# lists the lines and branches never taken, coverage-html/index.html shows them.
# Only code in the pytest process counts: the CLI, the workers and other code that
# the tests run in subprocesses show as untested here.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
run=("$PYTHON" -m coverage run --branch --source=trio_gws)

echo "== pytest -m 'not hostile' under coverage"
"${run[@]}" --data-file="$data/main" -m pytest -q -p no:cacheprovider -m "not hostile" \
    2>&1 | tail -n 3
main_status=${PIPESTATUS[0]}

echo "== the pure-Python pass under coverage"
mapfile -t pure_python_tests < scripts/pure-python-tests.txt
TRIO_GWS_NO_SPEEDUPS=1 "${run[@]}" --data-file="$data/pure" -m pytest -q -p no:cacheprovider \
    "${pure_python_tests[@]}" 2>&1 | tail -n 3
pure_status=${PIPESTATUS[0]}

"$PYTHON" -m coverage combine --quiet --data-file="$data/all" "$data/main" "$data/pure"
"$PYTHON" -m coverage report --data-file="$data/all" --skip-covered --show-missing
"$PYTHON" -m coverage html --data-file="$data/all" --directory=coverage-html --quiet
echo "coverage-html/index.html written"
# A failing test leaves its code uncovered: the report is then not the suite's.
[[ $main_status == 0 && $pure_status == 0 ]]
