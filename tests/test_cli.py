"""The ``delight`` command line: ``rules check`` and ``keys create``, as integrators and marketers use them."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.cli import main
from service.keys.scopes import ALL
from service.keys.service import KeyVerifier
from tests.conftest import DEMO_RULES, ROOT, TEST_RULES

UNREACHABLE_DATABASE = "postgresql+asyncpg://nobody:nothing@127.0.0.1:1/nowhere"
KEY_LINE = re.compile(r"^dlk_([0-9a-f]{16})_[A-Za-z0-9_-]{43}$")


@pytest.fixture(autouse=True)
def _cli_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A clean ``DELIGHT_*`` environment, and the root logger put back after ``main`` reconfigures it."""
    for name in [n for n in os.environ if n.startswith("DELIGHT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DELIGHT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DELIGHT_LOG_LEVEL", "WARNING")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_rules_check_on_the_demo_pack_exits_0_and_summarises_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(DEMO_RULES)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    [line] = out.splitlines()
    assert line.startswith(f"{DEMO_RULES}: 6 campaign(s), 9 rule(s), version ")
    assert line.endswith(": OK")


def test_rules_check_without_a_dir_checks_delight_rules_dir(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DELIGHT_RULES_DIR", str(TEST_RULES))
    assert main(["rules", "check"]) == 0
    assert capsys.readouterr().out.startswith(f"{TEST_RULES}: 1 campaign(s), 4 rule(s), version ")


def test_rules_check_on_a_bad_pack_exits_1_with_one_path_line_message_per_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "catalog.yaml").write_text("gifts:\n  - id: mug\n    name: Mug\n")
    (rules / "a.yaml").write_text("campaign: a\nrules:\n  - id: r\n    when: type == 'x'\n    award: {gift: teapot}\n")
    (rules / "b.yaml").write_text(
        "campaign: b\nrules:\n  - id: r\n    when: order.totl > 3\n    award: {points: 5}\n"
        "  - id: s\n    when: type == 'x'\n    chance: 1.5\n    award: {points: 5}\n"
    )
    (rules / "c.yaml").write_text("campaign: c\nrules:\n  - id: r\n    when: type == 'x': oops\n")
    assert main(["rules", "check", str(rules)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{rules / 'a.yaml'}:5: gift `teapot` is not in catalog.yaml",
        f"{rules / 'b.yaml'}:4: `when` names an unknown field `totl`",
        f"{rules / 'b.yaml'}:8: `rules[1].chance`: Expected `float` <= 1.0",
        f"{rules / 'c.yaml'}:4: YAML syntax: mapping values are not allowed here",
    ]


def test_rules_check_reports_a_when_error_in_a_well_formed_campaign(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "b.yaml").write_text(
        "campaign: b\nrules:\n  - id: r\n    when: order.totl > 3\n    award: {points: 5}\n"
    )
    assert main(["rules", "check", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines() == [f"{tmp_path / 'b.yaml'}:4: `when` names an unknown field `totl`"]


def test_rules_check_on_deeply_nested_yaml_exits_1_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "deep.yaml").write_text("campaign: d\nrules:\n  - id: r\n    award: " + "[" * 50_000 + "]" * 50_000)
    assert main(["rules", "check", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"{tmp_path / 'deep.yaml'}:4: YAML nested more than 64 levels deep"]


def test_rules_check_on_a_missing_dir_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.splitlines() == [f"{tmp_path / 'nope'}:1: rules directory does not exist"]


@pytest.mark.parametrize(
    ("scopes", "complaint"),
    [
        ("events:write,events:destroy", "unknown scope(s): events:destroy"),
        ("admin", "unknown scope(s): admin"),
        (" , ", "a key needs at least one scope"),
    ],
)
def test_keys_create_with_a_bad_scope_exits_2_without_touching_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], scopes: str, complaint: str
) -> None:
    # Any attempt to reach this database would raise instead of returning 2.
    monkeypatch.setenv("DELIGHT_DATABASE_URL", UNREACHABLE_DATABASE)
    assert main(["keys", "create", "--name", "t", "--scopes", scopes]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"delight: {complaint}")
    assert all(scope in err for scope in ALL)  # the known scopes are listed
    assert not (tmp_path / "data").exists()  # no embedded PostgreSQL was started either


def test_bad_database_url_exits_2_before_doing_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DELIGHT_DATABASE_URL", "mysql://x/y")
    assert main(["rules", "check", str(DEMO_RULES)]) == 2
    assert capsys.readouterr().err == "delight: DELIGHT_DATABASE_URL must be a postgresql+asyncpg:// URL\n"


async def test_keys_create_prints_a_working_key_alone_on_the_last_line(
    database_url: str, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("DELIGHT_")}
    env |= {"DELIGHT_DATABASE_URL": database_url, "DELIGHT_DATA_DIR": str(tmp_path / "data")}
    process = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv" / "bin" / "delight"),
        "keys",
        "create",
        "--name",
        "t",
        "--scopes",
        "events:write",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode()
    assert stderr.decode() == ""  # no migration chatter or library warnings: stdout says what was done
    lines = stdout.decode().splitlines()
    key = lines[-1]
    match = KEY_LINE.match(key)
    assert match, lines
    key_id = match.group(1)
    assert key_id in lines[0]
    assert key not in stderr.decode()
    assert not (tmp_path / "data").exists()  # it used the given database, not an embedded one

    principal = await KeyVerifier(sessionmaker, redis=None).verify(key)
    assert principal is not None
    assert (principal.key_id, principal.name, principal.scopes) == (key_id, "t", frozenset({"events:write"}))

    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert await KeyVerifier(sessionmaker, redis=None).verify(tampered) is None

    async with sessionmaker() as session:
        stored = (
            await session.execute(text("SELECT secret_hash FROM api_keys WHERE key_id = :id"), {"id": key_id})
        ).scalar_one()
    secret = key.split("_", 2)[2]
    assert bytes(stored) == hashlib.sha256(secret.encode()).digest()  # stored only as a hash


async def test_customers_erase_reaches_an_id_no_url_can_hold(
    database_url: str, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    legacy = "shop/42"  # accepted before ids with `/` were refused; no /v1/customers/{id} route addresses it
    async with sessionmaker() as session, session.begin():
        await session.execute(
            text('INSERT INTO customers (customer_id, attributes) VALUES (:id, \'{"first_name": "Ada"}\')'),
            {"id": legacy},
        )
    env = {name: value for name, value in os.environ.items() if not name.startswith("DELIGHT_")}
    env |= {"DELIGHT_DATABASE_URL": database_url, "DELIGHT_DATA_DIR": str(tmp_path / "data")}
    env |= {"DELIGHT_LOG_LEVEL": "WARNING"}

    async def erase() -> tuple[int | None, str, str]:
        process = await asyncio.create_subprocess_exec(
            str(ROOT / ".venv" / "bin" / "delight"),
            "customers",
            "erase",
            legacy,
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
        return process.returncode, stdout.decode(), stderr.decode()

    assert await erase() == (0, "Customer 'shop/42' erased.\n", "")
    async with sessionmaker() as session:
        rows = (await session.execute(text("SELECT customer_id, attributes FROM customers"))).all()
        [(pseudonym, attributes)] = [r for r in rows if not r.customer_id.startswith("c-")]
        assert pseudonym.startswith("erased-")
        assert attributes == {}
        actor = (
            await session.execute(text("SELECT actor FROM audit_log WHERE action = 'customer.erased'"))
        ).scalar_one()
        assert actor == "cli"
    assert await erase() == (1, "", "delight: no customer 'shop/42'\n")
