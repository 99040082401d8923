"""Helpers that keep every route's documented responses complete and alike."""

from __future__ import annotations

from typing import Any

from litestar.openapi.datastructures import ResponseSpec

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
    return {
        status: ResponseSpec(data_container=Problem, description=_DESCRIPTIONS[status], media_type=PROBLEM_MEDIA_TYPE)
        for status in statuses
    }


def response(model: Any, description: str) -> ResponseSpec:
    return ResponseSpec(data_container=model, description=description)
