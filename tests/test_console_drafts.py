"""Try a draft in the console: check it, run an event through it, back-test it against the rules in force.

The page's figures are read from their ``data-field`` elements and compared
with what the API (``POST /v1/rules/simulate``) and ``backtest`` give for the
same draft, on the session app's rule set (``tests/fixtures/rules``).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from collections.abc import Sequence
from html.parser import HTMLParser
from typing import Any

import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.console import drafts
from service.keys.scopes import REPORTS_READ, RULES_ADMIN
from service.rules.backtest import Report, backtest, stored_events
from service.rules.loader import load_rule_set
from service.rules.simulate import draft_rule_set
from tests.conftest import TEST_RULES, interaction, new_key, post_all, purchase, sign_in

Client = AsyncTestClient[Litestar]

LIVE_LOYAL = (TEST_RULES / "loyal.yaml").read_text()
DRAFT = (
    LIVE_LOYAL.replace("order.total >= 100\n", "order.total >= 50\n").replace(  # mug-over-100 changed
        """  - id: points-on-third
    when: type == "purchase" and customer.purchase_count == 3
    award: {points: 200}
    message: "{{ customer.purchase_count }} visits: 200 points."
""",
        "",
    )  # points-on-third removed
    + """  - id: vase-over-500
    when: type == "purchase" and order.total >= 500
    award: {gift: vase}
"""  # a rule added
)
AUTUMN = """\
campaign: autumn
rules:
  - id: vase-over-40
    when: type == "purchase" and order.total >= 40
    award: {gift: vase}
"""
BROKEN = """\
campaign: autumn
description: "Tom & <Jerry>"
rules:
  - id: vase
    when: type == "purchase"
   award: {gift: vase}
"""


class Fields(HTMLParser):
    """Every element of a page with ``data-field``: its text, and the other ``data-`` attributes of it and of the
    elements around it (its context: which rule, which clause)."""

    VOID = frozenset({"input", "br", "meta", "link", "img", "hr"})

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[tuple[str, dict[str, str], list[str]]] = []
        self.found: list[tuple[dict[str, str], str, str]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.open.append((tag, {k[5:]: v or "" for k, v in attrs if k.startswith("data-")}, []))

    def handle_data(self, data: str) -> None:
        for _, _, texts in self.open:
            texts.append(data)

    def handle_endtag(self, tag: str) -> None:
        while self.open:
            name, attributes, texts = self.open.pop()
            if "field" in attributes:
                context = {k: v for _, outer, _ in [*self.open, (name, attributes, texts)] for k, v in outer.items()}
                del context["field"]
                self.found.append((context, attributes["field"], "".join(texts)))
            if name == tag:
                break

    def at(self, **where: str) -> dict[str, str]:
        """The fields whose context is exactly ``where``, by name."""
        return {field: text for context, field, text in self.found if context == where}

    def all(self, field: str, **where: str) -> list[str]:
        return [text for context, f, text in self.found if f == field and where.items() <= context.items()]


def number(text: str) -> float:
    return float(text.replace(",", ""))


def textarea(page: str, name: str) -> str:
    match = re.search(rf'<textarea [^>]*name="{re.escape(html.escape(name))}"[^>]*>\n(.*?)</textarea>', page, re.S)
    assert match, f"no textarea {name}"
    return html.unescape(match.group(1))


async def open_drafts(browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]) -> str:
    """Sign in with a ``rules:admin`` key; the form's CSRF token."""
    return await sign_in(browser, await new_key(sessionmaker, RULES_ADMIN))


async def post_draft(
    browser: httpx.AsyncClient,
    csrf: str,
    action: str,
    *,
    uploads: Sequence[tuple[str, str | bytes]] = (),
    **fields: str,
) -> httpx.Response:
    """The form as a browser sends it: multipart, with the file input empty unless files are chosen."""
    files = [
        ("upload", (name, text if isinstance(text, bytes) else text.encode(), "application/x-yaml"))
        for name, text in uploads
    ] or [("upload", ("", b"", "application/octet-stream"))]
    return await browser.post("/console/drafts", data={"csrf": csrf, "action": action, **fields}, files=files)


async def simulate_api(client: Client, keys: dict[str, Any], event: dict[str, Any], draft: dict[str, str]) -> Any:
    response = await client.post(
        "/v1/rules/simulate", json={"event": event, "draft": draft}, headers=keys["rules:admin"]
    )
    assert response.status_code == 200, response.text
    return response.json()


# --- checking ------------------------------------------------------------------------------------------------


async def test_the_page_offers_the_three_steps_to_a_rules_admin(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await open_drafts(browser, sessionmaker)
    shown = await browser.get("/console/drafts")
    assert shown.status_code == 200
    assert 'enctype="multipart/form-data"' in shown.text
    assert '<input type="file" id="upload" name="upload" multiple accept=".yaml,.yml"' in shown.text
    assert 'name="name" value="draft.yaml"' in shown.text
    assert [m for m in re.findall(r'name="action" value="(\w+)"', shown.text)] == ["check", "simulate", "backtest"]
    default = json.loads(textarea(shown.text, "event"))
    assert default["type"] == "purchase"
    assert "<script" not in shown.text


async def test_a_draft_with_a_yaml_error_shows_it_with_file_and_line_and_keeps_the_text(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    csrf = await open_drafts(browser, sessionmaker)
    checked = await post_draft(browser, csrf, "check", name="autumn.yaml", text=BROKEN)
    assert checked.status_code == 422
    page = Fields(checked.text)
    assert len(page.all("where")) == 1
    error = page.at(error="0")
    assert error["where"] == "draft/autumn.yaml:6"
    assert error["message"].startswith("YAML syntax")
    assert textarea(checked.text, "text") == BROKEN
    assert "&lt;Jerry&gt;" in checked.text
    assert "<Jerry>" not in checked.text
    assert 'name="name" value="autumn.yaml"' in checked.text


async def test_a_control_character_in_a_draft_is_an_error_at_its_line_not_a_500(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    csrf = await open_drafts(browser, sessionmaker)
    checked = await post_draft(
        browser, csrf, "check", name="autumn.yaml", text=AUTUMN.replace("vase-over", "vase\x01over")
    )
    assert checked.status_code == 422
    error = Fields(checked.text).at(error="0")
    assert (error["where"], error["message"]) == ("draft/autumn.yaml:3", "YAML cannot hold the character U+0001")


async def test_a_good_draft_is_ok_with_its_campaigns_rules_and_version(
    client: Client,
    keys: dict[str, Any],
    browser: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    csrf = await open_drafts(browser, sessionmaker)
    checked = await post_draft(browser, csrf, "check", name="loyal.yaml", text=DRAFT.replace("\n", "\r\n"))
    assert checked.status_code == 200, checked.text
    shown = Fields(checked.text).at()
    api = await simulate_api(client, keys, purchase("v-1"), {"loyal.yaml": DRAFT})
    assert (shown["campaigns"], shown["rules"], shown["version"]) == ("1", "4", api["version"])  # CRLF as typed


async def test_an_empty_draft_or_an_unknown_action_is_a_400_with_a_message(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    csrf = await open_drafts(browser, sessionmaker)
    empty = await post_draft(browser, csrf, "check", text="  \n")
    assert empty.status_code == 400
    assert "The draft is empty" in empty.text
    odd = await post_draft(browser, csrf, "deploy", text=AUTUMN)
    assert odd.status_code == 400
    assert "check, simulate or back-test" in odd.text


# --- one event ------------------------------------------------------------------------------------------------


async def test_simulating_on_the_draft_shows_what_the_api_gives_clause_by_clause(
    client: Client,
    keys: dict[str, Any],
    browser: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await post_all(client, keys, [purchase("live-1", "c-1", 150.0, customer={"first_name": "Ana"})])
    event = purchase("sim-1", "c-somebody", 80.0, occurred_at="2026-03-05T10:00:00Z", customer={"first_name": "Bea"})
    csrf = await open_drafts(browser, sessionmaker)
    shown = await post_draft(
        browser, csrf, "simulate", name="loyal.yaml", text=DRAFT, event=json.dumps(event), customer="c-1"
    )
    assert shown.status_code == 200, shown.text
    api = await simulate_api(client, keys, {**event, "customer_id": "c-1"}, {"loyal.yaml": DRAFT})

    page = Fields(shown.text)
    top = page.at()
    assert (top["version"], top["event_id"], top["customer_id"]) == (api["version"], "sim-1", "c-1")
    assert number(top["purchase_count"]) == api["customer"]["purchase_count"] == 2  # the stored profile
    assert number(top["awards"]) == len(api["awards"]) == 1
    assert {r["rule_id"] for r in api["rules"]} == {"mug-over-100", "review-offer", "vase-sometimes", "vase-over-500"}
    for rule in api["rules"]:
        where = {"campaign": rule["campaign"], "rule": rule["rule_id"]}
        fields = page.at(**where)
        assert fields["outcome"] == rule["outcome"]
        assert fields["operator"] == rule["operator"]
        assert (fields["active"], fields["matched"]) == (
            "yes" if rule["active"] else "no",
            "yes" if rule["matched"] else "no",
        )
        assert fields["group"] == (rule["group"] or "none")
        clauses = [page.at(**where, clause=str(i)) for i in range(len(rule["clauses"]))]
        assert [(c["text"], json.loads(c["value"]), c["error"]) for c in clauses] == [
            (c["text"], c["value"], c["error"] or "") for c in rule["clauses"]
        ]
        if rule["award"]:
            assert number(fields["cost"]) == rule["award"]["cost"]
            assert fields.get("message") == rule["award"]["message"]
    mug = page.at(campaign="loyal", rule="mug-over-100")
    assert (mug["outcome"], mug["message"]) == ("awarded", "Enjoy your mug, Bea!")  # 80 ≥ 50 in the draft
    [stock] = page.all("used_units", rule="mug-over-100")
    assert number(stock) == 1  # the live award drew on the stock


async def test_a_bad_event_is_told_with_the_field_not_a_500(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    csrf = await open_drafts(browser, sessionmaker)
    no_order = purchase("sim-1")
    del no_order["order"]
    negative = purchase("sim-2", total=-5.0)
    cases = {
        '{"event_id": "x",': "The event is not JSON",
        json.dumps(no_order): "event.order: a purchase needs an order",
        json.dumps(negative): "event.order.total",
        json.dumps({**purchase("sim-3"), "colour": "red"}): "event.colour: unknown field",
    }
    for text, said in cases.items():
        shown = await post_draft(browser, csrf, "simulate", text=AUTUMN, event=text)
        assert shown.status_code == 422, shown.text
        [problem] = Fields(shown.text).all("problems")
        assert said in problem
        assert textarea(shown.text, "event") == text  # kept to be fixed
    bad_customer = await post_draft(
        browser, csrf, "simulate", text=AUTUMN, event=json.dumps(purchase()), customer="a/b"
    )
    assert bad_customer.status_code == 422
    assert "event.customer_id" in Fields(bad_customer.text).all("problems")[0]


# --- the back-test -------------------------------------------------------------------------------------------


def tallies(report: Report) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (t.campaign, t.rule_id): {"awards": t.awards, "customers": len(t.customers), "cost": float(t.cost)}
        for t in report.rules
    }


def reached(report: Report) -> set[str]:
    return {c for t in report.rules for c in t.customers}


async def test_backtest_shows_each_rule_live_against_draft_as_backtest_gives_them(
    client: Client,
    keys: dict[str, Any],
    engine: AsyncEngine,
    browser: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    events = [
        purchase("e-1", "c-1", 150.0, occurred_at="2026-03-01T10:00:00Z"),  # a mug either way
        purchase("e-2", "c-3", 20.0, occurred_at="2026-03-02T10:00:00Z"),
        purchase("e-3", "c-3", 20.0, occurred_at="2026-03-03T10:00:00Z"),
        purchase("e-4", "c-3", 20.0, occurred_at="2026-03-04T10:00:00Z"),  # third visit: points live only
        purchase("e-5", "c-4", 60.0, occurred_at="2026-03-05T10:00:00Z"),  # a mug in the draft only
        purchase("e-6", "c-5", 700.0, occurred_at="2026-03-06T10:00:00Z"),  # the added vase, and a mug either way
        {**interaction("e-7", "c-6", rating=5), "occurred_at": "2026-03-07T10:00:00Z"},  # the same review offer
        purchase("e-8", "c-7", 60.0, occurred_at="2026-04-02T10:00:00Z"),  # after the period
    ]
    for event in events:  # one at a time: the order live saw them in
        await post_all(client, keys, [event])

    csrf = await open_drafts(browser, sessionmaker)
    shown = await post_draft(
        browser, csrf, "backtest", name="loyal.yaml", text=DRAFT, **{"from": "2026-03-01", "to": "2026-03-31"}
    )
    assert shown.status_code == 200, shown.text

    live = load_rule_set(TEST_RULES)
    assert live.version == (await client.get("/v1/rules", headers=keys["rules:admin"])).json()["version"]
    draft = draft_rule_set(live, {"loyal.yaml": DRAFT})
    start, end = dt.datetime(2026, 3, 1, tzinfo=draft.zone), dt.datetime(2026, 4, 1, tzinfo=draft.zone)
    async with engine.connect() as connection:
        before = await backtest(live, stored_events(connection), start, end)
        after = await backtest(draft, stored_events(connection), start, end)
    was, now = tallies(before), tallies(after)

    page = Fields(shown.text)
    statuses = {}
    for key in [*was, *now]:
        row = page.at(campaign=key[0], rule=key[1])
        statuses[key[1]] = row["status"]
        for side, figures in (("live", was.get(key)), ("draft", now.get(key))):
            if figures is None:
                assert row[f"{side}_awards"] == "—"
                continue
            assert number(row[f"{side}_awards"]) == figures["awards"], (key, side)
            assert number(row[f"{side}_customers"]) == figures["customers"], (key, side)
            assert number(row[f"{side}_cost"]) == round(figures["cost"], 2), (key, side)
    assert statuses == {
        "mug-over-100": "changed",
        "points-on-third": "removed",
        "review-offer": "same",
        "vase-sometimes": "same",
        "vase-over-500": "added",
    }
    assert was[("loyal", "points-on-third")]["awards"] == 1  # the history exercises what changed
    assert now[("loyal", "vase-over-500")]["awards"] == 1

    totals = page.at(total="all")
    assert number(totals["live_awards"]) == sum(t.awards for t in before.rules)
    assert number(totals["draft_customers"]) == len(reached(after))
    assert number(totals["draft_cost"]) == round(float(sum(t.cost for t in after.rules)), 2)
    assert number(page.at()["events"]) == after.events_in_period == 7
    gained, lost = reached(after) - reached(before), reached(before) - reached(after)
    assert (gained, lost) == ({"c-4"}, {"c-3"})
    top = page.at()
    assert (number(top["gained_count"]), number(top["lost_count"])) == (1, 1)
    assert page.all("customer", group="gained") == ["c-4"]
    assert page.all("customer", group="lost") == ["c-3"]


async def test_backtest_with_bad_dates_or_to_before_from_is_a_400(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    csrf = await open_drafts(browser, sessionmaker)
    for start, end, said in (
        ("2026-02-30", "2026-03-01", "dates like 2026-03-01"),
        ("yesterday", "2026-03-01", "dates like 2026-03-01"),
        ("2026-03-01", "9999-12-31", "dates like 2026-03-01"),
        ("2026-03-10", "2026-03-01", "before"),
    ):
        shown = await post_draft(browser, csrf, "backtest", text=AUTUMN, **{"from": start, "to": end})
        assert shown.status_code == 400, (start, end)
        assert said in Fields(shown.text).all("problems")[0]
        assert f'name="from" value="{start}"' in shown.text


async def test_a_second_backtest_while_one_runs_is_told_to_wait(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    csrf = await open_drafts(browser, sessionmaker)
    async with drafts.BACKTESTS:  # one running in this process
        shown = await post_draft(browser, csrf, "backtest", text=AUTUMN, **{"from": "2026-03-01", "to": "2026-03-31"})
    assert shown.status_code == 503
    assert "Another back-test is running" in Fields(shown.text).all("problems")[0]


# --- several files --------------------------------------------------------------------------------------------


async def test_two_uploaded_files_are_checked_together_and_carried_to_the_next_step(
    client: Client,
    keys: dict[str, Any],
    browser: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    catalog = "gifts:\n  - id: vase\n    name: Tall vase\n    unit_cost: 6.00\n"
    csrf = await open_drafts(browser, sessionmaker)
    checked = await post_draft(browser, csrf, "check", uploads=[("autumn.yaml", AUTUMN), ("catalog.yaml", catalog)])
    assert checked.status_code == 200, checked.text
    files = {"autumn.yaml": AUTUMN, "catalog.yaml": catalog}
    api_event = purchase("sim-up", "c-up", 50.0)
    api = await simulate_api(client, keys, api_event, files)
    assert Fields(checked.text).at()["version"] == api["version"]
    kept = {name: textarea(checked.text, f"file:{name}") for name in files}
    assert kept == files

    # The next press sends the files back as the page holds them; the file input is empty again.
    again = await post_draft(
        browser, csrf, "simulate", event=json.dumps(api_event), **{f"file:{n}": t for n, t in kept.items()}
    )
    assert again.status_code == 200, again.text
    vase = Fields(again.text).at(campaign="autumn", rule="vase-over-40")
    assert (vase["outcome"], vase["gift"], number(vase["cost"])) == ("awarded", "Tall vase", 6.0)

    # An emptied file is left out: the catalogue in force is used again.
    left_out = await post_draft(browser, csrf, "check", **{"file:autumn.yaml": AUTUMN, "file:catalog.yaml": ""})
    assert (
        Fields(left_out.text).at()["version"]
        == (await simulate_api(client, keys, api_event, {"autumn.yaml": AUTUMN}))["version"]
    )
    assert 'name="file:catalog.yaml"' not in left_out.text


async def test_too_many_files_or_a_bad_name_is_a_400_with_a_message(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    csrf = await open_drafts(browser, sessionmaker)
    many = {f"file:c{i}.yaml": AUTUMN.replace("autumn", f"autumn-{i}") for i in range(101)}
    too_many = await post_draft(browser, csrf, "check", **many)
    assert too_many.status_code == 400
    assert "at most 100 files; this one has 101" in Fields(too_many.text).all("problems")[0]

    for upload in ("../autumn.yaml", "autumn.txt", ".hidden.yaml"):
        bad = await post_draft(browser, csrf, "check", uploads=[(upload, AUTUMN)])
        assert bad.status_code == 400, upload
        assert "cannot name a draft file" in Fields(bad.text).all("problems")[0]
    pasted = await post_draft(browser, csrf, "check", name="my draft.yaml", text=AUTUMN)
    assert pasted.status_code == 400
    assert "“my draft.yaml” cannot name a draft file" in html.unescape(pasted.text)
    assert textarea(pasted.text, "text") == AUTUMN
    clash = await post_draft(browser, csrf, "check", name="autumn.yaml", text=AUTUMN, **{"file:autumn.yaml": AUTUMN})
    assert clash.status_code == 400
    assert "both pasted and among the files" in clash.text
    binary = await post_draft(browser, csrf, "check", uploads=[("autumn.yaml", b"campaign: \xff\n")])
    assert binary.status_code == 400
    assert "autumn.yaml is not UTF-8 text" in Fields(binary.text).all("problems")[0]


# --- who may ------------------------------------------------------------------------------------------------


async def test_a_key_without_rules_admin_is_refused_the_page(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    csrf = await sign_in(browser, await new_key(sessionmaker, REPORTS_READ))
    assert (await browser.get("/console/drafts")).status_code == 403
    refused = await post_draft(browser, csrf, "check", text=AUTUMN)
    assert refused.status_code == 403
    assert "rules:admin" in refused.text


async def test_a_form_without_its_csrf_token_is_refused(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await open_drafts(browser, sessionmaker)
    forged = await browser.post("/console/drafts", data={"action": "check", "text": AUTUMN})
    assert forged.status_code == 403
    guessed = await post_draft(browser, "guess", "check", text=AUTUMN)
    assert guessed.status_code == 403
