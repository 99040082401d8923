"""``POST /v1/events`` and ``POST /v1/events/batch``."""

from __future__ import annotations

from litestar import Controller, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.events.schemas import BatchItemResult, BatchResult, EventBatchIn, EventIn, EventResult, semantic_errors
from service.events.service import record_event
from service.keys.guards import requires
from service.keys.scopes import EVENTS_WRITE
from service.lib.db import transaction
from service.lib.errors import DelightError, ValidationError
from service.lib.openapi import API_KEY, problem_responses, response
from service.rules.ruleset import RuleSet


class EventController(Controller):
    path = "/v1/events"
    tags = ["events"]
    security = [API_KEY]
    guards = [requires(EVENTS_WRITE)]

    @post(
        "/",
        operation_id="postEvent",
        summary="Post one event and learn whether it won something",
        status_code=201,
        responses={
            200: response(EventResult, "An exact replay of an event already received: the same awards."),
            **problem_responses(400, 401, 403, 409, 413, 422, 503),
        },
    )
    async def post_event(
        self, data: JSONBody[EventIn], db_session: NamedDependency[AsyncSession], rule_set: NamedDependency[RuleSet]
    ) -> Response[EventResult]:
        errors = semantic_errors(data)
        if errors:
            raise ValidationError(f"{len(errors)} field(s) are inconsistent", errors=errors)
        result, is_new = await record_event(db_session, rule_set, data)
        return Response(result, status_code=201 if is_new else 200)

    @post(
        "/batch",
        operation_id="postEventBatch",
        summary="Post up to 1000 events; one result per event, in order",
        description=(
            "The batch is checked as a whole first: if any event does not match the schema, nothing is stored "
            "and the 422 names every bad field. Then each event is stored in its own transaction, exactly as "
            "`POST /v1/events` would; each result carries the status that event would have had alone."
        ),
        status_code=200,
        responses=problem_responses(400, 401, 403, 413, 422, 503),
    )
    async def post_batch(
        self,
        data: JSONBody[EventBatchIn],
        sessionmaker: NamedDependency[async_sessionmaker[AsyncSession]],
        rule_set: NamedDependency[RuleSet],
    ) -> BatchResult:
        errors = [e for i, event in enumerate(data.events) for e in semantic_errors(event, f"events[{i}]")]
        if errors:
            raise ValidationError(f"{len(errors)} field(s) are inconsistent", errors=errors)
        results = []
        for event in data.events:
            try:
                async with transaction(sessionmaker) as session:
                    result, is_new = await record_event(session, rule_set, event)
            except DelightError as exc:
                results.append(BatchItemResult(event_id=event.event_id, status=exc.status, error=exc.to_problem()))
                continue
            results.append(
                BatchItemResult(
                    event_id=event.event_id,
                    status=201 if is_new else 200,
                    duplicate=result.duplicate,
                    awards=result.awards,
                )
            )
        return BatchResult(results=results)
