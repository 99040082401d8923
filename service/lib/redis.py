"""Every Redis client Delight makes, from its URL: one server, or the master a set of Sentinels names.

A ``redis://``, ``rediss://`` or ``unix://`` URL is one server, read by
redis-py. A ``redis+sentinel://`` URL (``service.lib.settings.parse_sentinel_url``)
names Sentinels instead: each new connection asks them where the master is,
so once they have promoted a replica the next connection goes to it. The
connections to the old master break when it goes (and Sentinel closes the
clients of a master it demotes), and every caller already takes a Redis that
fails for a Redis that is missing: PostgreSQL answers meanwhile.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import RedisError

from service.lib.logging import get_logger
from service.lib.settings import parse_sentinel_url

log = get_logger(__name__)


def connect(url: str, *, timeout: float) -> Redis:
    """A client for ``url``; ``timeout`` bounds each connect and each reply, the Sentinels' included.

    Nothing connects until the first command. A call that fails is not tried
    again: the callers have PostgreSQL to fall back on, and retrying a Redis
    that is down only makes the request that waits on it slower.
    """
    if not url.lower().startswith("redis+sentinel://"):
        return Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    parsed = parse_sentinel_url(url)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        parsed.sentinels,
        # redis-py's clients retry ten times by default; a Sentinel that is down would hold up every lookup.
        sentinel_kwargs={
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": None,
            "username": parsed.sentinel_username,
            "password": parsed.sentinel_password,
        },
    )
    master = SentinelMaster(sentinel, parsed.service)
    pool = SentinelConnectionPool(  # type: ignore[no-untyped-call]  # it asks ``master`` as it would a Sentinel
        parsed.service,
        master,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
    )
    return Redis.from_pool(pool)


def sentinel_master(redis: Redis) -> SentinelMaster | None:
    """What ``redis`` follows when ``connect`` made it from a Sentinel URL."""
    master = getattr(redis.connection_pool, "sentinel_manager", None)
    return master if isinstance(master, SentinelMaster) else None


async def close(redis: Redis) -> None:
    """Close ``redis``, and its connections to the Sentinels when it has some."""
    await redis.aclose()
    master = sentinel_master(redis)
    if master is not None:
        await master.sentinel.aclose()


class SentinelMaster:
    """The master the Sentinels name for one service, and each change of it this process has seen.

    redis-py's connection pool asks here before each new connection (as it
    would ask its ``Sentinel``), and so do the key check's lean client and
    readiness: whichever notices first, the change is logged once and
    readiness reports it.
    """

    def __init__(self, sentinel: Sentinel, service: str) -> None:
        self.sentinel = sentinel
        self.service = service
        self.address: tuple[str, int] | None = None
        """The master last named; ``None`` until one is."""
        self.previous: tuple[str, int] | None = None
        """The master before the last change seen."""
        self.changed_at: dt.datetime | None = None
        self.failovers = 0
        """Changes of master seen since this process started."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        """The master's address; raises ``MasterNotFoundError`` (a ``ConnectionError``) when no Sentinel answers or
        none names a master that is up, as during a failover."""
        host, port = await self.sentinel.discover_master(service_name)
        address = (str(host), int(port))
        if self.address is not None and address != self.address:
            self.previous, self.changed_at = self.address, dt.datetime.now(dt.UTC)
            self.failovers += 1
            log.warning(
                "redis_master_changed", service=self.service, master=shown(address), previous=shown(self.previous)
            )
        self.address = address
        return address

    async def discover_slaves(self, service_name: str) -> Any:
        """Asked by redis-py only of a pool reading from replicas, which Delight does not make."""
        return await self.sentinel.discover_slaves(service_name)

    async def ask(self) -> tuple[str | None, str | None]:
        """``(host:port, None)`` of the master the Sentinels name now, or ``(None, why)`` when none does."""
        try:
            return shown(await self.discover_master(self.service)), None
        except (RedisError, OSError) as exc:
            return None, str(exc) or type(exc).__name__


def shown(address: tuple[str, int]) -> str:
    """``host:port``, an IPv6 host in brackets."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
