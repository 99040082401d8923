"""Conditions compiled to Python closures, once per rule-set version.

``rule-engine`` evaluates a condition by walking its syntax tree and coercing
every value it touches, which costs tens of microseconds per rule. Here the
parsed, type-checked tree is turned into nested closures that do the same
thing directly. Semantics follow ``rule-engine`` node by node (numbers compare
as ``Decimal``, ``==`` between different types is false, ordering different
types is an error, null-safe navigation, ``??``); a condition using anything
not covered here (function calls, built-in symbols, bitwise operators) keeps
``rule-engine``'s own evaluation. Any error while evaluating means the
condition does not hold, exactly as with ``rule-engine``.
"""

from __future__ import annotations

import collections
import collections.abc
import datetime as dt
import functools
import itertools
import math
import operator
import threading
from collections.abc import Callable
from decimal import Decimal
from time import perf_counter
from typing import Any

import rule_engine
from rule_engine import ast
from rule_engine import errors as re_errors
from rule_engine.types import DataType

Env = dict[str, Any]
Fn = Callable[[Env], Any]


class Unsupported(Exception):
    """A node this compiler leaves to ``rule-engine``."""


class EvaluationFailed(Exception):
    """The condition cannot be evaluated on these facts (``rule-engine`` would raise too)."""


class TimeLimitExceeded(EvaluationFailed):
    """The event's conditions ran past their time limit (``engine.TIME_LIMIT``): this one does not hold."""


class _Clock(threading.local):
    deadline = math.inf
    """``time.perf_counter()`` past which conditions stop; set by the engine for each event."""
    exceeded = False
    """Whether a condition of this event was stopped by the deadline."""


clock = _Clock()


Clause = tuple[int, Callable[[dict[str, Any]], bool]]
"""A top-level ``and`` clause of a condition: an id shared by every identical clause, and its test."""

_clause_ids = itertools.count()


@functools.lru_cache(maxsize=65536)
def clause(text: str) -> Clause:
    """One clause, compiled once however many rules say it; same text, same id."""
    from service.rules.facts import rule_context

    return next(_clause_ids), compile_condition(rule_engine.Rule(text, context=rule_context()))


def compile_clauses(text: str, rule: Any) -> tuple[Clause, ...]:
    """A condition as the clauses of its top-level ``and``, to be tested left to right.

    ``a and b and c`` holds when each clause does, tested in order and
    stopping at the first that does not (or cannot be evaluated), which is
    how ``rule-engine`` evaluates it. Clauses are shared between rules, so
    the engine tests ``type == "purchase"`` or ``order.total >= 100`` once per
    event however many rules say it. A condition whose text does not split
    into exactly the clauses its syntax tree has stays one clause.
    """
    from service.rules import clauses

    operator, parts = clauses.split(text)
    if operator == "and" and len(parts) == _conjunct_count(rule.statement.expression):
        try:
            return tuple(clause(part) for part in parts)
        except rule_engine.EngineError:
            pass
    return (clause(text.strip()),)


def _conjunct_count(node: Any) -> int:
    if isinstance(node, ast.LogicExpression) and node.type == "and":
        return _conjunct_count(node.left) + _conjunct_count(node.right)
    return 1


def compile_condition(rule: Any) -> Callable[[dict[str, Any]], bool]:
    """``facts -> bool`` for a compiled ``rule_engine.Rule``; ``rule-engine`` itself when not covered."""
    try:
        _refuse_shadowing(rule.statement.expression, frozenset())
        fn = _compile(rule.statement.expression)
    except Unsupported:
        return rule.matches  # type: ignore[no-any-return]

    def matches(facts: dict[str, Any]) -> bool:
        return bool(fn(facts))

    matches.compiled = True  # type: ignore[attr-defined]
    return matches


def children(node: Any) -> list[Any]:
    """The sub-expressions of a node (rule-engine keeps them in slots, attributes and literal members)."""
    names = set(getattr(node, "__dict__", {}))
    for cls in type(node).__mro__:
        names.update(getattr(cls, "__slots__", ()))
    found: list[Any] = []

    def collect(value: Any) -> None:
        if isinstance(value, ast.ExpressionBase):
            found.append(value)
        elif isinstance(value, (list, tuple, set, frozenset)):  # array and set members, mapping pairs
            for item in value:
                collect(item)

    for name in names:
        collect(getattr(node, name, None))
    return found


def _refuse_shadowing(node: Any, bound: frozenset[str]) -> None:
    """Scoping corners where rule-engine differs from lexical scope; those conditions stay with rule-engine."""
    if isinstance(node, ast.ComprehensionExpression):
        if node.variable in bound:
            raise Unsupported("shadowed comprehension variable")
        bound = bound | {node.variable}
    if isinstance(node, ast.GetAttributeExpression) and node.name in bound and _object_type(node.object) is None:
        # rule-engine resolves `mapping.x` to the comprehension variable `x` when one is in scope
        raise Unsupported("attribute named like a comprehension variable")
    for child in children(node):
        _refuse_shadowing(child, bound)


def _num(value: Any) -> Any:
    """Numbers as ``rule-engine`` holds them: ``Decimal`` (booleans stay booleans)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, list):
        return tuple(_num(v) for v in value)
    if isinstance(value, tuple):
        convert = any(isinstance(v, (int, float, list, dict)) for v in value)
        return tuple(_num(v) for v in value) if convert else value
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day)
    if isinstance(value, dict) and not isinstance(value, collections.OrderedDict):
        # rule-engine holds mappings as OrderedDicts, whose equality depends on key order
        return collections.OrderedDict((k, _num(v)) for k, v in value.items())
    return value


_PLAIN = frozenset({str, Decimal, bool, type(None), dt.datetime, dt.timedelta})


def _eq(left: Any, right: Any) -> bool:
    kind = type(left)
    if kind is type(right) and kind in _PLAIN:
        return bool(left == right)
    left, right = _num(left), _num(right)
    return type(left) is type(right) and left == right


def _values(op: Callable[[Any, Any], Any], left: Any, right: Any) -> bool:
    """``rule-engine``'s ordered comparison: nulls, arrays element by element, one type at a time."""
    kind = type(left)
    if kind is type(right) and (kind is Decimal or kind is str or kind is dt.datetime):
        return bool(op(left, right))
    left, right = _num(left), _num(right)
    if left is None and right is None:
        return op in (operator.ge, operator.le)
    if isinstance(left, tuple) and isinstance(right, tuple):
        for a, b in zip(left, right, strict=False):
            if _values(operator.ne, a, b):
                return _values(op, a, b)
        if len(left) != len(right):
            return _values(op, len(left), len(right))
        return op in (operator.ge, operator.le)
    if type(left) is not type(right):
        raise EvaluationFailed("data type mismatch")
    return bool(op(left, right))


_ORDER = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}
_ARITHMETIC = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "tdiv": operator.truediv,
    "fdiv": operator.floordiv,
    "mod": operator.mod,
    "pow": operator.pow,
}


def _nullable(node: Any) -> bool:
    return bool(DataType.is_type(node.result_type, DataType.NULLABLE))


def _object_type(node: Any) -> Any:
    result_type = DataType.NULLABLE.unwrap(node.result_type)
    return result_type if DataType.is_type(result_type, DataType.OBJECT) else None


def _compile(node: Any) -> Fn:
    kind = type(node)
    if isinstance(node, (ast.ArrayExpression, ast.SetExpression)):
        make = tuple if isinstance(node, ast.ArrayExpression) else set
        if all(_is_literal(m) for m in node.value):  # ["web", "app"]: built once, not per event
            constant = make(m.value for m in node.value)
            return lambda env: constant
        members = [_compile(m) for m in node.value]
        return lambda env: make(m(env) for m in members)
    if isinstance(node, ast.MappingExpression):
        pairs = [(_compile(k), _compile(v)) for k, v in node.value]
        return lambda env: {k(env): v(env) for k, v in pairs}
    if isinstance(node, ast.LiteralExpressionBase):
        if isinstance(node, ast.FunctionExpression):
            raise Unsupported(kind.__name__)
        value = node.value
        return lambda env: value
    if kind is ast.SymbolExpression:
        if node.scope is not None:
            raise Unsupported("scoped symbol")
        name = node.name

        def symbol(env: Env) -> Any:
            try:
                return env[name]
            except KeyError:
                raise EvaluationFailed(f"unknown symbol {name}") from None

        return symbol
    if kind is ast.LogicExpression:
        left, right = _compile(node.left), _compile(node.right)
        if node.type == "and":
            return lambda env: bool(left(env) and right(env))
        if node.type == "or":
            return lambda env: bool(left(env) or right(env))
        raise Unsupported(node.type)
    if kind is ast.ComparisonExpression:
        left, right = _compile(node.left), _compile(node.right)
        if node.type == "eq":
            return lambda env: _eq(left(env), right(env))
        if node.type == "ne":
            return lambda env: not _eq(left(env), right(env))
        raise Unsupported(node.type)
    if kind is ast.ArithmeticComparisonExpression:
        left, right = _compile(node.left), _compile(node.right)
        compare = functools.partial(_values, _ORDER[node.type])
        return lambda env: compare(left(env), right(env))
    if kind in (ast.ArithmeticExpression, ast.AddExpression, ast.SubtractExpression):
        if node.type not in _ARITHMETIC:
            raise Unsupported(node.type)
        left, right = _compile(node.left), _compile(node.right)
        op = _ARITHMETIC[node.type]

        def arithmetic(env: Env) -> Any:
            a, b = _num(left(env)), _num(right(env))
            if a is None or b is None or isinstance(a, bool) or isinstance(b, bool):
                raise EvaluationFailed("data type mismatch")
            return op(a, b)

        return arithmetic
    if kind is ast.ContainsExpression:
        member = _compile(node.member)
        if isinstance(node.container, ast.ArrayExpression) and all(_is_literal(m) for m in node.container.value):
            literal = _num(tuple(m.value for m in node.container.value))

            def contains_literal(env: Env) -> bool:
                return bool(_num(member(env)) in literal)

            return contains_literal
        container = _compile(node.container)

        def contains(env: Env) -> bool:
            haystack = container(env)
            needle = member(env)
            if isinstance(haystack, str) and not isinstance(needle, str):
                raise EvaluationFailed("data type mismatch")
            if isinstance(haystack, (tuple, list)):
                haystack = _num(tuple(haystack))
            # Python's own `in`, as rule-engine uses: 0 in [false] holds, as 1 == true does there
            return bool(_num(needle) in haystack)

        return contains
    if kind is ast.GetAttributeExpression:
        return _attribute(node)
    if kind is ast.GetItemExpression:
        return _item(node)
    if kind is ast.UnaryExpression:
        right = _compile(node.right)
        if node.type.lower() == "not":
            return lambda env: not right(env)
        if node.type.lower() == "uminus":

            def negate(env: Env) -> Any:
                value = _num(right(env))
                if not isinstance(value, (Decimal, dt.timedelta)):
                    raise EvaluationFailed("data type mismatch")
                return -value

            return negate
        raise Unsupported(node.type)
    if kind is ast.TernaryExpression:
        condition, true, false = _compile(node.condition), _compile(node.case_true), _compile(node.case_false)
        return lambda env: true(env) if condition(env) else false(env)
    if kind is ast.CoalesceExpression:
        left, right = _compile(node.left), _compile(node.right)

        def coalesce(env: Env) -> Any:
            value = left(env)
            return right(env) if value is None else value

        return coalesce
    if kind is ast.ComprehensionExpression:
        result, iterable = _compile(node.result), _compile(node.iterable)
        keep = _compile(node.condition) if node.condition is not None else None
        variable = node.variable

        def comprehension(env: Env) -> tuple[Any, ...]:
            out = []
            deadline = clock.deadline
            for item in iterable(env):
                if perf_counter() > deadline:
                    raise TimeLimitExceeded
                scope = {**env, variable: item}
                if keep is None or keep(scope):
                    out.append(result(scope))
            return tuple(out)

        return comprehension
    raise Unsupported(kind.__name__)


def _is_literal(node: Any) -> bool:
    """A plain literal (string, number, boolean, null, date): its value is fixed when the rule loads."""
    containers = (ast.FunctionExpression, ast.ArrayExpression, ast.SetExpression, ast.MappingExpression)
    return isinstance(node, ast.LiteralExpressionBase) and not isinstance(node, containers)


def _attribute(node: Any) -> Fn:
    target = _compile(node.object)
    name = node.name
    safe = node.safe
    nullable = _nullable(node.object)
    object_type = _object_type(node.object)
    context = node.context

    def attribute(env: Env) -> Any:
        value = target(env)
        if value is None:
            if safe:
                return None
            if nullable:
                raise EvaluationFailed("attribute access on a null value")
        if object_type is not None:
            try:
                return object_type.accessor(value, name)
            except (AttributeError, KeyError):
                raise EvaluationFailed(f"no attribute {name}") from None
        if name in _SIZES and isinstance(value, (tuple, list, str)):  # the size is the same coerced or not
            return len(value) if name == "length" else len(value) == 0
        if isinstance(value, collections.abc.Mapping) and name not in _MAPPING_BUILTINS:
            try:  # a key of a free-form mapping, as ``attributes.rating``
                return value[name]
            except KeyError:
                raise EvaluationFailed(f"no key {name}") from None
        value = _num(value)  # rule-engine resolves built-ins on coerced values (an int count is a Decimal)
        quick = _builtin(value, name)
        if quick is not _MISSING:
            return quick
        try:
            return context.resolve_attribute(env, value, name)
        except re_errors.AttributeResolutionError:
            if isinstance(value, collections.abc.Mapping):
                try:
                    return value[name]
                except KeyError:
                    raise EvaluationFailed(f"no key {name}") from None
            raise EvaluationFailed(f"no attribute {name}") from None

    return attribute


_MISSING = object()
_SIZES = frozenset({"length", "is_empty"})
_MAPPING_BUILTINS = frozenset({"keys", "values", "length", "is_empty"})
_DATETIME_PARTS = frozenset({"year", "month", "day", "hour", "minute", "second", "microsecond"})


def _builtin(value: Any, name: str) -> Any:
    """The common built-in attributes, computed as ``rule-engine``'s attribute resolver does."""
    if isinstance(value, dt.datetime):
        if name in _DATETIME_PARTS:
            return getattr(value, name)
        if name == "weekday":
            return value.strftime("%A")
        if name == "date":
            return value.replace(hour=0, minute=0, second=0, microsecond=0)
        return _MISSING
    if isinstance(value, (tuple, list, str, bytes, set, frozenset, collections.abc.Mapping)):
        if name == "length":
            return len(value)
        if name == "is_empty":
            return len(value) == 0
        if isinstance(value, collections.abc.Mapping) and name in ("keys", "values"):
            return tuple(value.keys() if name == "keys" else value.values())
    return _MISSING


def _item(node: Any) -> Fn:
    container, item = _compile(node.container), _compile(node.item)
    safe = node.safe

    def get_item(env: Env) -> Any:
        value = container(env)
        if value is None:
            if safe:
                return None
            raise EvaluationFailed("container is null")
        key = item(env)
        if isinstance(value, (bytes, str, tuple, list)):
            key = _num(key)
            if not isinstance(key, Decimal) or key != key.to_integral_value():
                raise EvaluationFailed("index is not an integer")
            key = int(key)
        try:
            return value[key]
        except (IndexError, KeyError):
            if safe:
                return None
            raise EvaluationFailed("no such item") from None

    return get_item


ERRORS = (EvaluationFailed, rule_engine.EngineError, LookupError, TypeError, ArithmeticError, ValueError)
"""What a condition may raise on unusual facts; every one means "does not hold"."""
