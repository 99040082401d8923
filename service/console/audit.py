"""The audit log in the browser (scope ``rules:admin``, as ``GET /v1/audit``): newest first, by action, as CSV."""

from __future__ import annotations

import json
from html import escape
from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import Parameter

from service.audit import repository
from service.console.auth import need
from service.console.page import csv_download, page
from service.console.sessions import SignedIn
from service.keys.scopes import RULES_ADMIN
from service.reports.cells import to_csv

PAGE_SIZE = 100
CSV_ROWS = 10_000
ACTIONS = (
    "rules.activated",
    "rules.refused",
    "key.created",
    "key.revoked",
    "points.adjusted",
    "customer.erased",
    "console.signed_in",
    "console.signed_out",
    "console.link_created",
)
COLUMNS = ("entry_id", "at", "actor", "action", "subject", "details")

Before = Annotated[int | None, Parameter(ge=1, le=2**63 - 1)]
Action = Annotated[str | None, Parameter(max_length=50)]


def _entries(rows: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "entry_id": r.entry_id,
            "at": r.at,
            "actor": r.actor,
            "action": r.action,
            "subject": r.subject,
            "details": json.dumps(r.details, sort_keys=True, ensure_ascii=False),
        }
        for r in rows
    ]


def _filter_form(action: str | None) -> str:
    options = "".join(
        f'<option value="{a}"{" selected" if a == action else ""}>{a}</option>' for a in ("", *ACTIONS)
    ).replace('<option value="">', '<option value="">every action')
    return (
        '<form method="get" action="/console/audit" class="row">'
        f'<div><label for="action">Action</label><select id="action" name="action">{options}</select></div>'
        '<div><button type="submit">Show</button></div></form>'
    )


class AuditPages(Controller):
    path = "/"

    @get("/audit")
    async def audit(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[SignedIn],
        action: Action = None,
        before: Before = None,
    ) -> Response[str]:
        need(user, RULES_ADMIN)
        async with request.app.state.reports_db.reading() as db:
            rows = _entries(await repository.page(db, before=before, action=action or None, limit=PAGE_SIZE))
        body = [
            "<h1>Audit log</h1>",
            '<p class="sub">Who changed rules, keys, balances and customers, and who signed in to the console; '
            "newest first.</p>",
            _filter_form(action),
            f'<p><a href="/console/audit.csv?{urlencode({"action": action or ""})}" download>Download as CSV</a> '
            f"(the newest {CSV_ROWS:,} entries)</p>",
        ]
        if not rows:
            body.append("<p>No entries.</p>")
        else:
            body.append(
                '<div class="table-wrap"><table><thead><tr><th class="text">when</th><th class="text">who</th>'
                '<th class="text">action</th><th class="text">subject</th><th class="text">details</th></tr></thead>'
                "<tbody>"
            )
            body.extend(
                f'<tr data-entry="{r["entry_id"]}"><td class="text">{r["at"]:%Y-%m-%d %H:%M:%S %Z}</td>'
                f'<td class="text">{escape(r["actor"])}</td><td class="text">{escape(r["action"])}</td>'
                f'<td class="text">{escape(r["subject"] or "")}</td>'
                f'<td class="text"><code>{escape(r["details"])}</code></td></tr>'
                for r in rows
            )
            body.append("</tbody></table></div>")
            if len(rows) == PAGE_SIZE:
                older = urlencode({"action": action or "", "before": rows[-1]["entry_id"]})
                body.append(f'<p><a href="/console/audit?{older}">Older entries</a></p>')
        return page("Audit log", "".join(body), user, "audit")

    @get("/audit.csv")
    async def audit_csv(
        self, request: Request[Any, Any, Any], user: NamedDependency[SignedIn], action: Action = None
    ) -> Response[str]:
        need(user, RULES_ADMIN)
        async with request.app.state.reports_db.reading() as db:
            rows = _entries(await repository.page(db, before=None, action=action or None, limit=CSV_ROWS))
        return csv_download(to_csv(COLUMNS, rows), "audit.csv")
