"""CSV cells that a spreadsheet shows as what they are.

Ids, names and messages come from tills, rule authors and customers. Text
that starts with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return)
is read by Excel, LibreOffice and Google Sheets as a formula, so an id such as
``=HYPERLINK(...)`` would run in the analyst's spreadsheet. As OWASP advises
("CSV Injection"), such text is written with a leading ``'``, which the
spreadsheet shows as text and does not display; numbers are left as they are.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Sequence
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> object:
    """``value`` as a CSV cell: empty for null, ISO 8601 for a time, text that could be a formula made inert."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def to_csv(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> str:
    """``rows`` as CSV text with a header, every value a ``cell``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: cell(v) for k, v in row.items()})
    return buffer.getvalue()
