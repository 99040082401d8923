"""``impact``: what a draft rule set would change against the rule set in force, on the stored events.

One pass over the events judges each by both rule sets (``backtest.replay``),
each with its own budgets, stock and customers' award logs, so what one set
spends or limits does not move the other; the profiles follow from the events
alone and are shared. Each side's figures are exactly what a ``backtest`` of
that side alone gives.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from service.events.schemas import EventIn
from service.rules.backtest import Replay, RuleTally, replay
from service.rules.ruleset import RuleSet

Status = Literal["added", "removed", "changed", "same"]

SAMPLE = 20
"""Customer ids listed of those who gain or lose a surprise: the first, in sorted order."""


@dataclass(frozen=True, slots=True)
class RuleImpact:
    campaign: str
    rule_id: str
    live: RuleTally | None
    draft: RuleTally | None
    gained: int
    """Customers this rule awards under the draft who get nothing at all under the live rules."""
    lost: int
    """Customers this rule awards under the live rules who get nothing at all under the draft."""

    @property
    def status(self) -> Status:
        """Whether the rule is new, gone, or does something else on these events (not whether its text changed)."""
        if self.live is None:
            return "added"
        if self.draft is None:
            return "removed"
        return "same" if _outcome(self.live) == _outcome(self.draft) else "changed"

    def as_row(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "rule_id": self.rule_id,
            "status": self.status,
            "live": _figures(self.live),
            "draft": _figures(self.draft),
            "gained_customers": self.gained,
            "lost_customers": self.lost,
        }


@dataclass(frozen=True, slots=True)
class Side:
    """One rule set's totals over the period."""

    version: str
    awards: int
    customers: int
    cost: Decimal

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "awards": self.awards, "customers": self.customers, "cost": float(self.cost)}


@dataclass(frozen=True, slots=True)
class Impact:
    start: dt.datetime
    end: dt.datetime
    events_read: int
    events_in_period: int
    live: Side
    draft: Side
    rules: list[RuleImpact]
    gained: list[str]
    """Customers (sorted) the draft gives a surprise who get none from the live rules over the period."""
    lost: list[str]
    """Customers (sorted) the live rules give a surprise who get none from the draft."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "events_read": self.events_read,
            "events_in_period": self.events_in_period,
            "live": self.live.as_dict(),
            "draft": self.draft.as_dict(),
            "gained": {"customers": len(self.gained), "sample": self.gained[:SAMPLE]},
            "lost": {"customers": len(self.lost), "sample": self.lost[:SAMPLE]},
            "rules": [r.as_row() for r in self.rules],
        }


async def impact(
    live: RuleSet, draft: RuleSet, events: AsyncIterator[EventIn], start: dt.datetime, end: dt.datetime
) -> Impact:
    """``events`` (in arrival order) judged by ``live`` and by ``draft`` where ``start <= occurred_at < end``,
    side by side: per rule of either, and the customers who would gain or lose a surprise."""
    as_live, as_draft = Replay(live), Replay(draft)
    stream = await replay([as_live, as_draft], events, start, end)
    awarded_live, awarded_draft = as_live.awarded(), as_draft.awarded()
    rules = []
    for key in _rule_keys(live, draft):
        was, will = as_live.tallies.get(key), as_draft.tallies.get(key)
        gained = len(will.customers - awarded_live) if will else 0
        lost = len(was.customers - awarded_draft) if was else 0
        rules.append(RuleImpact(*key, live=was, draft=will, gained=gained, lost=lost))
    return Impact(
        start,
        end,
        stream.read,
        stream.in_period,
        _side(live.version, as_live.tallies.values(), awarded_live),
        _side(draft.version, as_draft.tallies.values(), awarded_draft),
        rules,
        gained=sorted(awarded_draft - awarded_live),
        lost=sorted(awarded_live - awarded_draft),
    )


def _rule_keys(live: RuleSet, draft: RuleSet) -> list[tuple[str, str]]:
    """Every rule of either set, campaign by campaign; within one, the live rules in order, then the draft's new."""
    keys = dict.fromkeys([*live.rules_by_key, *draft.rules_by_key])
    return sorted(keys, key=lambda key: key[0])


def _side(version: str, tallies: Iterable[RuleTally], awarded: set[str]) -> Side:
    tallies = list(tallies)
    return Side(version, sum(t.awards for t in tallies), len(awarded), sum((t.cost for t in tallies), Decimal(0)))


def _outcome(tally: RuleTally) -> tuple[Any, ...]:
    return tally.matches, tally.awards, tally.held_out, tally.cost, tally.customers


def _figures(tally: RuleTally | None) -> dict[str, Any] | None:
    if tally is None:
        return None
    return {
        "matches": tally.matches,
        "awards": tally.awards,
        "held_out": tally.held_out,
        "customers": len(tally.customers),
        "cost": float(tally.cost),
    }


def render_table(result: Impact) -> str:
    header = (
        f"{'campaign':<20} {'rule_id':<28} {'status':<8} {'awards':>15} {'customers':>15} {'cost':>23} "
        f"{'gain':>5} {'lose':>5}"
    )
    lines = [
        f"rule set {result.live.version} in force against draft {result.draft.version}, events from "
        f"{result.start:%Y-%m-%d} to {result.end:%Y-%m-%d} (exclusive): {result.events_in_period} of "
        f"{result.events_read} stored events; each figure live -> draft",
        header,
        "-" * len(header),
    ]
    for r in result.rules:
        lines.append(
            f"{r.campaign:<20} {r.rule_id:<28} {r.status:<8} {_rule_change(r, lambda t: t.awards):>15} "
            f"{_rule_change(r, lambda t: len(t.customers)):>15} {_rule_change(r, lambda t: t.cost):>23} "
            f"{r.gained:>5} {r.lost:>5}"
        )
    live, draft = result.live, result.draft
    lines += [
        "-" * len(header),
        f"{'total':<58} {_change(live.awards, draft.awards):>15} {_change(live.customers, draft.customers):>15} "
        f"{_change(live.cost, draft.cost):>23}",
        _customers("gain a surprise", result.gained),
        _customers("lose every surprise", result.lost),
    ]
    return "\n".join(lines)


def _rule_change(rule: RuleImpact, figure: Callable[[RuleTally], int | Decimal]) -> str:
    return _change(*(None if t is None else figure(t) for t in (rule.live, rule.draft)))


def _change(live: int | Decimal | None, draft: int | Decimal | None) -> str:
    return f"{_number(live)} -> {_number(draft)}"


def _number(value: int | Decimal | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, Decimal) else str(value)


def _customers(what: str, ids: list[str]) -> str:
    listed = ", ".join(ids[:SAMPLE]) + (", ..." if len(ids) > SAMPLE else "")
    return f"customers who would {what}: {len(ids)}" + (f" ({listed})" if ids else "")
