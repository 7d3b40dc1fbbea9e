"""A Redis connection over a Trio stream, and a pipelined command channel on top.

Just what a hub needs: connect (TCP, TLS or a Unix socket) with AUTH and SELECT,
send commands, read replies and pub/sub pushes, and pipeline commands from many
tasks over one connection (each caller gets its own reply, in order). Reconnecting is
the hub's business: a connection that fails raises and is dropped.

Why our own and not a client library: the hub needs to know the moment a connection
breaks (to report a gap and refuse publishes), to bound what it buffers, and to pay
as little as possible per message; see the README's notes on the redis extra.
"""

from __future__ import annotations

import ssl
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ._errors import HubError, HubUnavailableError
from ._resp import (Arg, ProtocolError, Push, RedisAddress, ReplyError, ReplyParser,
                    encode_command)
from ._transport import Transport

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

#: Bytes asked of the socket per read.
READ_SIZE = 256 * 1024


class RedisConnection:
    """One connection: ``send`` commands, ``receive`` replies (or pushes) in order."""

    def __init__(self, stream: trio.abc.Stream, address: RedisAddress) -> None:
        self.stream = stream
        # A plain socket's reads and writes go straight to it (see _transport): one
        # command per publish makes the per-call costs of SocketStream count.
        self._transport = Transport(stream)
        self.address = address
        self._parser = ReplyParser()
        self._send_lock = trio.StrictFIFOLock()
        self.broken = False

    @classmethod
    async def open(cls, address: RedisAddress, *, timeout: float,
                   name: str | None = None, resp3: bool = False) -> RedisConnection:
        """Connect and log in (AUTH, SELECT, CLIENT SETNAME), all within ``timeout``;
        with ``resp3``, through ``HELLO 3`` (Redis 6 or newer), so that one connection
        carries both commands and pub/sub pushes.

        Raises:
            HubUnavailableError: Redis cannot be reached, or did not answer in time.
            HubError: Redis refused the login or the database.
        """
        try:
            with trio.fail_after(timeout):
                stream: trio.abc.Stream
                if address.path is not None:
                    stream = await trio.open_unix_socket(address.path)
                else:
                    assert address.host is not None
                    stream = await trio.open_tcp_stream(address.host, address.port)
                    if address.tls:
                        stream = trio.SSLStream(stream, ssl.create_default_context(),
                                                server_hostname=address.host)
                connection = cls(stream, address)
                try:
                    await connection._login(name, resp3)
                except BaseException:
                    await trio.aclose_forcefully(stream)
                    raise
                return connection
        except trio.TooSlowError:
            raise HubUnavailableError(
                f"Redis at {address} did not answer within {timeout}s") from None
        except (OSError, trio.BrokenResourceError) as exc:
            raise HubUnavailableError(f"cannot reach Redis at {address}: {exc}") from exc

    async def _login(self, name: str | None, resp3: bool) -> None:
        address = self.address
        commands: list[tuple[Arg, ...]] = []
        if resp3:
            hello: tuple[Arg, ...] = ("HELLO", 3)
            if address.password is not None:
                hello += ("AUTH", address.username or "default", address.password)
            commands.append(hello)
        elif address.password is not None:
            commands.append(("AUTH", address.username, address.password)
                            if address.username else ("AUTH", address.password))
        if address.db:
            commands.append(("SELECT", address.db))
        if name:
            commands.append(("CLIENT", "SETNAME", name))
        if not commands:
            return
        await self.send(*commands)
        for command in commands:
            reply = await self.receive()
            if isinstance(reply, ReplyError):
                needs = (" (pubsub mode needs Redis 6 or newer: RESP3)"
                         if command[0] == "HELLO" and "unknown command" in str(reply) else "")
                raise HubError(f"Redis at {address} refused "
                               f"{'AUTH' if 'AUTH' in command else command[0]!s}: {reply}{needs}")

    async def send(self, *commands: tuple[Arg, ...]) -> None:
        """Send commands in one write (they are pipelined: read their replies in order).

        Raises:
            HubUnavailableError: the connection broke (it is marked broken).
        """
        data = b"".join([encode_command(*command) for command in commands])
        await self.send_raw(data)

    async def send_raw(self, data: bytes) -> None:
        if self.broken:
            raise HubUnavailableError(f"the connection to Redis at {self.address} is broken")
        async with self._send_lock:
            try:
                await self._transport.send_all(data)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self.broken = True
                raise HubUnavailableError(
                    f"lost the connection to Redis at {self.address}: {exc}") from exc
            except BaseException:
                # Cancelled mid-write: what Redis got is unknown, the stream is unusable.
                self.broken = True
                raise

    async def receive(self) -> Any:
        """The next reply or push.

        Raises:
            HubUnavailableError: the connection broke or Redis closed it.
        """
        parser = self._parser
        reply = self._next(parser)
        while reply is False:
            try:
                data = await self._transport.receive_some(READ_SIZE)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self.broken = True
                raise HubUnavailableError(
                    f"lost the connection to Redis at {self.address}: {exc}") from exc
            if not data:
                self.broken = True
                raise HubUnavailableError(f"Redis at {self.address} closed the connection")
            parser.feed(data)
            reply = self._next(parser)
        return reply

    def _next(self, parser: ReplyParser) -> Any:
        try:
            return parser.next_reply()
        except ProtocolError as exc:
            self.broken = True
            raise HubUnavailableError(f"Redis at {self.address} sent something that is "
                                      f"not RESP: {exc}") from exc

    def receive_buffered(self) -> Any:
        """The next reply already read, or ``False`` (no I/O: a reader drains a whole
        read before it waits again)."""
        return self._next(self._parser)

    async def aclose(self) -> None:
        self.broken = True
        await trio.aclose_forcefully(self.stream)


#: The reply of a command whose connection broke before it was answered.
_LOST = object()


class _Waiter:
    __slots__ = ("deadline", "done", "reply")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.done = trio.Event()
        self.reply: Any = _LOST


class Pipeline:
    """Commands from many tasks over one connection, each caller getting its reply.

    ``run`` reads the replies and must run while the pipeline is used; when the
    connection breaks, or a reply is later than ``timeout``, it fails every caller
    still waiting, and returns. (One watchdog for all callers rather than a cancel
    scope per call: a publish is the hot path.)
    """

    def __init__(self, connection: RedisConnection, *, timeout: float,
                 on_push: Callable[[Push], Awaitable[None] | None] | None = None) -> None:
        self.connection = connection
        self._timeout = timeout
        # RESP3: pushes (pub/sub) come between replies; on_push handles them in order,
        # and returns an awaitable only when it has to wait (a gap to report).
        self._on_push = on_push
        self._waiting: deque[_Waiter] = deque()
        self.closed = False
        self.late = False

    async def run(self) -> None:
        """Hand out replies until the connection breaks (then raise why)."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch)
                await self._read()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            self.closed = True
            self.connection.broken = True
            for waiter in self._waiting:
                waiter.done.set()  # reply _LOST: they raise
            self._waiting.clear()
            with trio.CancelScope(shield=True):
                await self.connection.aclose()

    async def _read(self) -> None:
        connection = self.connection
        waiting = self._waiting
        on_push = self._on_push
        while True:
            reply = await connection.receive()
            while reply is not False:
                if on_push is not None and type(reply) is Push:
                    pending = on_push(reply)
                    if pending is not None:
                        await pending
                    reply = connection.receive_buffered()
                    continue
                if not waiting:
                    raise HubUnavailableError(
                        f"Redis at {connection.address} sent a reply nobody asked for")
                waiter = waiting.popleft()
                waiter.reply = reply
                waiter.done.set()
                reply = connection.receive_buffered()

    async def _watch(self) -> None:
        """Drop the connection when the oldest reply is overdue: a late reply would
        be handed to the wrong caller."""
        while True:
            await trio.sleep(self._timeout / 4)
            waiting = self._waiting
            if waiting and trio.current_time() > waiting[0].deadline:
                self.late = True
                raise HubUnavailableError(f"Redis at {self.connection.address} did not "
                                          f"answer within {self._timeout}s")

    async def call(self, *args: Arg) -> Any:
        """Send one command and wait for its reply (an error reply is returned).

        Raises:
            HubUnavailableError: the connection is broken, breaks meanwhile, or Redis
                does not answer within the timeout.
        """
        if self.closed:
            raise HubUnavailableError(
                f"no connection to Redis at {self.connection.address} (reconnecting)")
        waiter = _Waiter(trio.current_time() + self._timeout)
        # Queued before sending, and sent in queue order (the send lock is FIFO and
        # nothing checkpoints between the two): replies match callers.
        self._waiting.append(waiter)
        try:
            await self.connection.send_raw(encode_command(*args))
        except BaseException:
            # Part of it may have gone: no later reply could be trusted to match.
            self.closed = True
            await trio.aclose_forcefully(self.connection.stream)
            raise
        await waiter.done.wait()
        if waiter.reply is _LOST:
            why = (f"did not answer within {self._timeout}s" if self.late else
                   "went away")
            raise HubUnavailableError(
                f"Redis at {self.connection.address} {why} while {args[0]!s} waited for "
                "its answer (it may or may not have been done)")
        return waiter.reply
