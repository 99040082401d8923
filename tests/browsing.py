"""A real browser and a real server for the tests that look at pages as a person does.

Playwright drives the system Chromium (its own browser downloads are not
used); without one the tests are skipped, or fail when
``DELIGHT_TEST_REQUIRE_BROWSER`` is set, as CI does once it has installed
Chromium. The server is ``delight serve`` itself, one replica of
``tests.replicas`` on the test database and Redis, so the browser talks to the
real process over real HTTP.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from tests import replicas

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
QUIET = {"DELIGHT_RULES_SYNC": "false", "DELIGHT_JOBS_EVERY": "0", "DELIGHT_LOG_LEVEL": "WARNING"}
"""The served rules stay as the test wrote them, no background jobs run, and the log holds only what went wrong."""


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """The system Chromium, headless, under Playwright."""
    if CHROMIUM is None:
        reason = "no chromium or chromium-browser on PATH (CI installs Debian's chromium); Playwright needs one"
        if os.environ.get("DELIGHT_TEST_REQUIRE_BROWSER"):  # CI sets it where it installed Chromium
            pytest.fail(reason)
        pytest.skip(reason)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@contextmanager
def delight_serve(database_url: str, redis_url: str, rules: Path, work: Path) -> Iterator[str]:
    """``delight serve`` on this database and Redis with the rule pack in ``rules``, once ready; its base URL.

    Its data directory and log are under ``work``.
    """
    with replicas.running([rules], work, database_url, redis_url, env=QUIET) as (served,):
        yield served.base
