#!/usr/bin/env bash
# Headless Chromium for tests/test_browser.py: Debian's chromium and its matching
# chromedriver (Selenium drives it; nothing downloads a browser or a driver). About
# 300 MB installed; several minutes on a machine that lacks it, instant afterwards.
set -euo pipefail
source "$(dirname "$0")/_apt.sh"
apt_install chromium chromium-driver
