"""A lean Redis client for the one call on every request's path: the API key check.

redis-py spends about 0.4 ms of CPU on each call through its connection pool,
retries and instrumentation, more than the rest of the key check and the
rate limit together. Here one connection per worker carries every such call,
pipelined: commands go out as they come, replies come back in the same
order, and each resolves the future of the command it answers.

Failures are redis-py's exceptions (``ConnectionError``, ``TimeoutError``,
``ResponseError``), so callers handle them as before. A call that times out
or a connection that breaks fails every call waiting on it and drops the
connection (a late reply would answer the wrong call); the next call
connects again. It is made from the redis-py client it stands in for
(``for_client``) and goes where that one goes: for a client of a
Sentinel-managed master, each connect asks the Sentinels where the master is,
so after a failover the first call that finds the old connection broken
leads to the new master. TLS (``rediss://``) is not spoken here:
``for_client`` returns ``None`` and the caller keeps to redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, cast

from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Reply: TypeAlias = bytes | int | list[Any] | ResponseError | None


class _Incomplete(Exception):
    """The buffer ends before the reply does."""


def encode(*parts: bytes | str | int) -> bytes:
    """A command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def parse(buffer: bytes | bytearray, start: int = 0) -> tuple[Reply, int]:
    """One RESP2 reply from ``buffer`` at ``start``: the value and where the next reply starts.

    An error reply is returned as a ``ResponseError``, not raised: it answers
    one call and leaves the connection good. Raises ``_Incomplete`` when the
    reply has not fully arrived.
    """
    end = buffer.find(b"\r\n", start)
    if end < 0:
        raise _Incomplete
    kind, line = buffer[start : start + 1], bytes(buffer[start + 1 : end])
    after = end + 2
    if kind == b"$":
        length = int(line)
        if length < 0:
            return None, after
        if len(buffer) < after + length + 2:
            raise _Incomplete
        return bytes(buffer[after : after + length]), after + length + 2
    if kind == b":":
        return int(line), after
    if kind == b"+":
        return line, after
    if kind == b"-":
        return ResponseError(line.decode(errors="replace")), after
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, after
        items = []
        for _ in range(count):
            item, after = parse(buffer, after)
            items.append(item)
        return items, after
    raise RedisConnectionError(f"unexpected reply from Redis: {bytes(buffer[start:end])[:40]!r}")


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[asyncio.Future[Reply]] = deque()
        self.buffer = bytearray()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        position = 0
        try:
            while self.waiting:
                reply, position = parse(self.buffer, position)
                future = self.waiting.popleft()
                if not future.done():  # a cancelled call's reply is read and dropped
                    future.set_result(reply)
        except _Incomplete:
            pass
        except (ValueError, RedisConnectionError) as exc:
            self.fail(RedisConnectionError(f"unreadable reply from Redis: {exc}"))
            return
        if position:
            del self.buffer[:position]

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"the connection to Redis was lost: {exc or 'closed by the server'}"))

    def fail(self, error: Exception) -> None:
        """Fail every waiting call and close: nothing later on this connection can be trusted."""
        self.closed = True
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    def send(self, command: bytes) -> asyncio.Future[Reply]:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise RedisConnectionError("the connection to Redis is closed")
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        try:
            self.transport.write(command)
        except (RuntimeError, OSError) as exc:  # uvloop refuses a write on a handle it has closed
            self.fail(RedisConnectionError(f"could not write to Redis: {exc}"))
            raise RedisConnectionError(f"could not write to Redis: {exc}") from exc
        self.waiting.append(future)
        return future


class LeanRedis:
    """Pipelined calls on one connection, opened on first use and again after a failure."""

    def __init__(
        self, kwargs: dict[str, Any], timeout: float, locate: Callable[[], Awaitable[tuple[str, int]]] | None = None
    ) -> None:
        """``kwargs`` as redis-py's connections take them; ``locate``, when given, says where to connect each time."""
        self._address = kwargs
        self._locate = locate
        self._timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._hello: list[bytes] = []
        if kwargs.get("password"):  # as redis-py: an empty password sends no AUTH
            user = kwargs.get("username")
            self._hello.append(encode("AUTH", user, kwargs["password"]) if user else encode("AUTH", kwargs["password"]))
        if kwargs.get("db"):
            self._hello.append(encode("SELECT", int(kwargs["db"])))

    @classmethod
    def for_client(cls, redis: Redis, timeout: float) -> LeanRedis | None:
        """A client of the same Redis as ``redis``, with its database and credentials, or ``None`` where that needs
        what this client does not speak (TLS)."""
        pool = redis.connection_pool
        if issubclass(pool.connection_class, SSLConnection):
            return None
        kwargs = {**pool.connection_kwargs, "connection_class": pool.connection_class}
        locate = pool.get_master_address if isinstance(pool, SentinelConnectionPool) else None
        return cls(kwargs, timeout, locate)

    async def execute(self, command: bytes) -> Reply:
        """Send one encoded command; its reply (a ``ResponseError`` reply is raised)."""
        protocol = await self._connected()
        future = protocol.send(command)
        timer = asyncio.get_running_loop().call_later(self._timeout, self._expire, protocol, future)
        try:
            reply = await future
        finally:
            timer.cancel()
        if isinstance(reply, ResponseError):
            if str(reply).startswith("READONLY"):
                # A master demoted to a replica: the next connect asks the Sentinels again, as redis-py's does.
                protocol.fail(RedisConnectionError(f"Redis is a replica now: {reply}"))
                raise RedisConnectionError(f"Redis is a replica now: {reply}")
            raise reply
        return reply

    async def eval(self, script: Script, keys: list[str], args: list[bytes | str | int]) -> Reply:
        """Run a Lua script by its hash, loading it first when this Redis does not know it yet."""
        try:
            return await self.execute(encode("EVALSHA", script.sha, len(keys), *keys, *args))
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.execute(encode("EVAL", script.source, len(keys), *keys, *args))

    async def close(self) -> None:
        connecting, self._connecting = self._connecting, None
        if connecting is not None and not connecting.done():
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                await connecting
        if self._protocol is not None:
            self._protocol.fail(RedisConnectionError("the client was closed"))
            self._protocol = None

    def _expire(self, protocol: _Protocol, future: asyncio.Future[Reply]) -> None:
        if not future.done():
            protocol.fail(RedisTimeoutError(f"Redis did not answer within {self._timeout} s"))

    async def _connected(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            return protocol
        connecting = self._connecting
        if connecting is None:
            # One connect for every call that arrives meanwhile; it forgets itself when done, even when
            # every call that waited for it was cancelled.
            connecting = self._connecting = asyncio.ensure_future(self._connect())
            connecting.add_done_callback(self._connected_or_not)
        return await asyncio.shield(connecting)

    def _connected_or_not(self, connecting: asyncio.Future[_Protocol]) -> None:
        if self._connecting is connecting:
            self._connecting = None
        if not connecting.cancelled():
            connecting.exception()  # retrieved here, so an attempt nobody awaited is not reported as lost

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        address = self._address
        protocol: _Protocol | None = None
        try:
            async with asyncio.timeout(self._timeout):
                if self._locate is not None:
                    host, port = await self._locate()
                    _, protocol = await loop.create_connection(_Protocol, host, port)
                elif address.get("connection_class") is UnixDomainSocketConnection:
                    _, protocol = await loop.create_unix_connection(_Protocol, address["path"])
                else:
                    _, protocol = await loop.create_connection(
                        _Protocol, address.get("host", "localhost"), int(address.get("port", 6379))
                    )
                for command in self._hello:
                    reply = await protocol.send(command)
                    if isinstance(reply, ResponseError):
                        raise RedisConnectionError(f"Redis refused the connection: {reply}")
        except BaseException as exc:
            if protocol is not None:
                protocol.fail(RedisConnectionError("the connection was not set up"))
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError(f"could not connect to Redis within {self._timeout} s") from exc
            if isinstance(exc, OSError):
                raise RedisConnectionError(f"could not connect to Redis: {exc}") from exc
            raise
        self._protocol = protocol
        return protocol


class Script:
    """A Lua script and its SHA-1, as ``EVALSHA`` names it."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
