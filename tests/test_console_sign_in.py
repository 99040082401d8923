"""Signing in to the console and out again: sessions, cookies, CSRF, one-time links, and the audit log."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, cast

import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.console import sessions
from service.keys.scopes import EVENTS_WRITE, REPORTS_READ, RULES_ADMIN
from service.lib.db import transaction
from tests.conftest import ROOT, csrf_of, new_key, sign_in


async def _sessions(sessionmaker: async_sessionmaker[AsyncSession], sql: str, **params: Any) -> Any:
    async with transaction(sessionmaker) as db:
        return (await db.execute(text(sql), params)).all()


def _set_cookie(response: httpx.Response, name: str) -> dict[str, str]:
    """The attributes of the cookie ``name`` the response sets, by lower-case name; its value under ``value``."""
    (header,) = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    first, *attributes = (part.strip() for part in header.split(";"))
    parsed = {"value": first.partition("=")[2]}
    for attribute in attributes:
        key, _, value = attribute.partition("=")
        parsed[key.lower()] = value.lower()
    return parsed


STRICT = {"httponly": "", "samesite": "strict", "path": "/console"}


async def test_a_page_without_a_session_leads_to_the_sign_in_form_and_back(browser: httpx.AsyncClient) -> None:
    away = await browser.get("/console/audit?action=x")
    assert away.status_code == 303
    assert away.headers["location"] == "/console/login?next=%2Fconsole%2Faudit%3Faction%3Dx"
    form = await browser.get(away.headers["location"])
    assert form.status_code == 200
    assert 'name="next" value="/console/audit?action=x"' in form.text
    assert "default-src 'none'" in form.headers["content-security-policy"]
    assert "<script" not in form.text


async def test_signing_in_with_a_key_sets_a_strict_http_only_session_cookie(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    key = await new_key(sessionmaker, RULES_ADMIN, REPORTS_READ)
    form = await browser.get("/console/login")
    form_cookie = _set_cookie(form, "delight_form")
    assert STRICT.items() <= form_cookie.items()

    signed_in = await browser.post("/console/login", data={"csrf": csrf_of(form.text), "key": key, "next": "/x"})
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/console"  # never another site
    cookie = _set_cookie(signed_in, "delight_session")
    assert STRICT.items() <= cookie.items()
    assert "secure" not in cookie  # plain HTTP here
    assert key.split("_", 2)[2] not in cookie["value"]

    home = await browser.get("/console")
    assert home.status_code == 200
    assert 'href="/console/campaigns"' in home.text
    assert 'href="/console/reports"' in home.text
    assert key not in home.text

    (row,) = await _sessions(sessionmaker, "SELECT key_id, session_hash FROM console_sessions")
    assert key.split("_")[1] == row.key_id
    token = browser.cookies.get("delight_session", path="/console")
    assert bytes(row.session_hash) == sessions.token_hash(token)  # the cookie's token itself is not stored


async def test_scopes_decide_the_sections_shown(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await sign_in(browser, await new_key(sessionmaker, REPORTS_READ))
    home = await browser.get("/console")
    assert 'href="/console/reports"' in home.text
    assert 'href="/console/campaigns"' not in home.text
    assert 'href="/console/drafts"' not in home.text


async def test_a_wrong_key_or_a_form_without_its_token_signs_no_one_in(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    key = await new_key(sessionmaker, RULES_ADMIN)
    form = await browser.get("/console/login")
    token = csrf_of(form.text)

    wrong = await browser.post("/console/login", data={"csrf": token, "key": key[:-1] + "x"})
    assert wrong.status_code == 401
    assert "not valid" in wrong.text
    assert key[:-1] not in wrong.text
    no_token = await browser.post("/console/login", data={"key": key})
    assert no_token.status_code == 403
    elsewhere = await browser.post(
        "/console/login", data={"csrf": token, "key": key}, headers={"origin": "https://attacker.example"}
    )
    assert elsewhere.status_code == 403
    assert await _sessions(sessionmaker, "SELECT 1 FROM console_sessions") == []


async def test_sign_out_needs_the_form_token_and_ends_the_session_for_good(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    csrf = await sign_in(browser, await new_key(sessionmaker, RULES_ADMIN))
    cookie = browser.cookies.get("delight_session", path="/console")

    forged = await browser.post("/console/logout", data={"csrf": "guess"})
    assert forged.status_code == 403
    assert (await browser.get("/console")).status_code == 200

    out = await browser.post("/console/logout", data={"csrf": csrf})
    assert out.status_code == 303
    assert out.headers["location"] == "/console/login"
    assert (await browser.get("/console")).status_code == 303
    browser.cookies.set("delight_session", cookie, domain="testserver", path="/console")  # kept by someone
    assert (await browser.get("/console")).status_code == 303


async def test_an_idle_session_or_one_whose_key_is_revoked_ends(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await sign_in(browser, await new_key(sessionmaker, RULES_ADMIN))
    await _sessions(
        sessionmaker, "UPDATE console_sessions SET last_seen_at = now() - interval '29 minutes' RETURNING 1"
    )
    assert (await browser.get("/console")).status_code == 200  # a request keeps it alive
    await _sessions(
        sessionmaker, "UPDATE console_sessions SET last_seen_at = now() - interval '31 minutes' RETURNING 1"
    )
    assert (await browser.get("/console")).status_code == 303

    key = await new_key(sessionmaker, RULES_ADMIN)
    await sign_in(browser, key)
    await _sessions(
        sessionmaker, "UPDATE api_keys SET revoked_at = now() WHERE key_id = :id RETURNING 1", id=key.split("_")[1]
    )
    assert (await browser.get("/console")).status_code == 303


async def test_a_one_time_link_signs_in_once_by_its_button_not_by_opening_it(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    key_id = (await new_key(sessionmaker, REPORTS_READ)).split("_")[1]
    async with transaction(sessionmaker) as db:
        token = await sessions.new_link(db, key_id)

    opened = await browser.get(f"/console/link/{token}")
    assert opened.status_code == 200
    assert "test" in opened.text
    assert (await browser.get(f"/console/link/{token}")).status_code == 200  # a preview does not use it up
    used = await browser.post(f"/console/link/{token}", data={"csrf": csrf_of(opened.text)})
    assert used.status_code == 303
    assert used.headers["location"] == "/console"
    assert (await browser.get("/console")).status_code == 200

    again = await browser.get(f"/console/link/{token}")
    assert again.status_code == 404
    assert "cannot be used" in again.text

    async with transaction(sessionmaker) as db:
        late = await sessions.new_link(db, key_id)
    await _sessions(sessionmaker, "UPDATE console_links SET expires_at = now() - interval '1 second' RETURNING 1")
    assert (await browser.get(f"/console/link/{late}")).status_code == 404


async def test_sign_ins_and_sign_outs_are_in_the_audit_log_without_any_secret(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    key = await new_key(sessionmaker, RULES_ADMIN)
    key_id = key.split("_")[1]
    csrf = await sign_in(browser, key)
    await browser.post("/console/logout", data={"csrf": csrf})
    async with transaction(sessionmaker) as db:
        await sessions.new_link(db, key_id)
    rows = await _sessions(
        sessionmaker, "SELECT actor, action, subject, details::text AS details FROM audit_log ORDER BY entry_id"
    )
    console_rows = [(r.actor, r.action, r.subject) for r in rows if r.action.startswith("console.")]
    assert console_rows == [
        (f"key {key_id}", "console.signed_in", key_id),
        (f"key {key_id}", "console.signed_out", key_id),
        ("cli", "console.link_created", key_id),
    ]
    secret = key.split("_", 2)[2]
    assert all(secret not in r.details for r in rows)


async def test_over_tls_the_cookies_are_secure(
    client: AsyncTestClient[Litestar], sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    key = await new_key(sessionmaker, RULES_ADMIN)
    transport = httpx.ASGITransport(app=cast("Any", client.app))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as https:
        form = await https.get("/console/login")
        assert "secure" in _set_cookie(form, "delight_form")
        signed_in = await https.post("/console/login", data={"csrf": csrf_of(form.text), "key": key})
        assert "secure" in _set_cookie(signed_in, "delight_session")


async def test_a_key_without_a_console_scope_is_told_what_it_needs(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await sign_in(browser, await new_key(sessionmaker, EVENTS_WRITE))
    home = await browser.get("/console")
    assert "rules:admin" in home.text
    assert "reports:read" in home.text


async def test_delight_console_login_prints_a_link_that_signs_in(
    database_url: str, browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    key_id = (await new_key(sessionmaker, RULES_ADMIN)).split("_")[1]
    env = {name: value for name, value in os.environ.items() if not name.startswith("DELIGHT_")}
    env |= {"DELIGHT_DATABASE_URL": database_url, "DELIGHT_DATA_DIR": str(tmp_path / "data")}

    async def delight(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            str(ROOT / ".venv" / "bin" / "delight"),
            *args,
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    code, out, err = await delight("console", "login", key_id, "--url", "http://testserver/")
    assert (code, err) == (0, "")
    link = out.splitlines()[-1]
    assert link.startswith("http://testserver/console/link/")
    opened = await browser.get(link)
    used = await browser.post(link, data={"csrf": csrf_of(opened.text)})
    assert used.status_code == 303
    assert (await browser.get("/console")).status_code == 200

    code, out, err = await delight("console", "login", "0123456789abcdef")
    assert code == 1
    assert "no key" in err
