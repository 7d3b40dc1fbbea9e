#!/usr/bin/env bash
# nginx for tests/test_nginx.py: Debian's package. Only the binary is used: the tests
# start their own nginx on 127.0.0.1 with a config, pid file, logs and temp folders in
# a temporary directory, never the system service (_apt.sh keeps it from starting).
set -euo pipefail
source "$(dirname "$0")/_apt.sh"
apt_install nginx
