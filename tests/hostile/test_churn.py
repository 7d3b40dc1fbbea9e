"""20,000 connections that die at random points, against one real server process.

Hypothesis picks the mix: how much of each way of dying (``dying.KINDS``: after the
TCP connect, mid-request, mid-TLS-handshake, mid-frame, mid-close, with an echo
being written...) and how many die by RST instead of FIN. Four examples of 5,000
connections each (one explicit, every kind and half of them RST; three generated;
no shrinking, which would repeat thousands of connections). After each example:

* the server's open descriptors and Trio tasks are back at the baseline, and its
  RSS is within 10 MiB of it. RSS is read after the server ran a full garbage
  collection and ``malloc_trim`` (its ``/gc``): trio's SSL streams are reference
  cycles (the OpenSSL memory under them waits for a collection) and glibc keeps
  freed pages, so the raw figure follows the last peak rather than what is held.
  A leak (anything that keeps connections or their buffers) grows the held
  figure; the raw one is reported too;
* every completed handshake (every client that got its 101) got exactly one
  ``on_close`` / ``on_error``: opens = clients that got the 101 = endings, none
  twice, none without an open;
* nothing reached the server's nursery as an exception: the process is alive and
  logged no error.

The baseline is taken after a warm-up crowd of 500 (the first TLS handshakes and
connections allocate what every later one reuses).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from dying import KINDS, OPENED, run_crowd
from support import MiB, ServerProcess, held_rss, server_process, settled, steady

pytestmark = pytest.mark.hostile

PER_EXAMPLE = 5000
EXAMPLES = 4  # the explicit one and three generated: 20,000 connections
RSS_SLACK = 10 * MiB
CLOSE_TIMEOUT = 2.0
HANDSHAKE_TIMEOUT = 5.0


class Churn:
    """The server, the client TLS context and the baseline shared by the examples."""

    def __init__(self, server: ServerProcess, context: ssl.SSLContext) -> None:
        self.server = server
        self.context = context
        self.baseline: dict[str, Any] = {}
        self.last = {"opens": 0, "closes": 0, "errors": 0}
        self.total = 0

    def crowd(self, count: int, weights: dict[str, int], rst: float, seed: int) -> Any:
        return trio.run(run_crowd, self.server.port, self.server.tls_port, self.context,
                        count, weights, rst, seed)


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Churn]:
    tmp = tmp_path_factory.mktemp("churn")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with server_process(tmp, "--handshake-timeout", HANDSHAKE_TIMEOUT, "--close-timeout",
                        CLOSE_TIMEOUT, tls=(cert_file, key_file)) as server:
        state = Churn(server, context)
        warm = state.crowd(500, {kind: 1 for kind in KINDS}, 0.5, 1)
        assert not warm.failures, warm.failures[:10]
        baseline = steady(server)
        baseline["raw_rss"], baseline["rss"] = held_rss(server)
        state.baseline = baseline
        state.last = {k: baseline[k] for k in ("opens", "closes", "errors")}
        yield state


mixes = st.fixed_dictionaries({
    "weights": st.fixed_dictionaries({kind: st.integers(0, 4) for kind in KINDS}).filter(
        lambda weights: sum(weights.values()) > 0),
    "rst": st.floats(0, 1),
    "seed": st.integers(0, 2**32 - 1),
})


@settings(max_examples=EXAMPLES - 1, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(mix=mixes)
@example(mix={"weights": {kind: 1 for kind in KINDS}, "rst": 0.5, "seed": 12})
def test_connections_dying_at_random_points(churn: Churn, mix: dict[str, Any],
                                            figures: Callable[[str], None]) -> None:
    server = churn.server
    base = churn.baseline
    began = time.monotonic()
    seen = churn.crowd(PER_EXAMPLE, mix["weights"], mix["rst"], mix["seed"])
    crowd_time = time.monotonic() - began
    after = settled(server, base, timeout=HANDSHAKE_TIMEOUT + CLOSE_TIMEOUT + 30)
    raw_rss, rss = held_rss(server)
    churn.total += PER_EXAMPLE

    opens = after["opens"] - churn.last["opens"]
    endings = (after["closes"] - churn.last["closes"]) + (after["errors"] - churn.last["errors"])
    churn.last = {k: after[k] for k in ("opens", "closes", "errors")}
    shown = ", ".join(f"{kind} {seen.by_kind[kind]}" for kind in KINDS if seen.by_kind[kind])
    figures(f"{PER_EXAMPLE} connections ({churn.total} so far) in {crowd_time:.1f} s, "
            f"{seen.rst} by RST: {shown}. {seen.opened} got 101; server opens {opens}, "
            f"endings {endings}; fds {base['fds']} -> {after['fds']}, tasks "
            f"{base['tasks']} -> {after['tasks']}, RSS held {base['rss'] / MiB:.1f} -> "
            f"{rss / MiB:.1f} MiB (raw {base['raw_rss'] / MiB:.1f} -> {raw_rss / MiB:.1f})")

    assert server.alive(), server.log_text()[-4000:]
    assert not seen.failures, seen.failures[:10]
    expected_opens = sum(seen.by_kind[kind] for kind in OPENED)
    assert seen.opened == expected_opens
    assert opens == seen.opened, (opens, seen.opened)
    assert endings == opens, (endings, opens)
    assert after["doubles"] == 0 and after["unopened"] == 0, after
    assert after["live"] == 0, after
    assert after["fds"] == base["fds"], (after["fds"], base["fds"])
    assert after["tasks"] == base["tasks"], (after["tasks"], base["tasks"])
    assert rss <= base["rss"] + RSS_SLACK, (rss / MiB, base["rss"] / MiB)
    assert "ERROR" not in after["log"] and "CRITICAL" not in after["log"], (
        after["log"], server.log_text()[-4000:])
