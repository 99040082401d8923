"""SQL for API keys."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

INSERT = text("INSERT INTO api_keys (key_id, name, secret_hash, scopes) VALUES (:key_id, :name, :hash, :scopes)")
ACTIVE = text("SELECT name, secret_hash, scopes FROM api_keys WHERE key_id = :key_id AND revoked_at IS NULL")


async def insert(session: AsyncSession, *, key_id: str, name: str, secret_hash: bytes, scopes: list[str]) -> None:
    await session.execute(INSERT, {"key_id": key_id, "name": name, "hash": secret_hash, "scopes": scopes})


async def active(session: AsyncSession, key_id: str) -> Row[Any] | None:
    """The key's name, secret hash and scopes, unless it is unknown or revoked."""
    return (await session.execute(ACTIVE, {"key_id": key_id})).one_or_none()


LIST = text(
    "SELECT key_id, name, scopes, created_at, last_used_at, revoked_at FROM api_keys ORDER BY created_at, key_id"
)
REVOKE = text(
    """
    UPDATE api_keys SET revoked_at = clock_timestamp() WHERE key_id = :key_id AND revoked_at IS NULL
    RETURNING key_id, name, scopes
    """
)
EXISTS = text("SELECT revoked_at FROM api_keys WHERE key_id = :key_id")
RECENTLY_REVOKED = text(
    "SELECT key_id FROM api_keys WHERE revoked_at > clock_timestamp() - make_interval(secs => :seconds)"
)
TOUCH = text("UPDATE api_keys SET last_used_at = clock_timestamp() WHERE key_id = :key_id")


async def all_keys(session: AsyncSession) -> list[Row[Any]]:
    return list((await session.execute(LIST)).all())


async def revoke(session: AsyncSession, key_id: str) -> Row[Any] | None:
    """Revoke the key; its row, or ``None`` when it is unknown or already revoked."""
    return (await session.execute(REVOKE, {"key_id": key_id})).one_or_none()


async def known(session: AsyncSession, key_id: str) -> bool:
    return (await session.execute(EXISTS, {"key_id": key_id})).one_or_none() is not None


async def touch(session: AsyncSession, key_id: str) -> None:
    await session.execute(TOUCH, {"key_id": key_id})


async def recently_revoked(session: AsyncSession, seconds: float) -> list[str]:
    """The keys revoked in the last ``seconds``."""
    return list((await session.execute(RECENTLY_REVOKED, {"seconds": seconds})).scalars())
