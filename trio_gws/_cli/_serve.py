"""``python -m trio_gws serve package.module:app --workers N``: an application in
several processes on one port (the supervisor lives in ``trio_gws._workers``)."""

from __future__ import annotations

from .._workers import add_serve_arguments, run_serve
from ._common import Command

COMMAND = Command(
    name="serve",
    help="serve an application with N worker processes on one port",
    description=("Serve package.module:app (an EventHandler, a factory returning one, or "
                 "an async context manager factory yielding one) with --workers N "
                 "processes sharing one listening socket. A worker that dies is "
                 "restarted; SIGTERM or Ctrl-C drains every worker (close 1001) and "
                 "exits 0; SIGHUP restarts the workers one generation at a time (1012) "
                 "without refusing a single connection."),
    add_arguments=add_serve_arguments,
    run=run_serve,
)
