"""Signing in and out of the console, and its home page.

A person signs in with an API key, or with a one-time link that
``delight console login`` prints; either becomes a session (``sessions``)
whose cookie is HttpOnly, SameSite=Strict and, over TLS, Secure. The key
itself is checked once and kept nowhere: not in the cookie, a page or a log.
A link is used by a button on the page it opens, not by opening it, so that
a mail scanner or a chat preview that fetches it does not use it up.
"""

from __future__ import annotations

from html import escape
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery

from service.console import sessions
from service.console.auth import (
    FORM_COOKIE,
    SESSION_COOKIE,
    cookie,
    form_token,
    read_form,
    safe_next,
    signed_in,
)
from service.console.page import page, redirect, sections_for
from service.console.sessions import KeyHolder, SignedIn
from service.keys.service import KeyVerifier
from service.lib.db import transaction


def _sign_in_form(token: str, target: str, error: str | None = None) -> str:
    problem = f'<p class="flash" role="alert">{escape(error)}</p>' if error else ""
    return (
        "<h1>Sign in</h1>"
        '<p class="sub">With an API key (<code>delight keys create</code>), or a one-time link from '
        "<code>delight console login</code>. What you see depends on the key's scopes.</p>"
        f"{problem}"
        '<form method="post" action="/console/login">'
        f'<input type="hidden" name="csrf" value="{escape(token)}">'
        f'<input type="hidden" name="next" value="{escape(target)}">'
        '<label for="key">API key</label>'
        '<input id="key" name="key" type="password" autocomplete="off" required autofocus spellcheck="false">'
        '<p><button type="submit">Sign in</button></p></form>'
    )


async def _signed_in(request: Request[Any, Any, Any], holder: KeyHolder, via: str, target: str) -> Response[str]:
    async with transaction(request.app.state.sessionmaker) as db:
        token, _ = await sessions.start(db, holder, via)
    response = redirect(safe_next(target))
    response.set_cookie(cookie(request, SESSION_COOKIE, token))
    response.set_cookie(cookie(request, FORM_COOKIE, "", expire=True))
    return response


class SignInController(Controller):
    path = "/"

    @get("/login", name="console-login")
    async def login_form(self, request: Request[Any, Any, Any], next: FromQuery[str | None] = None) -> Response[str]:
        if await signed_in(request) is not None:
            return redirect(safe_next(next))
        token, new_cookie = form_token(request)
        response = page("Sign in", _sign_in_form(token, safe_next(next)), None)
        if new_cookie is not None:
            response.set_cookie(new_cookie)
        return response

    @post("/login", status_code=303)
    async def login(self, request: Request[Any, Any, Any]) -> Response[str]:
        form = await read_form(request, request.cookies.get(FORM_COOKIE))
        target = safe_next(form.get("next"))
        key = form.get("key")
        verifier: KeyVerifier = request.app.state.key_verifier
        principal = await verifier.verify(key.strip()) if isinstance(key, str) else None
        if principal is None:
            token, _ = form_token(request)
            return page("Sign in", _sign_in_form(token, target, "That API key is not valid."), None, status=401)
        return await _signed_in(request, KeyHolder(principal.key_id, principal.name, principal.scopes), "key", target)

    @get("/link/{token:str}", name="console-link")
    async def link_form(self, request: Request[Any, Any, Any], token: FromPath[str]) -> Response[str]:
        async with transaction(request.app.state.sessionmaker) as db:
            holder = await sessions.link_owner(db, token)
        if holder is None:
            return page(
                "Link not valid",
                "<h1>This link cannot be used</h1><p>It was used already, it expired, or its key was revoked. "
                'Ask for a new one with <code>delight console login</code>, or <a href="/console/login">sign in '
                "with a key</a>.</p>",
                None,
                status=404,
            )
        form, new_cookie = form_token(request)
        response = page(
            "Sign in",
            f"<h1>Sign in</h1><p>Sign in to the console with the key <strong>{escape(holder.name)}</strong>?</p>"
            f'<form method="post" action="/console/link/{escape(token)}">'
            f'<input type="hidden" name="csrf" value="{escape(form)}">'
            '<button type="submit">Sign in</button></form>',
            None,
        )
        if new_cookie is not None:
            response.set_cookie(new_cookie)
        return response

    @post("/link/{token:str}", status_code=303)
    async def use_link(self, request: Request[Any, Any, Any], token: FromPath[str]) -> Response[str]:
        await read_form(request, request.cookies.get(FORM_COOKIE))
        async with transaction(request.app.state.sessionmaker) as db:
            holder = await sessions.use_link(db, token)
        if holder is None:
            return redirect(f"/console/link/{token}")  # says why it cannot be used
        return await _signed_in(request, holder, "link", "/console")

    @post("/logout", status_code=303)
    async def logout(self, request: Request[Any, Any, Any], user: NamedDependency[SignedIn]) -> Response[str]:
        await read_form(request, user.csrf)
        async with transaction(request.app.state.sessionmaker) as db:
            await sessions.end(db, user)
        response = redirect("/console/login")
        response.set_cookie(cookie(request, SESSION_COOKIE, "", expire=True))
        return response

    @get("/", name="console-home")
    async def home(self, user: NamedDependency[SignedIn]) -> Response[str]:
        cards = "".join(
            f'<a class="card" href="{s.path}"><strong>{escape(s.title)}</strong></a>' for s in sections_for(user)
        )
        scopes = ", ".join(f"<code>{escape(s)}</code>" for s in sorted(user.scopes))
        body = (
            "<h1>Delight console</h1>"
            f'<p class="sub">Signed in with the key <strong>{escape(user.name)}</strong> '
            f"(<code>{escape(user.key_id)}</code>), scopes {scopes}.</p>"
            + (
                f'<nav class="cards" aria-label="Sections">{cards}</nav>'
                if cards
                else "<p>This key opens no page of the console: the console needs <code>rules:admin</code> or "
                "<code>reports:read</code>.</p>"
            )
        )
        return page("Console", body, user)
