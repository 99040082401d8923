"""Database plumbing: metadata, engine, sessions and migrations.

All tables share one ``MetaData`` with a naming convention so that
constraint names (and so migrations) stay stable. A unit of work is one
transaction committed in exactly one place: ``transaction`` below for a
session (the request's ``db_session`` dependency uses it), or
``pg.transaction`` for the event path on asyncpg.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import msgspec
from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData
from sqlalchemy.dialects.postgresql.base import ischema_names
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import UserDefinedType

from service.lib.errors import ConflictError, DelightError, ServiceUnavailableError, ValidationError
from service.lib.settings import DatabaseSettings

# What "the database cannot be reached right now" looks like. Errors raised
# while asyncpg opens a connection (the server shutting down or starting up,
# the socket closed under it) come up unwrapped by SQLAlchemy.
DATABASE_DOWN: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    OSError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    # a connection the server ended under a request can leave asyncpg's protocol mid-operation
    asyncpg.exceptions.InternalClientError,
)
SERIALIZATION_FAILURE = "40001"  # also what a standby's "conflict with recovery" cancels a query with
# For loops that must outlive any database trouble.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, *DATABASE_DOWN)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Xid8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id (``xid8``); asyncpg reads it as an ``int``."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


class PgSnapshot(UserDefinedType[tuple[int, int, tuple[int, ...]]]):
    """A ``pg_snapshot``: which transactions had committed when it was taken; asyncpg reads ``(xmin, xmax, xip)``."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "pg_snapshot"


# So that reflection (Alembic's comparison of models and migrations) knows them too.
ischema_names["xid8"] = Xid8
ischema_names["pg_snapshot"] = PgSnapshot


def create_engine(url: str, settings: DatabaseSettings | None = None) -> AsyncEngine:
    settings = settings or DatabaseSettings()
    connect_args: dict[str, Any] = {"server_settings": {"application_name": "delight"}}
    timeouts: dict[str, Any] = {}
    if settings.timeout is not None:
        # Bounded waits, enforced by the client: a server that has stopped answering (frozen, a network that
        # drops packets) cannot enforce a statement_timeout of its own. Past them the request is a 503.
        connect_args |= {"timeout": settings.timeout, "command_timeout": settings.timeout}
        timeouts = {"pool_timeout": settings.timeout}
    return create_async_engine(
        url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        **timeouts,
        # No ping before each checkout: it costs a round trip per request. A
        # connection the server dropped fails its statement instead, which is a
        # 503 the client retries, and SQLAlchemy then replaces every pooled
        # connection older than that failure.
        pool_pre_ping=False,
        hide_parameters=True,  # parameters hold personal data; keep them out of errors and logs
        pool_recycle=1800,
        connect_args=connect_args,
        json_serializer=json_text,
        json_deserializer=msgspec.json.decode,
    )


_JSON = msgspec.json.Encoder(decimal_format="number")


def json_text(value: Any) -> str:
    """JSONB parameters as text, through msgspec rather than the standard library's slower encoder.

    Decimals are written as JSON numbers, so amounts stay numbers in JSONB.
    """
    return _JSON.encode(value).decode()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@contextlib.asynccontextmanager
async def transaction(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: committed when the block ends normally, rolled back on any error.

    Services and repositories never commit; they only execute and flush (the event path: ``pg.transaction``).
    """
    async with maker() as session, session.begin():
        yield session


def translate_error(exc: Exception) -> DelightError | None:
    """The client-facing error for a database failure, or ``None`` when it is a bug to surface as a 500.

    Only a database that cannot be reached, or one that cancelled the query
    in a conflict (a hot standby does when replay would remove rows the query
    still reads), is worth retrying (503); a value PostgreSQL cannot store is
    the client's to fix (422); a constraint violation is a conflict with what
    is stored (409).
    """
    if isinstance(exc, DATABASE_DOWN) or getattr(exc, "connection_invalidated", False):
        return ServiceUnavailableError("the database is unavailable; retry shortly")
    if getattr(getattr(exc, "orig", exc), "sqlstate", None) == SERIALIZATION_FAILURE:
        return ServiceUnavailableError("the database cancelled the query in a conflict; retry shortly")
    if isinstance(exc, DataError | asyncpg.exceptions.DataError):
        return ValidationError("a value is out of the range that can be stored")
    if isinstance(exc, IntegrityError | asyncpg.exceptions.IntegrityConstraintViolationError):
        return ConflictError("the request conflicts with stored data")
    return None


def asyncpg_connect_args(url: str) -> dict[str, Any]:
    """``asyncpg.connect`` keyword arguments for a ``postgresql+asyncpg://`` URL (TCP or a socket ``host``)."""
    parsed = make_url(url)
    return {
        "user": parsed.username,
        "password": parsed.password,
        "host": parsed.query.get("host") or parsed.host,
        "port": parsed.port,
        "database": parsed.database,
    }


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade_database(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``; safe to call from several processes at once."""
    command.upgrade(alembic_config(url), revision)


async def upgrade_database_async(url: str, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade_database, url, revision)
