#!/usr/bin/env bash
# Installs the real components the tests talk to (proxies, nginx, Redis, a browser,
# Node's ws...): every script in scripts/components/, in name order. Each one is
# idempotent and quick when its component is already there, so `make test` calls this
# on every run. apt-get needs root (CI runs as root); npm packages go into ignored
# folders of the repository.
#
# A component that cannot be installed fails this script, and with it the test run:
# the tests never skip a missing component into green.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
for script in scripts/components/[!_]*.sh; do
    [[ -e $script ]] || continue
    echo "== components: $(basename "$script" .sh)"
    if ! bash "$script"; then
        echo "FAILED: $script" >&2
        status=1
    fi
done
exit $status
