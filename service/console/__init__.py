"""The console: Delight in the browser for marketers and analysts, served under ``/console`` by ``delight serve``.

Rule files stay the source of truth; the console shows what is live, tries
drafts, and reads the reports. It is outside the v1 API contract (not in
``openapi.json``): pages for people, not an interface for programs.
"""

from __future__ import annotations

from litestar import Router
from litestar.di import Provide

from service.console.audit import AuditPages
from service.console.auth import EXCEPTION_HANDLERS, provide_signed_in
from service.console.campaigns import CampaignPages, RuleSetPages
from service.console.controller import SignInController
from service.console.drafts import DraftPages
from service.console.reports import ReportPages


def console_router() -> Router:
    return Router(
        path="/console",
        route_handlers=[SignInController, CampaignPages, RuleSetPages, DraftPages, ReportPages, AuditPages],
        dependencies={"user": Provide(provide_signed_in)},
        exception_handlers=EXCEPTION_HANDLERS,
        include_in_schema=False,
        tags=["console"],
    )
