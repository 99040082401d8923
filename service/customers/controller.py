"""``GET /v1/customers/{customer_id}``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.awards import repository as awards_repo
from service.awards.adjustments import PointsAdjustIn, PointsAdjustOut, adjust_points
from service.awards.redemption import ledger_entry
from service.awards.schemas import award_from_row
from service.customers import repository as customers_repo
from service.customers.erasure import erase_customer
from service.customers.schemas import CustomerOut, LedgerPage
from service.events.schemas import CustomerAttributes
from service.keys.guards import actor_of, requires
from service.keys.scopes import CUSTOMERS_ERASE, CUSTOMERS_READ, RULES_ADMIN
from service.lib.errors import NotFoundError
from service.lib.openapi import API_KEY, problem_responses
from service.lib.validation import strict_body

PROFILE_LEDGER = 20
CustomerId = Annotated[str, Parameter(min_length=1, max_length=200, description="The customer's id across channels.")]


class CustomerController(Controller):
    path = "/v1/customers"
    tags = ["customers"]
    security = [API_KEY]

    @post(
        "/{customer_id:str}/points/adjust",
        operation_id="adjustPoints",
        summary="Credit or debit points by hand (goodwill, corrections); audited",
        description=(
            "Scope `rules:admin`. Idempotent per `adjustment_id`: sending it again answers 200 with `replay: true`; "
            "the same id with other points is 409. A debit the balance does not cover is 409 `insufficient-points`."
        ),
        guards=[requires(RULES_ADMIN)],
        status_code=200,
        responses=problem_responses(400, 401, 403, 404, 409, 422, 503),
    )
    async def adjust(
        self,
        request: Request[Any, Any, Any],
        customer_id: CustomerId,
        data: JSONBody[PointsAdjustIn],
        sessionmaker: NamedDependency[async_sessionmaker[AsyncSession]],
    ) -> PointsAdjustOut:
        body = strict_body(request, PointsAdjustIn)
        actor = actor_of(request)
        return await adjust_points(sessionmaker, customer_id, body, actor)

    @delete(
        "/{customer_id:str}",
        operation_id="eraseCustomer",
        summary="Erase a customer on request, keeping anonymous aggregates so reports stay right",
        description=(
            "The customer's id becomes a random pseudonym everywhere; their attributes, the customer block of "
            "their events and award messages are dropped. Amounts, times, awards and exposures stay, so reports "
            "and uplift do not change. 204 when done; 404 when there is no such customer."
        ),
        guards=[requires(CUSTOMERS_ERASE)],
        status_code=204,
        responses=problem_responses(400, 401, 403, 404, 503),
    )
    async def erase(
        self, request: Request[Any, Any, Any], customer_id: CustomerId, db_session: NamedDependency[AsyncSession]
    ) -> None:
        actor = actor_of(request)
        if "\x00" in customer_id or not await erase_customer(db_session, customer_id, actor):
            raise NotFoundError(f"no customer {customer_id!r}")

    @get(
        "/{customer_id:str}",
        operation_id="getCustomer",
        summary="A customer's profile, points balance and active awards",
        guards=[requires(CUSTOMERS_READ)],
        responses=problem_responses(400, 401, 403, 404, 503),
    )
    async def get_customer(self, customer_id: CustomerId, db_session: NamedDependency[AsyncSession]) -> CustomerOut:
        profile = None if "\x00" in customer_id else await customers_repo.get_profile(db_session, customer_id)
        if profile is None:
            raise NotFoundError(f"no customer {customer_id!r}: customers appear with their first event")
        rows = await awards_repo.active_for_customer(db_session, customer_id, dt.datetime.now(dt.UTC))
        entries = await awards_repo.ledger(db_session, customer_id, None, PROFILE_LEDGER + 1)
        return CustomerOut(
            customer_id=profile["customer_id"],
            purchase_count=profile["purchase_count"],
            return_count=profile["return_count"],
            lifetime_spend=float(profile["lifetime_spend"]),
            first_purchase_at=profile["first_purchase_at"],
            last_purchase_at=profile["last_purchase_at"],
            last_event_at=profile["last_event_at"],
            favourite_category=profile["favourite_category"],
            interaction_counts={k: int(v) for k, v in profile["interaction_counts"].items()},
            points_balance=profile["points_balance"],
            attributes=msgspec.convert(profile["attributes"], CustomerAttributes),
            awards=[award_from_row(r) for r in rows],
            ledger=[ledger_entry(e) for e in entries[:PROFILE_LEDGER]],
            ledger_next=entries[PROFILE_LEDGER - 1].entry_id if len(entries) > PROFILE_LEDGER else None,
            created_at=profile["created_at"],
            updated_at=profile["updated_at"],
        )

    @get(
        "/{customer_id:str}/points",
        operation_id="getPointsLedger",
        summary="A customer's points ledger, newest first, a page at a time",
        guards=[requires(CUSTOMERS_READ)],
        responses=problem_responses(400, 401, 403, 404, 503),
    )
    async def get_ledger(
        self,
        customer_id: CustomerId,
        db_session: NamedDependency[AsyncSession],
        before: Annotated[
            int | None, Parameter(ge=1, le=2**63 - 1, description="`next` from the previous page.")
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
    ) -> LedgerPage:
        balance = await awards_repo.balance(db_session, customer_id)
        if balance is None:
            raise NotFoundError(f"no customer {customer_id!r}: customers appear with their first event")
        entries = await awards_repo.ledger(db_session, customer_id, before, limit + 1)
        return LedgerPage(
            customer_id=customer_id,
            points_balance=balance,
            entries=[ledger_entry(e) for e in entries[:limit]],
            next=entries[limit - 1].entry_id if len(entries) > limit else None,
        )
