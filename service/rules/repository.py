"""SQL for stored rule sets."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from service.rules.ruleset import RuleSet

SAVE = text(
    "INSERT INTO rule_sets (version, files) VALUES (:version, :files) ON CONFLICT (version) DO NOTHING"
).bindparams(bindparam("files", type_=JSONB))


async def save(session: AsyncSession, rule_set: RuleSet) -> None:
    """Keep the rule set's text, so every award can be traced to the rules that gave it."""
    await session.execute(SAVE, {"version": rule_set.version, "files": rule_set.files})


AWARDS_ON = text(
    """
    SELECT campaign, count(*) AS n FROM awards
    WHERE issued_at >= :start AND issued_at < :end
    GROUP BY campaign
    """
)


async def awards_on(session: AsyncSession, day: dt.date, zone: dt.tzinfo) -> dict[str, int]:
    """Awards per campaign whose event happened on ``day`` in the shop's time zone."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=zone)
    end = start + dt.timedelta(days=1)
    rows = (await session.execute(AWARDS_ON, {"start": start, "end": end})).all()
    return {row.campaign: int(row.n) for row in rows}
