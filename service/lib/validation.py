"""Decoding request bodies with every error named, not just the first.

msgspec decodes fast and stops at the first problem. When it does, the body is
checked again against the JSON Schema generated from the same msgspec type so
that the client learns about every bad field in one response.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterable
from typing import Any, TypeVar

import jsonschema
import msgspec
from litestar import Request
from litestar.types import Empty
from litestar.utils.scope.state import ScopeState

from service.lib.errors import FieldError, MalformedRequestError, ValidationError

T = TypeVar("T")


_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("date-time", raises=ValueError)
def _is_datetime(value: object) -> bool:
    """RFC 3339: a date, a time and an offset (``Z`` or ``+01:00``)."""
    if isinstance(value, str) and dt.datetime.fromisoformat(value).tzinfo is None:
        raise ValueError("a date-time needs a time zone offset")
    return True


@_FORMATS.checks("date", raises=ValueError)
def _is_date(value: object) -> bool:
    if isinstance(value, str):
        dt.date.fromisoformat(value)
    return True


@functools.cache
def _validator(model: Any) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(msgspec.json.schema(model), format_checker=_FORMATS)


def _path(parts: Iterable[Any], prefix: str = "") -> str:
    out = prefix
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(body)"


def split_msgspec_message(message: str) -> tuple[str, str]:
    """Split msgspec's ``"... - at `$.a[0].b`"`` into a field path and a message."""
    text, sep, where = message.rpartition(" - at `")
    if not sep:
        return "(body)", message
    path = where.rstrip("`").removeprefix("$").removeprefix(".")
    return path or "(body)", text


def _leaves(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """The errors that say what is wrong, looking inside ``anyOf`` (how optional fields are written)."""
    if error.validator in ("anyOf", "oneOf") and error.context:
        # Drop the "is not null" complaints of optional fields; keep what the real branch says.
        real = [e for e in error.context if not (e.validator == "type" and e.validator_value == "null")]
        if real:
            return [leaf for e in real for leaf in _leaves(e)]
    return [error]


def _describe(error: jsonschema.ValidationError, prefix: str) -> list[tuple[str, str]]:
    if error.validator == "required" and isinstance(error.instance, dict):
        required = error.validator_value if isinstance(error.validator_value, list) else []
        return [
            (_path([*error.absolute_path, key], prefix), "is required") for key in required if key not in error.instance
        ]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        schema = error.schema if isinstance(error.schema, dict) else {}
        known = set(schema.get("properties", {}))
        return [
            (_path([*error.absolute_path, key], prefix), "unknown field") for key in error.instance if key not in known
        ]
    if error.validator == "pattern" and isinstance(error.schema, dict) and error.schema.get("description"):
        # the field's own words for what it accepts, rather than the regular expression
        return [
            (_path(error.absolute_path, prefix), f"{error.instance!r} is not allowed: {error.schema['description']}")
        ]
    size = _SIZES.get(str(error.validator))
    if size is not None and isinstance(error.instance, (list, str, dict)):
        bound, unit = size
        return [
            (
                _path(error.absolute_path, prefix),
                f"{bound} {error.validator_value} {unit}; this has {len(error.instance)}",
            )
        ]
    return [(_path(error.absolute_path, prefix), _without_long_values(error))]


# The size limits, said with the limit and the size found rather than jsonschema's message, which begins with the
# whole value: a batch of 1,001 events answered with all of them.
_SIZES = {
    "maxItems": ("at most", "items"),
    "minItems": ("at least", "items"),
    "maxLength": ("at most", "characters"),
    "minLength": ("at least", "characters"),
    "maxProperties": ("at most", "entries"),
    "minProperties": ("at least", "entries"),
}
LONGEST_VALUE_SHOWN = 80
"""Characters of a bad value an error message repeats; a longer one is described instead."""


def _without_long_values(error: jsonschema.ValidationError) -> str:
    """jsonschema's message, with the value it begins with described when it is too long to repeat."""
    shown = repr(error.instance)
    if len(shown) <= LONGEST_VALUE_SHOWN or not error.message.startswith(shown):
        return error.message
    if isinstance(error.instance, str):
        described = f"a text of {len(error.instance):,} characters"
    elif isinstance(error.instance, list):
        described = f"a list of {len(error.instance):,} items"
    elif isinstance(error.instance, dict):
        described = f"an object of {len(error.instance):,} entries"
    else:
        described = shown[:LONGEST_VALUE_SHOWN] + "..."
    return described + error.message[len(shown) :]


def schema_errors(model: Any, raw: Any, prefix: str = "") -> list[FieldError]:
    leaves = [leaf for error in _validator(model).iter_errors(raw) for leaf in _leaves(error)]
    errors = {item for leaf in leaves for item in _describe(leaf, prefix)}
    return [FieldError(field=f, message=m) for f, m in sorted(errors)]


def nul_errors(raw: Any, path: tuple[str | int, ...] = ()) -> list[FieldError]:
    """Text with NUL characters, which PostgreSQL cannot store (in keys or values, at any depth)."""
    if isinstance(raw, str):
        return (
            [FieldError(field=_path(path), message="must not contain NUL (\\u0000) characters")]
            if "\x00" in raw
            else []
        )
    if isinstance(raw, dict):
        found = []
        for key, value in raw.items():
            if isinstance(key, str) and "\x00" in key:
                found.append(FieldError(field=_path(path), message="keys must not contain NUL (\\u0000) characters"))
            found.extend(nul_errors(value, (*path, key)))
        return found
    if isinstance(raw, list):
        return [error for i, item in enumerate(raw) for error in nul_errors(item, (*path, i))]
    return []


def convert(raw: Any, model: type[T], prefix: str = "") -> T:
    """Convert decoded JSON to ``model`` strictly (no "12.5" for 12.5) or raise a 422 naming every bad field."""
    try:
        value = msgspec.convert(raw, model, strict=True)
    except msgspec.ValidationError as exc:
        errors = schema_errors(model, raw, prefix)
        if not errors:
            field, message = split_msgspec_message(str(exc))
            errors = [FieldError(field=_path([field], prefix) if prefix else field, message=message)]
        raise ValidationError(f"{len(errors)} field(s) do not match the schema", errors=errors) from None
    errors = nul_errors(raw)
    if errors:
        raise ValidationError(f"{len(errors)} field(s) hold text that cannot be stored", errors=errors)
    return value


def strict_body(request: Request[Any, Any, Any], model: type[T]) -> T:
    """The request's JSON body converted strictly to ``model``.

    Litestar has already parsed the body (and converted it leniently for the
    handler's signature); this holds it to the published schema.
    """
    raw = ScopeState.from_scope(request.scope).json
    if raw is Empty:
        raise MalformedRequestError("the request body is empty; send a JSON document")
    return convert(raw, model)


# A date and a time, and an offset when there is one (a time without one is refused by the handler, with 422).
_RFC_3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:\d{2})?")
DATE_TIME_QUERY = ("from", "to", "as_of")
"""The date-time query parameters of the report and export routes."""


async def date_time_query(request: Request[Any, Any, Any]) -> None:
    """Refuse a date-time query parameter that is not written as a date and a time.

    Litestar reads a bare number such as ``1700000000`` as a Unix timestamp,
    which the contract (RFC 3339) does not allow and nobody means: 400, as for
    any other unparseable parameter. Runs as the controllers' ``before_request``.
    """
    bad = [
        FieldError(name, "must be an RFC 3339 date-time, like 2026-03-01T00:00:00Z")
        for name in DATE_TIME_QUERY
        if (value := request.query_params.get(name)) is not None and not _RFC_3339.fullmatch(value)
    ]
    if bad:
        raise MalformedRequestError(
            f"{', '.join(e.field for e in bad)} must be an RFC 3339 date-time, like 2026-03-01T00:00:00Z", errors=bad
        )
