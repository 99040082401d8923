"""Type errors in a condition, said in terms of what the rule's author wrote.

``rule-engine`` refuses ``order.total > "lots"`` with a bare "data type
mismatch", and lets ``order.total == "lots"`` through: values of different
types are simply never equal, so that clause is always false. Both are typing
mistakes a marketer makes, and the loader reports both here with the operands
named, as the author wrote them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from rule_engine import ast
from rule_engine.types import DataType

# The grammar's names for the binary operators, as the author writes them.
OPERATORS = {
    "eq": "==",
    "ne": "!=",
    "gt": ">",
    "ge": ">=",
    "lt": "<",
    "le": "<=",
    "add": "+",
    "sub": "-",
    "mul": "*",
    "tdiv": "/",
    "fdiv": "//",
    "mod": "%",
    "pow": "**",
    "bwand": "&",
    "bwor": "|",
    "bwxor": "^",
    "bwlsh": "<<",
    "bwrsh": ">>",
    "and": "and",
    "or": "or",
}

# What a value of each type is called in an error; the scalars are the types two of which are never equal.
SCALARS = {
    DataType.FLOAT: "a number",
    DataType.STRING: "text",
    DataType.BOOLEAN: "a boolean",
    DataType.DATETIME: "a date-time",
    DataType.TIMEDELTA: "a duration",
}
CONTAINERS = {
    DataType.ARRAY: "a list",
    DataType.SET: "a set",
    DataType.MAPPING: "a mapping",
    DataType.OBJECT: "an object",
    DataType.BYTES: "bytes",
    DataType.FUNCTION: "a function",
}


def type_name(data_type: Any) -> str | None:
    """``a number``, ``text``, ``a list or null``...; ``None`` for a type not known until the rule runs."""
    inner = DataType.NULLABLE.unwrap(data_type)
    nullable = inner is not data_type
    if inner == DataType.NULL:
        return "null"
    name = SCALARS.get(inner)
    if name is None:
        name = next((n for kind, n in CONTAINERS.items() if DataType.is_type(inner, kind)), None)
    if name is None:
        return None
    return f"{name} or null" if nullable else name


def source(node: Any) -> str | None:
    """The expression as the author would write it, for the kinds of operand a mistake is usually about."""
    if isinstance(node, ast.SymbolExpression):
        return ("$" if node.scope == "built-in" else "") + str(node.name)
    if isinstance(node, ast.GetAttributeExpression):
        owner = source(node.object)
        return None if owner is None else f"{owner}{'&.' if node.safe else '.'}{node.name}"
    if isinstance(node, ast.GetItemExpression):
        container, item = source(node.container), source(node.item)
        return None if container is None or item is None else f"{container}{'&[' if node.safe else '['}{item}]"
    if isinstance(node, ast.StringExpression):
        return json.dumps(node.value)
    if isinstance(node, ast.FloatExpression):
        value = Decimal(node.value)
        return str(int(value)) if value == value.to_integral_value() else str(value)
    if isinstance(node, ast.BooleanExpression):
        return "true" if node.value else "false"
    if isinstance(node, ast.NullExpression):
        return "null"
    if isinstance(node, ast.FunctionCallExpression):
        function = source(node.function)
        return None if function is None else f"{function}(...)"
    return None


def describe(node: Any) -> str:
    """```order.total` (a number)``, or what can be said of an operand with no short text."""
    text, kind = source(node), type_name(node.result_type)
    if text is None:
        return f"an expression giving {kind}" if kind else "an expression"
    return f"`{text}` ({kind})" if kind else f"`{text}`"


def never_equal(nodes: Iterable[Any]) -> str | None:
    """The first ``==`` / ``!=`` among ``nodes`` between two types that are never equal, said as the rest of a
    sentence starting with "`when` "; ``None`` when there is none."""
    for node in nodes:
        if type(node) is not ast.ComparisonExpression or node.type not in ("eq", "ne"):
            continue
        left = DataType.NULLABLE.unwrap(node.left.result_type)
        right = DataType.NULLABLE.unwrap(node.right.result_type)
        if left in SCALARS and right in SCALARS and left != right:
            always = "false" if node.type == "eq" else "true"
            return (
                f"compares {describe(node.left)} with {describe(node.right)} by `{OPERATORS[node.type]}`: "
                f"{SCALARS[left]} is never equal to {SCALARS[right]}, so this is always {always}"
            )
    return None


def mismatch(exc: BaseException) -> str | None:
    """Which operands a "data type mismatch" refused, read from the expression that refused them; ``None`` when
    the traceback does not show one.

    ``rule-engine`` builds an expression's node from its operands, already typed, and raises in that node's
    constructor: the innermost frame of an expression node holds the node (its operator, and the operands it
    has taken so far) and, when it was checking one operand alone, that operand.
    """
    found: tuple[Any, Any] | None = None
    traceback = exc.__traceback__
    while traceback is not None:
        local = traceback.tb_frame.f_locals
        node = local.get("self")
        if isinstance(node, ast.ExpressionBase):
            value = local.get("value")
            found = (node, value if isinstance(value, ast.ExpressionBase) else None)
        traceback = traceback.tb_next
    if found is None:
        return None
    node, operand = found
    operator = OPERATORS.get(getattr(node, "type", None) or "")
    by = f" with `{operator}`" if operator else ""
    if operand is not None:
        return f"{describe(operand)} cannot be used{by}"
    left, right = getattr(node, "left", None), getattr(node, "right", None)
    if isinstance(left, ast.ExpressionBase) and isinstance(right, ast.ExpressionBase):
        verb = "compared" if isinstance(node, ast.ComparisonExpression) else "used together"
        return f"{describe(left)} and {describe(right)} cannot be {verb}{by}"
    return None
