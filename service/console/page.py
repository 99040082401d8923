"""The console's pages: one shell (the sections a key may open, who is signed in, sign-out) around each page.

Pages are HTML rendered on the server, with no script at all: they work
offline, with the keyboard, and under a policy that lets nothing run.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from litestar import Response
from litestar.enums import MediaType

from service.console.sessions import SignedIn
from service.keys.scopes import REPORTS_READ, RULES_ADMIN

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    title: str
    path: str
    scope: str


SECTIONS = (
    Section("campaigns", "Campaigns", "/console/campaigns", RULES_ADMIN),
    Section("rules", "Rule sets", "/console/rules", RULES_ADMIN),
    Section("drafts", "Try a draft", "/console/drafts", RULES_ADMIN),
    Section("reports", "Reports", "/console/reports", REPORTS_READ),
    Section("audit", "Audit log", "/console/audit", RULES_ADMIN),
)


def sections_for(user: SignedIn) -> list[Section]:
    return [s for s in SECTIONS if s.scope in user.scopes]


def csrf_field(user: SignedIn) -> str:
    """The hidden field every form of a signed-in page carries."""
    return f'<input type="hidden" name="csrf" value="{escape(user.csrf)}">'


def _header(user: SignedIn | None, current: str | None) -> str:
    if user is None:
        return '<header class="top"><a class="brand" href="/console">Delight</a></header>'
    links = "".join(
        f'<a href="{s.path}"{" aria-current=page" if s.name == current else ""}>{escape(s.title)}</a>'
        for s in sections_for(user)
    )
    return (
        '<header class="top"><a class="brand" href="/console">Delight</a>'
        f'<nav aria-label="Sections">{links}</nav>'
        f'<span class="who">Signed in with <strong data-field="key_name">{escape(user.name)}</strong></span>'
        f'<form method="post" action="/console/logout">{csrf_field(user)}'
        '<button class="quiet" type="submit">Sign out</button></form></header>'
    )


def document(title: str, body: str, user: SignedIn | None, current: str | None = None) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} — Delight</title>"
        '<link rel="stylesheet" href="/static/console/console.css"></head>'
        f'<body>{_header(user, current)}<main id="main">{body}</main></body></html>'
    )


def page(title: str, body: str, user: SignedIn | None, current: str | None = None, status: int = 200) -> Response[str]:
    """A whole page of the console, with its security headers."""
    return Response(
        document(title, body, user, current), status_code=status, media_type=MediaType.HTML, headers=SECURITY_HEADERS
    )


def redirect(to: str) -> Response[str]:
    """303 to ``to``: after a form, the browser asks for the next page with GET."""
    return Response("", status_code=303, headers={**SECURITY_HEADERS, "Location": to}, media_type=MediaType.TEXT)


def csv_download(content: str, filename: str) -> Response[str]:
    """A CSV file the browser saves as ``filename``."""
    return Response(
        content,
        media_type="text/csv; charset=utf-8",
        headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'},
    )
