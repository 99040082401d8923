"""Per-key rate limits, counted in Redis so that every replica and worker shares one count.

A fixed one-minute window per key: ``INCR`` then ``EXPIRE`` on the first hit.
A request whose key is in the shared key cache is counted by the same Redis
call that reads the cache (``KeyVerifier``), so the limit costs no round trip
of its own; otherwise ``hit`` counts it in one pipelined round trip. Over the
limit the request gets 429 with ``Retry-After`` (seconds until the window ends). Without Redis the limit is
not enforced: PostgreSQL stays the truth for everything that matters, and
readiness reports Redis as down, so an operator sees it.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.lib.errors import RateLimitedError
from service.lib.logging import get_logger

log = get_logger(__name__)
WINDOW_SECONDS = 60


class RateLimiter:
    def __init__(self, redis: Redis | None, per_minute: int) -> None:
        self._redis = redis
        self._per_minute = per_minute
        self._warned_at = 0.0

    @property
    def enabled(self) -> bool:
        return self._redis is not None and self._per_minute > 0

    @staticmethod
    def counter(key_id: str, now: float) -> str:
        """The Redis key counting ``key_id``'s requests in the window holding ``now``."""
        return f"delight:rate:{key_id}:{int(now // WINDOW_SECONDS)}"

    async def hit(self, key_id: str) -> None:
        """Count one request of ``key_id`` and refuse it when the window's count is over the limit."""
        if not self.enabled:
            return
        assert self._redis is not None
        now = time.time()
        name = self.counter(key_id, now)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.incr(name)
                pipe.expire(name, WINDOW_SECONDS + 5)
                count, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            if now - self._warned_at > 60:  # once a minute, not once a request
                self._warned_at = now
                log.warning("rate_limit_unavailable", error=type(exc).__name__)
            return
        self.judge(int(count), now)

    def judge(self, count: int, now: float) -> None:
        """Refuse the request that made the window's count ``count``, when that is over the limit."""
        if count > self._per_minute > 0:
            retry_after = max(1, int((now // WINDOW_SECONDS + 1) * WINDOW_SECONDS - now) + 1)
            raise RateLimitedError(
                f"this key made more than {self._per_minute} requests this minute; retry in {retry_after} s",
                retry_after=retry_after,
            )
