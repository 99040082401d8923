"""Redemption at the till: ``POST /v1/awards/{code}/redeem`` and ``POST /v1/customers/{id}/points/redeem``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.awards.redemption import (
    PointsRedeemIn,
    PointsRedemptionOut,
    RedeemIn,
    RedemptionOut,
    redeem_award,
    redemption_time,
    spend_points,
)
from service.keys.guards import requires
from service.keys.scopes import AWARDS_REDEEM
from service.lib.openapi import API_KEY, problem_responses
from service.lib.validation import strict_body
from service.rules.ruleset import RuleSet

Code = Annotated[
    str,
    Parameter(
        min_length=1, max_length=40, description="As printed: XXXX-XXXX-XXXX-X; case, dashes and spaces do not matter."
    ),
]
CustomerId = Annotated[str, Parameter(min_length=1, max_length=200)]


class RedemptionController(Controller):
    path = "/v1"
    tags = ["redemption"]
    security = [API_KEY]
    guards = [requires(AWARDS_REDEEM)]

    @post(
        "/awards/{code:str}/redeem",
        operation_id="redeemAward",
        summary="Redeem a gift or offer code for an order",
        description=(
            "Idempotent per order: redeeming again for the same order answers 200 with `replay: true`. "
            "Another order gets 409 `award-already-redeemed`; an expired award 409 `award-expired`; a points "
            "award or a reversed one 409 `award-not-redeemable`; an unknown or mistyped code 404."
        ),
        status_code=200,
        responses=problem_responses(400, 401, 403, 404, 409, 422, 503),
    )
    async def redeem(
        self,
        request: Request[Any, Any, Any],
        code: Code,
        data: JSONBody[RedeemIn],
        db_session: NamedDependency[AsyncSession],
        rule_set: NamedDependency[RuleSet],
    ) -> RedemptionOut:
        body = strict_body(request, RedeemIn)
        when = redemption_time(body.redeemed_at, dt.datetime.now(dt.UTC), rule_set.settings.offline_redemptions)
        return await redeem_award(db_session, code, body.order_id, when, rule_set.settings.webhooks)

    @post(
        "/customers/{customer_id:str}/points/redeem",
        operation_id="redeemPoints",
        summary="Spend points for an order",
        description=(
            "The balance never goes below zero: a spend it does not cover is 409 `insufficient-points`. "
            "Idempotent per order: the same order and points again answer 200 with `replay: true`; the same "
            "order with other points is 409 `points-order-conflict`."
        ),
        status_code=200,
        responses=problem_responses(400, 401, 403, 404, 409, 422, 503),
    )
    async def redeem_points(
        self,
        request: Request[Any, Any, Any],
        customer_id: CustomerId,
        data: JSONBody[PointsRedeemIn],
        sessionmaker: NamedDependency[async_sessionmaker[AsyncSession]],
        rule_set: NamedDependency[RuleSet],
    ) -> PointsRedemptionOut:
        body = strict_body(request, PointsRedeemIn)
        when = redemption_time(body.redeemed_at, dt.datetime.now(dt.UTC), rule_set.settings.offline_redemptions)
        return await spend_points(sessionmaker, customer_id, body.points, body.order_id, when)
