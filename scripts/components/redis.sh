#!/usr/bin/env bash
# Redis for the hub's tests (tests/test_hub_redis.py, tests/test_workers.py): Debian's
# redis-server. Only the binary is used: the tests start their own redis-server on
# 127.0.0.1 (or a Unix socket in a temporary folder) with persistence off, and stop it by
# PID; the system service is never started (_apt.sh keeps it from starting).
set -euo pipefail
source "$(dirname "$0")/_apt.sh"
apt_install redis-server
