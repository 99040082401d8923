"""Per-key rate limits, counted in Redis so that every replica and worker shares one count.

A fixed one-minute window per key: ``INCR`` then ``EXPIRE`` on the first hit,
one round trip (pipelined). Over the limit the request gets 429 with
``Retry-After`` (seconds until the window ends). Without Redis the limit is
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

    async def hit(self, key_id: str) -> None:
        if self._redis is None or self._per_minute <= 0:
            return
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        name = f"delight:rate:{key_id}:{window}"
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
        if int(count) > self._per_minute:
            retry_after = max(1, int((window + 1) * WINDOW_SECONDS - now) + 1)
            raise RateLimitedError(
                f"this key made more than {self._per_minute} requests this minute; retry in {retry_after} s",
                retry_after=retry_after,
            )
