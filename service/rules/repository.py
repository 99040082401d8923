"""SQL for stored rule sets."""

from __future__ import annotations

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
