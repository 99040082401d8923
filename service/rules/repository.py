"""SQL for stored rule sets."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from service.audit import repository as audit
from service.rules.ruleset import RuleSet

ACTIVATE = text(
    """
    INSERT INTO rule_sets (version, files, activated_at, activated_by)
    VALUES (:version, :files, clock_timestamp(), :actor)
    ON CONFLICT (version) DO UPDATE SET activated_at = clock_timestamp(), activated_by = :actor
    """
).bindparams(bindparam("files", type_=JSONB))

ACTIVE = text("SELECT version, files FROM rule_sets WHERE activated_at IS NOT NULL ORDER BY activated_at DESC LIMIT 1")
ACTIVE_VERSION = text("SELECT version FROM rule_sets WHERE activated_at IS NOT NULL ORDER BY activated_at DESC LIMIT 1")

AWARDS_BETWEEN = text(
    """
    SELECT campaign, count(*) AS n FROM awards
    WHERE issued_at >= :start AND issued_at < :end
    GROUP BY campaign
    """
)

HISTORY = text(
    """
    SELECT version, first_loaded_at, activated_at, activated_by FROM rule_sets
    ORDER BY activated_at DESC NULLS LAST, first_loaded_at DESC
    LIMIT :limit
    """
)

STORED = text(
    "SELECT version, files, first_loaded_at, activated_at, activated_by FROM rule_sets WHERE version = :version"
)

LAST_ACTIVATED = text("SELECT max(activated_at) FROM rule_sets")

CAMPAIGN_DAYS = text(
    """
    SELECT CAST(issued_at AT TIME ZONE CAST(:zone AS text) AS date) AS day, count(*) AS awards, sum(cost) AS cost
    FROM awards WHERE campaign = :campaign
    GROUP BY 1 ORDER BY 1
    """
)

GIFT_DAYS = text(
    """
    SELECT CAST(issued_at AT TIME ZONE CAST(:zone AS text) AS date) AS day, gift_id, count(*) AS awards
    FROM awards WHERE gift_id = ANY(:gifts)
    GROUP BY 1, 2 ORDER BY 1
    """
)


async def activate(session: AsyncSession, rule_set: RuleSet, actor: str) -> None:
    """Store the rule set with its text (every award can be traced to it) and make it the one in force.

    A change of version is written to the audit log with who made it and what it replaced.
    """
    previous = await active_version(session)
    await session.execute(ACTIVATE, {"version": rule_set.version, "files": rule_set.files, "actor": actor})
    if previous != rule_set.version:
        await audit.record(
            session,
            actor,
            "rules.activated",
            rule_set.version,
            {"previous_version": previous, "campaigns": len(rule_set.campaigns), "rules": rule_set.rule_count},
        )


async def active(session: AsyncSession) -> tuple[str, dict[str, Any]] | None:
    """The version in force and its files."""
    row = (await session.execute(ACTIVE)).one_or_none()
    return None if row is None else (row.version, dict(row.files))


async def active_version(session: AsyncSession) -> str | None:
    result: str | None = (await session.execute(ACTIVE_VERSION)).scalar_one_or_none()
    return result


async def awards_between(session: AsyncSession, first: dt.date, last: dt.date, zone: dt.tzinfo) -> dict[str, int]:
    """Awards per campaign whose event happened from day ``first`` to day ``last`` (both included) in the shop's
    time zone."""
    start = dt.datetime(first.year, first.month, first.day, tzinfo=zone)
    end = dt.datetime(last.year, last.month, last.day, tzinfo=zone) + dt.timedelta(days=1)
    rows = (await session.execute(AWARDS_BETWEEN, {"start": start, "end": end})).all()
    return {row.campaign: int(row.n) for row in rows}


async def history(session: AsyncSession, limit: int) -> list[Row[Any]]:
    """The stored versions, the one in force first, then by when each was last put in force."""
    return list((await session.execute(HISTORY, {"limit": limit})).all())


async def stored(session: AsyncSession, version: str) -> Row[Any] | None:
    """A stored version with its files (by name) and when it was last put in force; ``None`` for one never stored."""
    return (await session.execute(STORED, {"version": version})).one_or_none()


async def last_activated_at(session: AsyncSession) -> dt.datetime | None:
    """When a rule set was last put in force: by a reload that went through, or a process that started."""
    at: dt.datetime | None = (await session.execute(LAST_ACTIVATED)).scalar_one_or_none()
    return at


async def campaign_days(session: AsyncSession, campaign: str, timezone: str) -> list[Row[Any]]:
    """``(day, awards, cost)`` for each day (in ``timezone``) on which the campaign gave anything."""
    return list((await session.execute(CAMPAIGN_DAYS, {"campaign": campaign, "zone": timezone})).all())


async def gift_days(session: AsyncSession, gift_ids: list[str], timezone: str) -> list[Row[Any]]:
    """``(day, gift_id, awards)``: how many of each gift were given each day, by any campaign."""
    if not gift_ids:
        return []
    return list((await session.execute(GIFT_DAYS, {"gifts": gift_ids, "zone": timezone})).all())
