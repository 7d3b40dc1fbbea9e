#!/usr/bin/env bash
# Node's ws for tests/test_node_ws.py: the exact version pinned in tests/node/package.json
# (and its package-lock.json), from the npm registry into tests/node/node_modules, which
# git ignores. Node.js itself comes from Debian when the machine has none.
set -euo pipefail
source "$(dirname "$0")/_apt.sh"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi
cd "$(dirname "$0")/../../tests/node"
# `npm ls` succeeds only when node_modules holds exactly the pinned version.
if ! npm ls --depth=0 >/dev/null 2>&1; then
    npm ci --no-audit --no-fund --loglevel=error
fi
