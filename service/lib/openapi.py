"""Helpers that keep every route's documented responses complete and alike."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPI, OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Schema

from service.lib.errors import PROBLEM_MEDIA_TYPE, Problem

API_KEY: dict[str, list[str]] = {"apiKey": []}
"""The security requirement of every route that needs a key."""

_DESCRIPTIONS = {
    400: "Malformed request: the body is not JSON, or a parameter cannot be read.",
    401: "No API key, or one that is not valid.",
    403: "The API key lacks the scope this needs.",
    404: "Not found.",
    409: "Conflict with what is already stored.",
    413: "The request body is too large.",
    422: "The request does not match the schema; `errors` names every bad field.",
    503: "A backing service is unavailable; retry later.",
}


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    return {status: problem_response(_DESCRIPTIONS[status]) for status in statuses}


def problem_response(description: str) -> ResponseSpec:
    """A problem answer a route describes in its own words."""
    return ResponseSpec(data_container=Problem, description=description, media_type=PROBLEM_MEDIA_TYPE)


def response(model: Any, description: str) -> ResponseSpec:
    return ResponseSpec(data_container=model, description=description)


def _strict_struct_names() -> set[str]:
    """Names of the request models that refuse unknown fields (``forbid_unknown_fields=True``)."""
    names: set[str] = set()
    pending: list[type[msgspec.Struct]] = [msgspec.Struct]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__struct_config__.forbid_unknown_fields:
            names.add(cls.__name__)
    return names


def finish(schema: OpenAPI) -> None:
    """What Litestar cannot say from the handlers' signatures alone.

    Request models refuse unknown fields, so their schemas say
    ``additionalProperties: false``; the reports that answer CSV (and HTML)
    by content negotiation document those media types too.
    """
    strict = _strict_struct_names()
    for name, component in (schema.components.schemas or {}).items():
        if name in strict and isinstance(component, Schema):
            component.additional_properties = False
    text = Schema(type=OpenAPIType.STRING)
    alternatives = {
        "getRedemptionReport": ("text/csv",),
        "getUpliftReport": ("text/csv", "text/html"),
        "getProgrammeReport": ("text/csv", "text/html"),
        "getCampaignsOverview": ("text/csv", "text/html"),
    }
    for item in (schema.paths or {}).values():
        operation = item.get
        if operation is None or operation.operation_id not in alternatives or not operation.responses:
            continue
        ok = operation.responses.get("200")
        if isinstance(ok, OpenAPIResponse) and ok.content is not None:
            for media_type in alternatives[operation.operation_id]:
                ok.content[media_type] = OpenAPIMediaType(schema=text)
