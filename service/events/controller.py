"""``POST /v1/events`` and ``POST /v1/events/batch``.

A well-formed event posted to exactly ``/v1/events`` with a bearer key is
served by ``service.events.ingest`` with the same functions, straight from
ASGI; ``post_event`` answers everything else sent there and defines the
contract (the OpenAPI document comes from it). A change to one is a change
to both: ``tests/test_events_ingest.py`` compares them.
"""

from __future__ import annotations

from typing import Any

import asyncpg  # type: ignore[import-untyped]
import structlog
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy.exc import DBAPIError

from service.events.schemas import BatchItemResult, BatchResult, EventBatchIn, EventIn, EventResult, semantic_errors
from service.events.service import EVENT_LOG_FIELDS, record_event_retrying
from service.keys.guards import requires
from service.keys.scopes import EVENTS_WRITE
from service.lib.db import DATABASE_DOWN, translate_error
from service.lib.errors import DelightError, ValidationError
from service.lib.logging import get_logger
from service.lib.openapi import API_KEY, problem_responses, response
from service.lib.validation import strict_body
from service.rules.ruleset import RuleSet

log = get_logger(__name__)


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
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[EventIn],
        rule_set: NamedDependency[RuleSet],
    ) -> Response[EventResult]:
        data = strict_body(request, EventIn)
        errors = semantic_errors(data)
        if errors:
            raise ValidationError(f"{len(errors)} field(s) are inconsistent", errors=errors)
        state = request.app.state
        result, is_new = await record_event_retrying(state.engine, rule_set, data, state.settings.app.retention_days)
        return Response(result, status_code=201 if is_new else 200)

    @post(
        "/batch",
        operation_id="postEventBatch",
        summary="Post up to 1000 events; one result per event, in order",
        description=(
            "The batch is checked as a whole first: if any event does not match the schema, nothing is stored "
            "and the 422 names every bad field. Then each event is stored in its own transaction, exactly as "
            "`POST /v1/events` would; each result carries the status that event would have had alone "
            "(201, 200 for a replay, 409 for a conflict, 503 when the database failed for that event). "
            "Retrying a whole batch is always safe: events already stored answer 200 with their awards."
        ),
        status_code=200,
        responses=problem_responses(400, 401, 403, 413, 422, 503),
    )
    async def post_batch(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[EventBatchIn],
        rule_set: NamedDependency[RuleSet],
    ) -> BatchResult:
        data = strict_body(request, EventBatchIn)
        errors = [e for i, event in enumerate(data.events) for e in semantic_errors(event, f"events[{i}]")]
        if errors:
            raise ValidationError(f"{len(errors)} field(s) are inconsistent", errors=errors)
        engine = request.app.state.engine
        retention_days = request.app.state.settings.app.retention_days
        results = []
        for event in data.events:
            try:
                result, is_new = await record_event_retrying(engine, rule_set, event, retention_days)
            except DelightError as exc:
                results.append(BatchItemResult(event_id=event.event_id, status=exc.status, error=exc.to_problem()))
                continue
            except (DBAPIError, asyncpg.PostgresError, *DATABASE_DOWN) as exc:
                # The events before this one are stored; say so per event rather than failing the whole answer.
                error = translate_error(exc)
                if error is None:
                    raise
                log.warning("batch_event_failed", event_id=event.event_id, error=type(exc).__name__)
                results.append(BatchItemResult(event_id=event.event_id, status=error.status, error=error.to_problem()))
                continue
            log.info("event_recorded")  # with what record_event_retrying bound; unbound for the next event
            structlog.contextvars.unbind_contextvars(*EVENT_LOG_FIELDS)
            results.append(
                BatchItemResult(
                    event_id=event.event_id,
                    status=201 if is_new else 200,
                    duplicate=result.duplicate,
                    awards=result.awards,
                )
            )
        return BatchResult(results=results)
