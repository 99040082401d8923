"""``GET /v1/rules``: the active rule set."""

from __future__ import annotations

import datetime as dt

from litestar import Controller, get
from litestar.di import NamedDependency
from msgspec import Struct

from service.keys.guards import requires
from service.keys.scopes import RULES_ADMIN
from service.lib.openapi import API_KEY, problem_responses
from service.rules.ruleset import RuleSet


class RuleOut(Struct):
    id: str
    when: str
    kind: str
    chance: float
    source: str
    line: int


class CampaignOut(Struct):
    campaign: str
    description: str | None
    active_from: dt.date | None
    active_until: dt.date | None
    source: str
    rules: list[RuleOut]


class RuleSetOut(Struct):
    version: str
    loaded_at: dt.datetime
    campaigns: list[CampaignOut]


class RulesController(Controller):
    path = "/v1/rules"
    tags = ["rules"]
    security = [API_KEY]
    guards = [requires(RULES_ADMIN)]

    @get("/", operation_id="getRules", summary="The active rule set", responses=problem_responses(401, 403))
    async def get_rules(self, rule_set: NamedDependency[RuleSet]) -> RuleSetOut:
        return RuleSetOut(
            version=rule_set.version,
            loaded_at=rule_set.loaded_at,
            campaigns=[
                CampaignOut(
                    campaign=c.name,
                    description=c.description,
                    active_from=c.starts,
                    active_until=c.until,
                    source=c.source,
                    rules=[RuleOut(r.id, r.when, r.kind, r.chance, r.source, r.line) for r in c.rules],
                )
                for c in rule_set.campaigns
            ],
        )
