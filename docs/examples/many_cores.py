"""One port, several processes: Linux spreads the connections between them.

Each worker process runs its own Trio loop and its own ``gws.serve(...,
reuse_port=True)`` on the same port; the kernel (SO_REUSEPORT) hands each new
connection to one of them. Run ``python docs/examples/many_cores.py --workers 4``
and connect to ws://127.0.0.1:8765/: each message is answered with the worker's PID.
SIGTERM or Ctrl+C shuts every worker down gracefully (clients get close 1001).

Connections of different workers share nothing: a message for every client of the
service (a chat room) must travel between processes by other means.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
from functools import partial
from types import FrameType

import trio

import trio_gws as gws


class WhoAmI(gws.EventHandler):
    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        await conn.write_string(f"worker {os.getpid()}")


async def worker(port: int) -> None:
    """One process's server, until SIGTERM or SIGINT shuts it down gracefully."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(gws.serve, WhoAmI(), port, host="127.0.0.1",
                                        reuse_port=True))
            print(f"worker {os.getpid()} serving ws://127.0.0.1:{port}/", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()  # serve() sends 1001 to its clients
                break


def run_worker(port: int) -> None:
    trio.run(worker, port)


def main(port: int, workers: int) -> None:
    context = multiprocessing.get_context("spawn")  # a fresh interpreter per worker
    processes = [context.Process(target=run_worker, args=(port,), name=f"worker-{n}")
                 for n in range(workers)]
    for process in processes:
        process.start()

    def stop(signum: int, frame: FrameType | None) -> None:
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for process in processes:
        process.join()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    main(args.port, args.workers)
