"""Console sign-ins: server-side sessions and one-time sign-in links, in PostgreSQL.

The cookie holds a random 256-bit token; the table holds its SHA-256 only.
Each request finds its session, checks that it is neither idle too long nor
too old and that its key is not revoked, and marks it seen, in one statement:
revoking the key ends its sessions at once, on every replica.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.audit import repository as audit

LIFETIME = dt.timedelta(hours=12)
"""However active, a session ends this long after its sign-in."""
LINK_LIFETIME = dt.timedelta(minutes=15)
"""A one-time sign-in link is good for this long, and once."""

START = text("INSERT INTO console_sessions (session_hash, key_id, csrf_token) VALUES (:hash, :key_id, :csrf)")

SEEN = text(
    """
    UPDATE console_sessions AS s SET last_seen_at = now()
    FROM api_keys AS k
    WHERE s.session_hash = :hash AND s.ended_at IS NULL
      AND s.last_seen_at > now() - CAST(:idle AS interval) AND s.created_at > now() - CAST(:lifetime AS interval)
      AND k.key_id = s.key_id AND k.revoked_at IS NULL
    RETURNING s.key_id, k.name, k.scopes, s.csrf_token
    """
)

END = text(
    "UPDATE console_sessions SET ended_at = now() WHERE session_hash = :hash AND ended_at IS NULL RETURNING key_id"
)

NEW_LINK = text(
    "INSERT INTO console_links (token_hash, key_id, expires_at) "
    "VALUES (:hash, :key_id, now() + CAST(:lifetime AS interval))"
)

USE_LINK = text(
    """
    UPDATE console_links AS l SET used_at = now()
    FROM api_keys AS k
    WHERE l.token_hash = :hash AND l.used_at IS NULL AND l.expires_at > now()
      AND k.key_id = l.key_id AND k.revoked_at IS NULL
    RETURNING l.key_id, k.name, k.scopes
    """
)

LINK_OWNER = text(
    """
    SELECT k.key_id, k.name, k.scopes FROM console_links AS l JOIN api_keys AS k USING (key_id)
    WHERE l.token_hash = :hash AND l.used_at IS NULL AND l.expires_at > now() AND k.revoked_at IS NULL
    """
)

KEY = text("SELECT key_id, name, scopes FROM api_keys WHERE key_id = :key_id AND revoked_at IS NULL")


@dataclass(frozen=True, slots=True)
class SignedIn:
    """The person at the console: who signed in with which key, what it may do, and the session's form token."""

    key_id: str
    name: str
    scopes: frozenset[str]
    csrf: str
    session_hash: bytes

    @property
    def actor(self) -> str:
        return f"key {self.key_id}"


@dataclass(frozen=True, slots=True)
class KeyHolder:
    key_id: str
    name: str
    scopes: frozenset[str]


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def session_label(session_hash: bytes) -> str:
    """A name for a session in the audit log that cannot be turned back into its cookie."""
    return session_hash.hex()[:12]


async def start(db: AsyncSession, holder: KeyHolder, via: str) -> tuple[str, SignedIn]:
    """A new session for ``holder``: ``(cookie token, session)``. ``via`` says how they signed in."""
    token = secrets.token_urlsafe(32)
    hashed = token_hash(token)
    csrf = secrets.token_urlsafe(32)
    await db.execute(START, {"hash": hashed, "key_id": holder.key_id, "csrf": csrf})
    await audit.record(
        db, f"key {holder.key_id}", "console.signed_in", holder.key_id, {"via": via, "session": session_label(hashed)}
    )
    return token, SignedIn(holder.key_id, holder.name, holder.scopes, csrf, hashed)


async def find(db: AsyncSession, token: str, idle: dt.timedelta) -> SignedIn | None:
    """The live session of this cookie token, marked seen now; ``None`` when there is none (ended, idle for longer
    than ``idle``, older than ``LIFETIME``, or its key revoked)."""
    hashed = token_hash(token)
    row = (await db.execute(SEEN, {"hash": hashed, "idle": idle, "lifetime": LIFETIME})).one_or_none()
    if row is None:
        return None
    return SignedIn(row.key_id, row.name, frozenset(row.scopes), row.csrf_token, hashed)


async def end(db: AsyncSession, signed_in: SignedIn) -> None:
    """Sign out: the session's cookie signs no one in from now on."""
    if (await db.execute(END, {"hash": signed_in.session_hash})).one_or_none() is not None:
        await audit.record(
            db,
            signed_in.actor,
            "console.signed_out",
            signed_in.key_id,
            {"session": session_label(signed_in.session_hash)},
        )


async def key_holder(db: AsyncSession, key_id: str) -> KeyHolder | None:
    row = (await db.execute(KEY, {"key_id": key_id})).one_or_none()
    return None if row is None else KeyHolder(row.key_id, row.name, frozenset(row.scopes))


async def new_link(db: AsyncSession, key_id: str, actor: str = "cli") -> str:
    """A one-time sign-in token for the key ``key_id`` (which must exist and not be revoked)."""
    token = secrets.token_urlsafe(32)
    await db.execute(NEW_LINK, {"hash": token_hash(token), "key_id": key_id, "lifetime": LINK_LIFETIME})
    await audit.record(db, actor, "console.link_created", key_id, {"expires_in_minutes": LINK_LIFETIME.seconds // 60})
    return token


async def link_owner(db: AsyncSession, token: str) -> KeyHolder | None:
    """Whose the link is, while it can still be used, without using it."""
    row = (await db.execute(LINK_OWNER, {"hash": token_hash(token)})).one_or_none()
    return None if row is None else KeyHolder(row.key_id, row.name, frozenset(row.scopes))


async def use_link(db: AsyncSession, token: str) -> KeyHolder | None:
    """Use the link up; its key's holder, or ``None`` for a link unknown, used, expired or of a revoked key."""
    row = (await db.execute(USE_LINK, {"hash": token_hash(token)})).one_or_none()
    return None if row is None else KeyHolder(row.key_id, row.name, frozenset(row.scopes))
