"""Splitting conditions into clauses for ``simulate``."""

from __future__ import annotations

import pytest

from service.rules.clauses import split


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('type == "purchase"', ("", ['type == "purchase"'])),
        ('type == "purchase" and order.total >= 300', ("and", ['type == "purchase"', "order.total >= 300"])),
        ("a == 1 or b == 2 and c == 3", ("or", ["a == 1", "b == 2 and c == 3"])),
        ("(a == 1 or b == 2) and c == 3", ("and", ["(a == 1 or b == 2)", "c == 3"])),
        ('name == "rock and roll" and x > 1', ("and", ['name == "rock and roll"', "x > 1"])),
        (
            "[i for i in order.items if i.a and i.b].length > 0 and y",
            ("and", ["[i for i in order.items if i.a and i.b].length > 0", "y"]),
        ),
        ('brand == "o\'neill" and x', ("and", ['brand == "o\'neill"', "x"])),
        ("android == 1 and orange == 2", ("and", ["android == 1", "orange == 2"])),
    ],
)
def test_conditions_split_at_their_top_level_only(text: str, expected: tuple[str, list[str]]) -> None:
    assert split(text) == expected
