#!/usr/bin/env bash
# The documentation site (docs/conf.py), as `make docs` and scripts/test.sh build it:
# every warning is an error (-W, reported all at once with --keep-going), every
# cross-reference must resolve (-n), and the build starts afresh (-E), since an
# incremental build would not repeat the warnings of pages it skips.
#
#   scripts/build-docs.sh [OUTPUT]    default OUTPUT: docs/_build/html (ignored by git)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
out=${1:-docs/_build/html}
# The source folder is the repository (docs/conf.py picks the pages); the
# configuration is in docs/.
"$PYTHON" -m sphinx -E -W --keep-going -n -q -b html -c docs -d "$out/.doctrees" . "$out"
echo "docs built in $SECONDS s: $out/docs/index.html"
