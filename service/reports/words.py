"""Counts in words: "1 customer", "2 customers", "1.5 days"."""

from __future__ import annotations


def plural(n: float, one: str, many: str | None = None) -> str:
    """``one`` for exactly 1, otherwise ``many`` (``one`` with an "s" unless given)."""
    if n == 1:
        return one
    return many if many is not None else one + "s"
