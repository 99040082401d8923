"""Safe message templates: ``{{ customer.first_name }}`` and nothing more.

A template can only name fields of the event and the customer (checked when
the rule set loads); it cannot call anything, index into Python objects or
loop. Rendering looks values up in plain dictionaries.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
PATH = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$")


class TemplateError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Template:
    source: str
    parts: tuple[str | tuple[str, ...], ...]

    @classmethod
    def compile(cls, source: str, field_exists: Callable[[tuple[str, ...]], bool]) -> Template:
        parts: list[str | tuple[str, ...]] = []
        pos = 0
        for match in PLACEHOLDER.finditer(source):
            parts.append(_literal(source[pos : match.start()]))
            expression = match.group(1)
            if not PATH.match(expression):
                raise TemplateError(
                    f"template placeholder {{{{ {expression} }}}} must be a field name like customer.first_name"
                )
            path = tuple(expression.split("."))
            if not field_exists(path):
                raise TemplateError(f"template placeholder {{{{ {expression} }}}} names an unknown field")
            parts.append(path)
            pos = match.end()
        parts.append(_literal(source[pos:]))
        return cls(source=source, parts=tuple(p for p in parts if p != ""))

    def render(self, facts: Mapping[str, Any]) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value: Any = facts
            for key in part:
                value = value.get(key) if isinstance(value, Mapping) else None
                if value is None:
                    break
            out.append(_text(value))
        return "".join(out)


def _literal(text: str) -> str:
    if "{{" in text or "}}" in text:
        raise TemplateError("unbalanced '{{' or '}}' in template")
    return text


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return str(value.quantize(Decimal("0.01"))) if value != value.to_integral_value() else str(int(value))
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
