"""What the report pages say, from reports built in memory by the rule engine's judge (no database).

The pages' numbers are checked against the JSON through HTTP and in Chromium
(``test_uplift_report``, ``test_uplift_html``); these tests pin the words
around them: the verdict, singulars, the currency and the sections shown.
"""

from __future__ import annotations

import datetime as dt
import re
from html.parser import HTMLParser

from msgspec.structs import replace

from service.reports import stats
from service.reports.overview import CampaignGlance, Overview
from service.reports.overview import render_html as overview_html
from service.reports.programme import ProgrammeReport, ProgrammeWindow
from service.reports.programme import render_html as programme_html
from service.reports.uplift import CAMPAIGN_ROW, PowerPlan, RuleUplift, UpliftReport, _Group, _judge, plan_sentence
from service.reports.uplift_html import render_html
from service.reports.words import plural

AS_OF = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)


def group(customers: int, repeaters: int, *, still_open: int = 0, spend: float = 40.0, cost: float = 0.0) -> _Group:
    """``customers`` with a closed window, ``repeaters`` of them spending ``spend`` on day 1, half expected held out."""
    moments = stats.Moments(n=customers, sum_y=repeaters * spend, sum_y2=repeaters * spend**2) if customers else None
    exposed = customers + still_open
    return _Group(
        exposed=exposed,
        moments=moments,
        repeaters=repeaters,
        cost=cost,
        expected_control=exposed / 2,
        days={1: repeaters} if repeaters else {},
        capped=moments,  # no customer spends above the cap
        cap=spend if customers else None,
    )


def judged(rule_id: str, treated: _Group, control: _Group, days: int = 14) -> RuleUplift:
    return _judge(rule_id, treated, control, days)


def uplift_report(
    rules: list[RuleUplift], total: RuleUplift | None, *, window_days: int = 14, currency: str = "EUR"
) -> UpliftReport:
    return UpliftReport(
        campaign="demo",
        window_days=window_days,
        since=None,
        until=None,
        as_of=AS_OF,
        complete_until=AS_OF,
        holdout=0.5,
        cap_percentile=99.0,
        returns_netted=False,
        currency=currency,
        campaign_total=total,
        rules=rules,
    )


class Page(HTMLParser):
    """Each section's ``data-rule``, title and verdict; every ``data-field``'s text; the page's text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.titles: list[str] = []
        self.verdicts: list[str] = []
        self.fields: list[tuple[str, str]] = []
        self.text = ""
        self._open: list[tuple[str, str]] = []  # (what, field name) of the elements read into
        self.feed(html)
        self.text = re.sub(r"\s+", " ", self.text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and a.get("data-rule") is not None:
            self.sections.append(a["data-rule"] or "")
        if tag == "h2":
            self.titles.append("")
            self._open.append(("title", ""))
        elif tag == "p" and a.get("class") == "verdict":
            self.verdicts.append("")
            self._open.append(("verdict", ""))
        elif tag == "span" and a.get("data-field"):
            self.fields.append((a["data-field"] or "", ""))
            self._open.append(("field", a["data-field"] or ""))
        elif tag in ("h2", "p", "span"):
            self._open.append(("other", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h2", "p", "span") and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        self.text += data
        for what, _ in self._open:
            if what == "title":
                self.titles[-1] += data
            elif what == "verdict":
                self.verdicts[-1] += data
        if self._open and self._open[-1][0] == "field":
            name, text = self.fields[-1]
            self.fields[-1] = (name, text + data)


def ok_rule(rule_id: str = "first-mug") -> RuleUplift:
    rule = judged(rule_id, group(200, 80, cost=620.0), group(200, 50))
    assert rule.status == "ok"
    assert rule.uplift is not None
    return rule


def with_uplift(rule: RuleUplift, ci95: list[float], relative_ci95: list[float] | None) -> RuleUplift:
    assert rule.uplift is not None
    return replace(rule, uplift=replace(rule.uplift, ci95=ci95, relative_ci95=relative_ci95))


# --- the verdict ----------------------------------------------------------------------------------------------


def verdict(rule: RuleUplift) -> str:
    (said,) = Page(render_html(uplift_report([rule, ok_rule("other")], ok_rule(CAMPAIGN_ROW)))).verdicts[1:2]
    return said


def test_the_verdict_gives_the_absolute_interval_and_says_when_the_relative_one_includes_no_change() -> None:
    said = verdict(with_uplift(ok_rule(), [0.012, 0.084], [-0.05, 0.6]))
    assert said.startswith("Surprises bring customers back")
    assert "between +1.2 and +8.4 points" in said
    assert "between -5.0% and +60.0%, which includes no change" in said


def test_the_verdict_gives_both_intervals_when_both_exclude_no_change() -> None:
    said = verdict(with_uplift(ok_rule(), [0.012, 0.084], [0.03, 0.6]))
    assert "between +1.2 and +8.4 points" in said
    assert "between +3.0% and +60.0%." in said
    assert "no change" not in said


def test_the_verdict_of_an_interval_across_zero_says_so_for_both() -> None:
    said = verdict(with_uplift(ok_rule(), [-0.012, 0.084], [-0.04, 0.5]))
    assert said.startswith("Not distinguishable from no effect yet")
    assert "between -1.2 and +8.4 points (95% interval), which includes zero" in said
    assert "which includes no change" in said


def test_the_verdict_of_a_loss_gives_its_interval_and_one_without_a_relative_uplift_says_why() -> None:
    said = verdict(with_uplift(ok_rule(), [-0.084, -0.012], None))
    assert said.startswith("Surprised customers come back less")
    assert "between -8.4 and -1.2 points" in said
    assert "No relative uplift can be given" in said


# --- a one-rule campaign ----------------------------------------------------------------------------------------


def test_a_one_rule_campaign_is_shown_once_saying_the_campaign_is_that_rule() -> None:
    treated, control = group(200, 80, cost=620.0, still_open=3), group(200, 50, still_open=2)
    page = Page(
        render_html(uplift_report([judged("first-mug", treated, control)], judged(CAMPAIGN_ROW, treated, control)))
    )
    assert page.sections == ["first-mug"]
    assert "the whole campaign" in page.titles[0]
    assert "The campaign has this one rule, so the campaign as a whole is rule first-mug" in page.text


def test_a_one_rule_campaign_whose_history_differs_from_the_rule_keeps_both_sections() -> None:
    # e.g. customers first exposed to a rule since removed: the campaign then counts more than its rule
    rule = judged("first-mug", group(200, 80), group(200, 50))
    total = judged(CAMPAIGN_ROW, group(260, 90), group(250, 60))
    assert Page(render_html(uplift_report([rule], total))).sections == ["*", "first-mug"]


def test_a_campaign_of_two_rules_shows_the_whole_and_each_rule() -> None:
    page = Page(render_html(uplift_report([ok_rule("a"), ok_rule("b")], ok_rule(CAMPAIGN_ROW))))
    assert page.sections == ["*", "a", "b"]
    assert page.titles[0].startswith("The campaign as a whole")


# --- one and many -----------------------------------------------------------------------------------------------


def test_plural_is_singular_for_exactly_one() -> None:
    assert [plural(n, "day") for n in (0, 1, 1.5, 2)] == ["days", "day", "days", "days"]
    assert plural(1, "customer's window is", "customers' windows are") == "customer's window is"


def test_notes_say_one_customer_in_the_singular() -> None:
    rule = judged("tiny", group(1, 0, still_open=1), group(1, 1, still_open=1), days=4)
    assert "treated: 1 customer with a closed window; at least 30 are needed" in rule.notes
    assert "2 customers' 4-day windows are still open and not counted" in rule.notes
    one_open = judged("tiny", group(40, 10, still_open=1), group(40, 8), days=4)
    assert "1 customer's 4-day window is still open and not counted" in one_open.notes
    assert not any(re.search(r"\b1 customers\b", note) for note in [*rule.notes, *one_open.notes])


def test_pages_of_a_one_day_window_say_day_not_days() -> None:
    rule = ok_rule()
    pages = [
        render_html(uplift_report([rule, ok_rule("b")], ok_rule(CAMPAIGN_ROW), window_days=1)),
        overview_html(Overview(window_days=1, currency="EUR", as_of=AS_OF, complete_until=AS_OF, campaigns=[])),
    ]
    for html in pages:
        text = Page(html).text
        assert "within 1 day of" in text
        assert not re.search(r"\b1 days\b", text)


def test_the_plan_says_one_point_and_one_day_in_the_singular() -> None:
    plan = PowerPlan(
        baseline_repeat_rate=0.25,
        customers_per_day=1.0,
        holdout=0.5,
        detectable_uplift_30d=0.3,
        detectable_uplift_90d=0.2,
        target_uplift=0.01,
        days_for_target=1.0,
    )
    said = plan_sentence(plan)
    assert "at 1 customer a day" in said
    assert "1 point takes 1 day" in said


# --- money ----------------------------------------------------------------------------------------------------


def is_money(field: str) -> bool:
    last = field.split(".")[-1]
    return last in ("revenue_per_customer", "award_cost", "incremental_revenue") or (
        field.startswith("revenue_uplift") and last == "absolute"
    )


def test_every_amount_on_the_uplift_page_names_the_currency() -> None:
    page = Page(render_html(uplift_report([ok_rule("a"), ok_rule("b")], ok_rule(CAMPAIGN_ROW), currency="GBP")))
    assert ("currency", "GBP") in page.fields
    amounts = [(name, text) for name, text in page.fields if is_money(name)]
    assert len(amounts) >= 3 * 5
    for name, text in amounts:
        assert text.endswith(" GBP") or text == "—", (name, text)
    assert re.search(r"capped at [\d,.]+ GBP", page.text)


def test_the_programme_and_overview_pages_name_the_currency() -> None:
    rule = ok_rule(CAMPAIGN_ROW)
    programme = ProgrammeReport(
        holdout=0.05,
        since=None,
        until=None,
        as_of=AS_OF,
        complete_until=AS_OF,
        cap_percentile=99.0,
        returns_netted=False,
        currency="JPY",
        windows=[ProgrammeWindow(window_days=30, result=rule)],
    )
    glance = CampaignGlance(
        campaign="demo", status="running", description=None, holdout=0.5, customers=400, result=rule, report="/r"
    )
    overview = Overview(window_days=30, currency="JPY", as_of=AS_OF, complete_until=AS_OF, campaigns=[glance])
    for html in (programme_html(programme), overview_html(overview)):
        page = Page(html)
        assert ("currency", "JPY") in page.fields
        costs = [text for name, text in page.fields if name == "award_cost"]
        assert costs
        assert all(text.endswith(" JPY") for text in costs), costs
