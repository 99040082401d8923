"""Splitting a condition into the clauses ``simulate`` shows one by one.

``a and b and c`` (or ``a or b``) splits at its top level, outside brackets,
parentheses and strings; each clause is itself a valid expression, compiled
with the same typed context and evaluated on the same facts.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping, Sized
from typing import Any

import rule_engine

from service.rules.facts import rule_context

_WORD = re.compile(r"\b(and|or)\b")
_OPEN, _CLOSE = "([{", ")]}"


def split(text: str) -> tuple[str, list[str]]:
    """``("and" | "or" | "", clauses)``: ``or`` binds loosest, so it splits first.

    Only the ternary ``c ? a : b`` binds looser still, so a condition with one
    at its top level is a single clause (``c ? x and y : z and w`` is one
    ternary, whose branches hold the ``and``).
    """
    if _has_ternary(text):
        return "", [text.strip()]
    for operator in ("or", "and"):
        parts = _split_on(text, operator)
        if len(parts) > 1:
            return operator, parts
    return "", [text.strip()]


def _top_level(text: str) -> Iterator[int]:
    """The positions of the characters outside brackets and string literals."""
    depth, quote, i = 0, "", 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 2
                continue
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
        elif depth == 0:
            yield i
        i += 1


def _split_on(text: str, operator: str) -> list[str]:
    parts, start = [], 0
    for i in _top_level(text):
        if i < start:  # inside the operator word just split on
            continue
        match = _WORD.match(text, i)
        if match and match.group(1) == operator and (i == 0 or not text[i - 1].isalnum()):
            parts.append(text[start:i].strip())
            start = match.end()
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _has_ternary(text: str) -> bool:
    """Whether a ternary ``?`` stands at the top level (not ``??``, ``?.`` or ``?[``, not in brackets or strings)."""
    return any(
        text[i] == "?" and text[i + 1 : i + 2] not in ("?", ".", "[") and text[i - 1 : i] != "?"
        for i in _top_level(text)
    )


@functools.lru_cache(maxsize=4096)
def _compiled(text: str) -> Any:
    return rule_engine.Rule(text, context=rule_context())


def evaluate(text: str, facts: dict[str, Any]) -> tuple[Any, str | None]:
    """``(value, None)`` or ``(None, why it could not be evaluated)``."""
    try:
        return _compiled(text).evaluate(facts), None
    except (rule_engine.EngineError, LookupError, TypeError, ArithmeticError) as exc:
        return None, why(exc, text)


def why(exc: Exception, text: str) -> str:
    """What kept clause ``text`` from being evaluated, in the clause's own terms (``attributes` has no `rating``)
    rather than the error's Python form, which shows rule-engine's internal values."""
    if isinstance(exc, rule_engine.errors.AttributeResolutionError):
        name = exc.attribute_name
        owner = re.search(rf"([A-Za-z_$][\w$]*(?:&?\.[A-Za-z_]\w*)*)&?\.{re.escape(name)}\b", text)
        return f"`{owner.group(1)}` has no `{name}`" if owner else f"there is no `{name}` to read"
    if isinstance(exc, rule_engine.errors.SymbolResolutionError):
        return f"there is no field `{exc.symbol_name}`"
    if isinstance(exc, rule_engine.errors.LookupError):
        if isinstance(exc.container, Mapping):
            return f"there is no key {json.dumps(exc.item, default=str)} to read"
        if isinstance(exc.container, Sized):
            return f"there is no item [{exc.item}] to read: the list holds {len(exc.container)}"
    if isinstance(exc, rule_engine.EngineError):
        return str(exc.message)
    return str(exc) or type(exc).__name__
