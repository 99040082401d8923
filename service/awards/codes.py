"""Award codes: unguessable, easy to read aloud, with a check character.

Twelve random symbols from a 32-symbol alphabet without 0/O or 1/I give 60
bits of randomness; a Luhn mod 32 check symbol catches any single mistyped
symbol and most swaps of neighbours before the database is asked. Codes are
shown in groups of four (``7KQX-M2PA-9RTV-F``); dashes, spaces and case are
ignored on input.

Award ids are UUIDs in the time-ordered layout of RFC 9562 (version 7): the
milliseconds since 1970 first, then 74 random bits. New awards' keys land
next to each other in the primary key's index, where random ones would land
on a different leaf page each, and every page first changed after a
checkpoint is written to the WAL whole. The id tells when the service issued
the award, to the millisecond.
"""

from __future__ import annotations

import secrets
import time
import uuid

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
_N = len(ALPHABET)
assert _N == 32, "new_code draws 5 bits a symbol"
BODY_LENGTH = 12


def _check_symbol(body: str) -> str:
    total = 0
    factor = 2
    for char in reversed(body):
        addend = factor * _INDEX[char]
        total += addend // _N + addend % _N
        factor = 1 if factor == 2 else 2
    return ALPHABET[(_N - total % _N) % _N]


def _format(raw: str) -> str:
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def new_code() -> str:
    # 32 symbols are 5 bits each: one draw of 60 random bits gives every symbol, uniformly
    # (a draw per symbol costs a system call each).
    bits = secrets.randbits(5 * BODY_LENGTH)
    body = "".join(ALPHABET[(bits >> (5 * i)) & 31] for i in range(BODY_LENGTH))
    return _format(body + _check_symbol(body))


_last_millisecond = 0


def new_award_id() -> uuid.UUID:
    # Never a millisecond before the last one this process used: a clock set back keeps the ids in order.
    global _last_millisecond
    _last_millisecond = millisecond = max(time.time_ns() // 1_000_000, _last_millisecond)
    random = secrets.randbits(74)
    value = millisecond << 80 | 0x7 << 76 | (random >> 62) << 64 | 0b10 << 62 | random & (2**62 - 1)
    return uuid.UUID(int=value)


def normalise(code: str) -> str | None:
    """The canonical form of a code typed by a person, or ``None`` when it cannot be valid."""
    if not code.isascii():
        return None
    raw = code.upper().replace("-", "").replace(" ", "")
    if len(raw) != BODY_LENGTH + 1 or any(c not in _INDEX for c in raw):
        return None
    if _check_symbol(raw[:-1]) != raw[-1]:
        return None
    return _format(raw)
