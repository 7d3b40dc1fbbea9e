#!/usr/bin/env bash
# Debian packages the benchmark's optional tools need, called by `make bench`:
# the toolchain that builds tcpkali (autotools, bison, flex, a C compiler; tcpkali itself
# is not packaged for Debian and is not part of this repository: see benchmarks/README.md,
# "tcpkali"), and tshark for looking at what a load generator puts on the wire.
# Idempotent; never starts a service.
set -euo pipefail
cd "$(dirname "$0")"
source components/_apt.sh
apt_install autoconf automake libtool bison flex gcc g++ make libncurses-dev pkg-config tshark
