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
