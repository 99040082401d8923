"""Who is at the console, and whether a form really comes from one of its pages.

Every console handler takes ``user: SignedIn`` (``provide_signed_in``): the
session of the request's cookie, or a redirect to the sign-in page. Forms are
read through ``read_form``, which refuses a form whose CSRF token is not the
session's (or, before sign-in, the one of the form cookie) and one sent from
another origin.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
from typing import Any
from urllib.parse import quote

from litestar import Request, Response
from litestar.datastructures import Cookie, FormMultiDict, State
from litestar.types import ExceptionHandlersMap

from service.console import sessions
from service.console.page import page, redirect
from service.console.sessions import SignedIn
from service.lib.db import transaction
from service.lib.settings import Settings

SESSION_COOKIE = "delight_session"
FORM_COOKIE = "delight_form"
"""Before sign-in there is no session: the sign-in forms' token lives in this cookie (double submit)."""
COOKIE_PATH = "/console"


class SignInNeeded(Exception):
    """No live session: the page answers with the way to the sign-in form."""


class NotAllowed(Exception):
    def __init__(self, scope: str) -> None:
        super().__init__(scope)
        self.scope = scope


class FormRefused(Exception):
    """A form without this session's token, or from another site."""


def settings_of(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


def idle_timeout(state: State) -> dt.timedelta:
    return dt.timedelta(minutes=settings_of(state).app.console_idle_minutes)


def secure_cookies(request: Request[Any, Any, Any]) -> bool:
    """Cookies are ``Secure`` when the console is reached over TLS, or told it is (behind a TLS proxy)."""
    forced = settings_of(request.app.state).app.console_secure_cookies
    return forced if forced is not None else request.url.scheme == "https"


def cookie(request: Request[Any, Any, Any], name: str, value: str, *, expire: bool = False) -> Cookie:
    return Cookie(
        key=name,
        value=value,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request),
        max_age=0 if expire else None,
    )


async def signed_in(request: Request[Any, Any, Any]) -> SignedIn | None:
    """The live session of the request's cookie, marked seen; ``None`` without one."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    async with transaction(request.app.state.sessionmaker) as db:
        return await sessions.find(db, token, idle_timeout(request.app.state))


async def provide_signed_in(request: Request[Any, Any, Any]) -> SignedIn:
    user = await signed_in(request)
    if user is None:
        raise SignInNeeded
    return user


def need(user: SignedIn, scope: str) -> None:
    """Refuse the page to a key without ``scope``."""
    if scope not in user.scopes:
        raise NotAllowed(scope)


def _same_origin(request: Request[Any, Any, Any]) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return True  # older browsers send none on same-origin posts; the token still has to match
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


async def read_form(request: Request[Any, Any, Any], expected: str | None) -> FormMultiDict:
    """The posted form, once its CSRF token matches ``expected`` (the session's, or the form cookie's)."""
    form = await request.form()
    sent = form.get("csrf")
    if not expected or not isinstance(sent, str) or not hmac.compare_digest(sent, expected):
        raise FormRefused
    if not _same_origin(request):
        raise FormRefused
    return form


def form_token(request: Request[Any, Any, Any]) -> tuple[str, Cookie | None]:
    """The sign-in forms' token: the one in the form cookie, or a new one with the cookie to set."""
    existing = request.cookies.get(FORM_COOKIE)
    if existing:
        return existing, None
    token = secrets.token_urlsafe(32)
    return token, cookie(request, FORM_COOKIE, token)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console page, never another site."""
    if target and target.startswith("/console") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console"


def handle_sign_in_needed(request: Request[Any, Any, Any], _: SignInNeeded) -> Response[str]:
    target = "/console/login"
    if request.method == "GET" and request.url.path != "/console":
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        target += "?next=" + quote(path, safe="")
    response = redirect(target)
    if request.cookies.get(SESSION_COOKIE):
        response.set_cookie(cookie(request, SESSION_COOKIE, "", expire=True))
    return response


def handle_not_allowed(request: Request[Any, Any, Any], exc: NotAllowed) -> Response[str]:
    return page(
        "Not allowed",
        f"<h1>Not allowed</h1><p>This page needs a key with the scope <code>{exc.scope}</code>. "
        '<a href="/console">Back to the console</a>.</p>',
        None,
        status=403,
    )


def handle_form_refused(request: Request[Any, Any, Any], _: FormRefused) -> Response[str]:
    return page(
        "Form expired",
        "<h1>This form has expired</h1><p>It was not sent from a page of this console's current session. "
        '<a href="/console">Open the console</a> and try again.</p>',
        None,
        status=403,
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    SignInNeeded: handle_sign_in_needed,
    NotAllowed: handle_not_allowed,
    FormRefused: handle_form_refused,
}
