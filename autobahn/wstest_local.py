# Python 2.7 (runs inside autobahn/.wstest/): wstest, but every listening socket
# binds 127.0.0.1 only.
#
# wstest's fuzzingserver (client suite) listens on all interfaces (autobahn's
# listenWS passes interface=''), and so would its web page if enabled. This wrapper
# installs wstest's own reactor choice, forces interface='127.0.0.1' in
# reactor.listenTCP / listenSSL, then runs wstest's normal command line.
#
#   .wstest/bin/python wstest_local.py -m fuzzingserver -s spec.json -u 0
import sys

import autobahntestsuite.choosereactor  # noqa: F401  (must come first: installs epoll)
from twisted.internet import reactor

LOOPBACK = "127.0.0.1"

_listen_tcp = reactor.listenTCP
_listen_ssl = reactor.listenSSL


def listen_tcp(port, factory, backlog=50, interface=""):
    return _listen_tcp(port, factory, backlog, LOOPBACK)


def listen_ssl(port, factory, context_factory, backlog=50, interface=""):
    return _listen_ssl(port, factory, context_factory, backlog, LOOPBACK)


reactor.listenTCP = listen_tcp
reactor.listenSSL = listen_ssl

from autobahntestsuite.wstest import run  # noqa: E402

if __name__ == "__main__":
    sys.argv[0] = "wstest"
    sys.exit(run())
