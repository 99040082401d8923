"""Which rules can an event possibly match? An index by what conditions require.

Most conditions start by naming the event they are about: ``type ==
"interaction" and name == "review"``, ``type == "purchase" and channel in
["web", "app"]``. A clause of a condition's top-level ``and`` that pins
``type``, ``channel`` or ``name`` to literal strings must hold for the
condition to hold, so an event whose values differ cannot match and need not
be evaluated at all. The requirements are read from the parsed, type-checked
expression (not the text), and the rules an event can match are worked out
once per distinct (type, channel, name) and kept with the rule set.

Skipping is exact: a skipped rule's condition is false (or could not be
evaluated, which counts as false) on that event. ``tests/test_rule_index.py``
checks it against evaluating every rule.
"""

from __future__ import annotations

from typing import Any

from rule_engine import ast

INDEXED = ("type", "channel", "name")
"""Event fields the index keys on: strings every event has (``""`` when absent)."""

Requirements = dict[str, frozenset[str]]


def requirements(expression: Any) -> Requirements:
    """``{field: values}``: the condition can only hold when ``field`` is one of ``values``."""
    if isinstance(expression, ast.LogicExpression):
        left, right = requirements(expression.left), requirements(expression.right)
        if expression.type == "and":  # both must hold: each side's requirements apply
            merged = dict(left)
            for name, values in right.items():
                merged[name] = merged[name] & values if name in merged else values
            return merged
        if expression.type == "or":  # one must hold: only a field both sides pin, to either's values
            return {name: left[name] | right[name] for name in left.keys() & right.keys()}
        return {}
    if isinstance(expression, ast.ComparisonExpression) and expression.type == "eq":
        for symbol, literal in ((expression.left, expression.right), (expression.right, expression.left)):
            pinned = _field(symbol)
            if pinned is not None and isinstance(literal, ast.StringExpression):
                return {pinned: frozenset({literal.value})}
        return {}
    if isinstance(expression, ast.ContainsExpression):
        member = _field(expression.member)
        literals = _strings(expression.container)
        if member is not None and literals is not None:
            return {member: literals}
    return {}


def _field(node: Any) -> str | None:
    """The indexed event field a node reads, if it is a plain symbol naming one."""
    if isinstance(node, ast.SymbolExpression) and node.scope is None and node.name in INDEXED:
        return str(node.name)
    return None


def _strings(node: Any) -> frozenset[str] | None:
    """The members of a literal array or set made only of strings; ``None`` for anything else."""
    if not isinstance(node, (ast.ArrayExpression, ast.SetExpression)):
        return None
    if not all(isinstance(member, ast.StringExpression) for member in node.value):
        return None
    return frozenset(member.value for member in node.value)


def admits(required: Requirements, key: tuple[str, str, str]) -> bool:
    """Whether an event with ``key`` = (type, channel, name) meets every requirement."""
    return all(key[INDEXED.index(name)] in values for name, values in required.items())
