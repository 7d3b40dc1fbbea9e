#!/usr/bin/env bash
# The proxies the client's proxy tests go through (tests/test_proxy.py):
#   tinyproxy    HTTP CONNECT, with and without BasicAuth
#   stunnel4     TLS in front of tinyproxy: an https:// proxy
#   microsocks   SOCKS5 that really checks a user and password (-u/-P), remote DNS
#   dante-server SOCKS4 (and SOCKS5 without authentication)
# The tests start their own instances on 127.0.0.1 with their own configuration;
# no system service is started or configured here.
set -euo pipefail
source "$(dirname "$0")/_apt.sh"
apt_install tinyproxy stunnel4 microsocks dante-server
