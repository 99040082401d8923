"""``GET /v1/rules``: the active rule set, with what each campaign has spent."""

from __future__ import annotations

import datetime as dt
from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from msgspec import Struct
from sqlalchemy.ext.asyncio import AsyncSession

from service.controls import repository as controls_repo
from service.customers import repository as customers_repo
from service.customers.profile import empty_profile
from service.events.schemas import semantic_errors
from service.keys.guards import actor_of, requires
from service.keys.scopes import RULES_ADMIN
from service.lib.errors import FieldError, RuleSetRefusedError, ValidationError
from service.lib.openapi import API_KEY, problem_response, problem_responses
from service.lib.validation import strict_body
from service.rules import repository as rules_repo
from service.rules.loader import RuleSetError
from service.rules.registry import RuleRegistry
from service.rules.ruleset import Campaign, Limit, RuleSet
from service.rules.simulate import (
    SimulateIn,
    SimulationOut,
    counter_keys,
    draft_rule_set,
    profile_from_input,
    simulate,
)


class LimitOut(Struct):
    per_customer: int
    every_seconds: int


class VariantOut(Struct):
    id: str
    kind: str
    weight: float
    cost: float


class RuleOut(Struct):
    id: str
    when: str
    kind: str
    """``points``, ``gift``, ``offer``, or ``one_of`` for a rule with reward variants (``variants``)."""
    chance: float
    priority: int
    cost: float
    """What one award costs; for a rule with variants, its first variant's."""
    limit: LimitOut | None
    source: str
    line: int
    variants: list[VariantOut] | None = None


class BudgetOut(Struct):
    """Caps (``null`` when not set), what was spent, and what is left."""

    awards: int | None
    cost: float | None
    daily_awards: int | None
    daily_cost: float | None
    awards_spent: int
    cost_spent: float
    awards_left: int | None
    cost_left: float | None
    awards_today: int
    cost_today: float


class CampaignOut(Struct):
    campaign: str
    description: str | None
    active_from: dt.date | None
    active_until: dt.date | None
    holdout: float
    limit: LimitOut | None
    budget: BudgetOut | None
    awards_today: int
    source: str
    rules: list[RuleOut]


class GiftOut(Struct):
    id: str
    name: str
    unit_cost: float
    stock: int | None
    stock_left: int | None


class RuleSetOut(Struct):
    version: str
    loaded_at: dt.datetime
    timezone: str
    campaigns: list[CampaignOut]
    gifts: list[GiftOut]


def _limit(limit: Limit | None) -> LimitOut | None:
    return None if limit is None else LimitOut(limit.count, limit.seconds)


async def rule_set_overview(db: AsyncSession, rule_set: RuleSet) -> RuleSetOut:
    """The rule set in force with each campaign's budget spent and left, today's awards and each gift's stock."""
    today = dt.datetime.now(rule_set.zone).date()
    keys = [f"budget:{c.name}" for c in rule_set.campaigns]
    keys += [f"daily:{c.name}:{today.isoformat()}" for c in rule_set.campaigns]
    keys += [f"stock:{g}" for g in rule_set.gifts]
    usage = await controls_repo.usage(db, keys)
    today_counts = await rules_repo.awards_between(db, today, today, rule_set.zone)

    def spent(key: str) -> tuple[int, float]:
        n, cents = usage.get(key, (0, 0))
        return n, cents / 100

    def budget(c: Campaign) -> BudgetOut | None:
        if c.budget is None:
            return None
        b = c.budget
        n, cost = spent(f"budget:{c.name}")
        n_today, cost_today = spent(f"daily:{c.name}:{today.isoformat()}")
        return BudgetOut(
            awards=b.awards,
            cost=None if b.cost is None else float(b.cost),
            daily_awards=b.daily_awards,
            daily_cost=None if b.daily_cost is None else float(b.daily_cost),
            awards_spent=n,
            cost_spent=cost,
            awards_left=None if b.awards is None else max(b.awards - n, 0),
            cost_left=None if b.cost is None else max(round(float(b.cost) - cost, 2), 0.0),
            awards_today=n_today,
            cost_today=cost_today,
        )

    return RuleSetOut(
        version=rule_set.version,
        loaded_at=rule_set.loaded_at,
        timezone=rule_set.settings.timezone,
        campaigns=[
            CampaignOut(
                campaign=c.name,
                description=c.description,
                active_from=c.starts,
                active_until=c.until,
                holdout=c.holdout,
                limit=_limit(c.limit),
                budget=budget(c),
                awards_today=today_counts.get(c.name, 0),
                source=c.source,
                rules=[
                    RuleOut(
                        r.id,
                        r.when,
                        r.kind,
                        r.chance,
                        r.priority,
                        float(r.cost),
                        _limit(r.limit),
                        r.source,
                        r.line,
                        [VariantOut(v.variant or "", v.kind, v.weight, float(v.cost)) for v in r.variants] or None,
                    )
                    for r in c.rules
                ],
            )
            for c in rule_set.campaigns
        ],
        gifts=[
            GiftOut(
                id=g.id,
                name=g.name,
                unit_cost=float(g.unit_cost),
                stock=g.stock,
                stock_left=None if g.stock is None else max(g.stock - spent(f"stock:{g.id}")[0], 0),
            )
            for g in rule_set.gifts.values()
        ],
    )


class ReloadOut(Struct):
    version: str
    previous_version: str
    changed: bool
    loaded_at: dt.datetime
    campaigns: int
    rules: int


class RulesController(Controller):
    path = "/v1/rules"
    tags = ["rules"]
    security = [API_KEY]
    guards = [requires(RULES_ADMIN)]

    @get(
        "/",
        operation_id="getRules",
        summary="The active rule set, with budgets, stock and today's awards",
        responses=problem_responses(401, 403, 503),
    )
    async def get_rules(
        self, rule_set: NamedDependency[RuleSet], db_session: NamedDependency[AsyncSession]
    ) -> RuleSetOut:
        return await rule_set_overview(db_session, rule_set)

    @post(
        "/reload",
        operation_id="reloadRules",
        summary="Load the rules directory again and put it in force on every replica",
        description=(
            "A rule set with any error is refused whole with a 422 listing every error as `path:line`; the rule "
            "set in force stays. Other processes and replicas on the same database adopt the new version within "
            "a second or two."
        ),
        status_code=200,
        responses={
            **problem_responses(401, 403, 503),
            422: problem_response(
                "The rule set was refused (`rule-set-refused`): `errors` lists each error, its `field` the file and "
                "line; the rule set in force stays."
            ),
        },
    )
    async def reload_rules(self, request: Request[Any, Any, Any], registry: NamedDependency[RuleRegistry]) -> ReloadOut:
        actor = actor_of(request)
        try:
            previous, new = await registry.reload(actor)
        except RuleSetError as exc:
            errors = [FieldError(field=f"{e.path}:{e.line}", message=e.message) for e in exc.errors]
            raise RuleSetRefusedError(
                f"the rule set has {len(errors)} error(s); the one in force ({registry.current.version}) stays",
                errors=errors,
            ) from None
        return ReloadOut(
            version=new.version,
            previous_version=previous.version,
            changed=new.version != previous.version,
            loaded_at=new.loaded_at,
            campaigns=len(new.campaigns),
            rules=new.rule_count,
        )

    @post(
        "/simulate",
        operation_id="simulateRules",
        summary="Explain what every rule would do with one event; writes nothing",
        description=(
            "Runs the event through the active rule set on the customer's stored profile (or on `customer`, a "
            "profile as it stands before the event) and the budgets, stock and limits as they stand. For every "
            "rule: whether it matched, the value of each clause of its condition, the chance draw, the holdout "
            "group, limit and counter state, and the award it would give with its message rendered. With `draft`, "
            "the event runs through that rule set instead (a draft with errors is answered 422, each error's "
            "`field` being `draft/FILE:LINE`)."
        ),
        status_code=200,
        responses=problem_responses(400, 401, 403, 422, 503),
    )
    async def simulate_event(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[SimulateIn],
        rule_set: NamedDependency[RuleSet],
        db_session: NamedDependency[AsyncSession],
    ) -> SimulationOut:
        data = strict_body(request, SimulateIn)
        errors = semantic_errors(data.event, "event")
        if errors:
            raise ValidationError(f"{len(errors)} field(s) are inconsistent", errors=errors)
        if data.draft is not None:
            try:
                rule_set = draft_rule_set(rule_set, data.draft)
            except RuleSetError as exc:
                raise ValidationError(
                    f"the draft has {len(exc.errors)} error(s)",
                    errors=[FieldError(field=f"{e.path}:{e.line}", message=e.message) for e in exc.errors],
                ) from None
        customer_id = data.event.customer_id
        if data.customer is not None:
            profile = profile_from_input(customer_id, data.customer)
        else:
            profile = await customers_repo.get_profile(db_session, customer_id) or empty_profile(customer_id)
        usage = await controls_repo.usage(db_session, counter_keys(rule_set, data.event))
        return simulate(rule_set, data.event, profile, usage)
