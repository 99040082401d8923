"""``GET /v1/audit``: the audit log, newest first (scope ``rules:admin``)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import Parameter
from msgspec import Struct
from sqlalchemy.ext.asyncio import AsyncSession

from service.audit import repository
from service.keys.guards import requires
from service.keys.scopes import RULES_ADMIN
from service.lib.openapi import API_KEY, problem_responses


class AuditEntry(Struct):
    entry_id: int
    at: dt.datetime
    actor: str  # "key <key id>", "cli", "startup" or "file watcher"
    action: str  # rules.activated, rules.refused, key.created, key.revoked, points.adjusted, customer.erased, console.*
    subject: str | None
    details: dict[str, Any]


class AuditPage(Struct):
    entries: list[AuditEntry]
    next_before: int | None  # pass as `before` for the next (older) page


class AuditController(Controller):
    path = "/v1/audit"
    tags = ["audit"]
    security = [API_KEY]
    guards = [requires(RULES_ADMIN)]

    @get(
        "/",
        operation_id="getAuditLog",
        summary="Who changed rules, keys, balances and customers, and when; newest first",
        responses=problem_responses(400, 401, 403, 503),
    )
    async def audit_log(
        self,
        db_session: NamedDependency[AsyncSession],
        before: Annotated[
            int | None, Parameter(ge=1, le=2**63 - 1, description="Only entries older than this id.")
        ] = None,
        action: Annotated[str | None, Parameter(max_length=50, description="Only this action.")] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 100,
    ) -> AuditPage:
        rows = await repository.page(db_session, before=before, action=action, limit=limit)
        entries = [
            AuditEntry(
                entry_id=r.entry_id, at=r.at, actor=r.actor, action=r.action, subject=r.subject, details=r.details
            )
            for r in rows
        ]
        return AuditPage(entries=entries, next_before=entries[-1].entry_id if len(entries) == limit else None)
