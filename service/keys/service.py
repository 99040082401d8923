"""Creating and checking API keys.

A key looks like ``dlk_<key id>_<secret>``: the key id finds the row, the
256-bit secret is compared against its stored SHA-256 hash in constant time.
A fast hash is right here because the secret is random, not a password.
Verified keys are cached briefly in Redis; without Redis every check goes to
PostgreSQL, which stays the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import cast

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.audit import repository as audit
from service.keys import repository
from service.keys.limits import WINDOW_SECONDS, RateLimiter
from service.keys.scopes import ALL
from service.lib.db import DATABASE_ERRORS
from service.lib.logging import get_logger
from service.lib.resp import LeanRedis, Script
from service.lib.tasks import stop_if_cancelled

log = get_logger(__name__)

PREFIX = "dlk"
KEY_PATTERN = re.compile(r"^dlk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
CACHE_SECONDS = 30
TOUCH_SECONDS = 60  # last_used_at is kept to the minute: one write per key per minute at most


class InvalidScopesError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    name: str
    scopes: frozenset[str]
    counted: int | None = None
    """This request's number in its rate-limit window, when the key check counted it (``None``: not counted)."""
    counted_at: float = 0.0
    """When it was counted (the window is judged at that moment)."""


class _Cached(msgspec.Struct):
    name: str
    secret_hash: str
    scopes: list[str]


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def check_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(ALL))
    if unknown:
        raise InvalidScopesError(f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(ALL)}")
    if not scopes:
        raise InvalidScopesError(f"a key needs at least one scope; known: {', '.join(ALL)}")
    return sorted(set(scopes))


async def create_key(session: AsyncSession, name: str, scopes: list[str], actor: str = "cli") -> tuple[str, str]:
    """Store a new key; returns ``(key_id, key)``. The key is never stored and cannot be shown again."""
    scopes = check_scopes(scopes)
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    await repository.insert(session, key_id=key_id, name=name, secret_hash=_hash(secret), scopes=scopes)
    await audit.record(session, actor, "key.created", key_id, {"name": name, "scopes": scopes})
    return key_id, f"{PREFIX}_{key_id}_{secret}"


async def revoke_key(session: AsyncSession, key_id: str, actor: str = "cli") -> bool:
    """Revoke a key; ``False`` when it is unknown or already revoked. Call ``forget`` after commit."""
    row = await repository.revoke(session, key_id)
    if row is None:
        return False
    await audit.record(session, actor, "key.revoked", key_id, {"name": row.name, "scopes": list(row.scopes)})
    return True


REVOKED = b"revoked"


async def forget(redis: Redis | None, key_id: str) -> bool:
    """Mark a key revoked in the shared cache, so the revocation holds at once on every replica; ``False`` when
    Redis did not take the mark.

    A marker rather than a deletion: a check that read the key from PostgreSQL
    just before the revocation committed only caches what it read if nothing
    is cached (``SET NX``), so it cannot bring the key back.
    """
    if redis is None:
        return True
    try:
        await redis.set(f"delight:key:{key_id}", REVOKED, ex=CACHE_SECONDS * 2)
    except (RedisError, OSError):
        return False
    return True


RESYNC_SECONDS = 1.0


async def keep_revocations(sessions: async_sessionmaker[AsyncSession], redis: Redis, verifier: KeyVerifier) -> None:
    """Every second, mark the keys revoked within the cache's reach as revoked in the shared cache again.

    ``forget`` marks a key at once, but when Redis does not answer then (it
    stalls, or it is restarting), a cache entry written before the revocation
    would come back with Redis and admit the key until it expired. So a worker
    that finds Redis not answering (here, every second, or in a key check)
    stops trusting the cache for as long as an entry lives, checking keys in
    PostgreSQL meanwhile; and every worker of every replica copies the
    revocations PostgreSQL holds into the cache, within a second of Redis
    answering again, for revocations over HTTP and from the command line
    alike. A live entry lasts ``CACHE_SECONDS`` at most, so marking a
    revocation for twice as long covers every entry written before it.
    """
    while True:
        stop_if_cancelled()  # a cancellation some library swallowed still ends the loop
        await asyncio.sleep(RESYNC_SECONDS)
        try:
            async with sessions() as session:
                revoked = await repository.recently_revoked(session, 2 * CACHE_SECONDS)
        except DATABASE_ERRORS:  # the next round tries again
            stop_if_cancelled()
            continue
        try:
            await redis.ping()
            for key_id in revoked:
                await redis.set(f"delight:key:{key_id}", REVOKED, ex=CACHE_SECONDS * 2)
        except (RedisError, OSError):
            stop_if_cancelled()
            verifier.distrust_cache()


# Reads the shared key cache and, when the cached entry is a live key whose
# secret hash matches, counts the request against the key's rate limit: the
# key check and the limit in one round trip. KEYS: the cache entry, the
# window's counter. ARGV: the revoked marker, the secret's hash, the counter's
# lifetime ("0" when limits are off). Returns the cached entry and the count
# (-1 when not counted).
_LOOKUP_AND_COUNT = """
local raw = redis.call('GET', KEYS[1])
if raw and raw ~= ARGV[1] and ARGV[3] ~= '0' then
    local ok, entry = pcall(cjson.decode, raw)
    if ok and type(entry) == 'table' and entry['secret_hash'] == ARGV[2] then
        local n = redis.call('INCR', KEYS[2])
        if n == 1 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
        return {raw, n}
    end
end
return {raw, -1}
"""
_LOOKUP_SCRIPT = Script(_LOOKUP_AND_COUNT)


class KeyVerifier:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis | None,
        limiter: RateLimiter | None = None,
        lean: LeanRedis | None = None,
    ) -> None:
        """``lean``, when given, carries the lookup on every request (the same Redis as ``redis``)."""
        self._sessions = sessions
        self._redis = redis
        self._limiter = limiter
        self._touched: dict[str, float] = {}
        self._distrust_until = 0.0
        self._lookup = redis.register_script(_LOOKUP_AND_COUNT) if redis is not None else None
        self._lean = lean if redis is not None else None

    async def verify(self, token: str) -> Principal | None:
        """The key's holder, or ``None`` for a key that is malformed, unknown, revoked or wrong.

        With a rate limiter, a key found in the shared cache is counted by the
        same call (``Principal.counted``); the caller judges the count.
        """
        match = KEY_PATTERN.match(token)
        if match is None:
            return None
        key_id, secret = match.groups()
        secret_hash = _hash(secret)
        now = time.time()
        cached, counted = await self._cached(key_id, secret_hash.hex(), now)
        if isinstance(cached, bytes):  # revoked
            return None
        if cached is None:
            cached = await self._load(key_id)
            if cached is None:
                return None
        if not hmac.compare_digest(bytes.fromhex(cached.secret_hash), secret_hash):
            return None
        await self._touch(key_id)
        return Principal(
            key_id=key_id,
            name=cached.name,
            scopes=frozenset(cached.scopes),
            counted=counted if counted >= 0 else None,
            counted_at=now,
        )

    async def _touch(self, key_id: str) -> None:
        """Record the key's use, at most once a minute per key (across replicas when Redis answers)."""
        now = time.monotonic()
        if now - self._touched.get(key_id, -TOUCH_SECONDS) < TOUCH_SECONDS:
            return
        self._touched[key_id] = now
        if self._redis is not None:
            try:
                if not await self._redis.set(f"delight:key-used:{key_id}", b"1", nx=True, ex=TOUCH_SECONDS):
                    return
            except RedisError:
                pass
        try:
            async with self._sessions() as session, session.begin():
                await repository.touch(session, key_id)
        except DATABASE_ERRORS as exc:  # bookkeeping: never the reason a request fails
            log.warning("key_touch_failed", key_id=key_id, error=type(exc).__name__)

    def distrust_cache(self) -> None:
        """Redis missed a write or an answer: a revocation may be missing from it for as long as an entry lives."""
        self._distrust_until = time.monotonic() + 2 * CACHE_SECONDS

    async def _cached(self, key_id: str, secret_hash: str, now: float) -> tuple[_Cached | bytes | None, int]:
        if self._lookup is None or time.monotonic() < self._distrust_until:
            return None, -1
        limiter = self._limiter
        lifetime = WINDOW_SECONDS + 5 if limiter is not None and limiter.enabled else 0
        keys = [f"delight:key:{key_id}", RateLimiter.counter(key_id, now)]
        args: list[bytes | str | int] = [REVOKED, secret_hash, lifetime]
        try:
            if self._lean is not None:
                raw, counted = await self._lean.eval(_LOOKUP_SCRIPT, keys, args)  # type: ignore[misc]
            else:
                raw, counted = await self._lookup(keys=keys, args=args)
        except (RedisError, OSError):
            self.distrust_cache()
            return None, -1
        if raw is None or raw == REVOKED:
            return raw, -1
        return msgspec.json.decode(cast("bytes", raw), type=_Cached), int(counted)

    async def _load(self, key_id: str) -> _Cached | None:
        async with self._sessions() as session:
            row = await repository.active(session, key_id)
        if row is None:
            return None
        cached = _Cached(name=row.name, secret_hash=row.secret_hash.hex(), scopes=list(row.scopes))
        if self._redis is not None:
            with contextlib.suppress(RedisError):
                await self._redis.set(f"delight:key:{key_id}", msgspec.json.encode(cached), ex=CACHE_SECONDS, nx=True)
        return cached
