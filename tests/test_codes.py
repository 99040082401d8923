"""Award codes: readable, unguessable, and checked by a Luhn mod 32 symbol before the database is asked."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

import pytest

from service.awards.codes import ALPHABET, new_award_id, new_code, normalise

CODE_FORMAT = re.compile(r"^[23456789ABCDEFGHJKLMNPQRSTUVWXYZ]{4}-[2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z]$")


@pytest.fixture(scope="module")
def codes() -> list[str]:
    return [new_code() for _ in range(1000)]


def test_alphabet_is_32_readable_symbols_without_0_o_1_i() -> None:
    assert len(ALPHABET) == len(set(ALPHABET)) == 32
    assert not set("0O1I") & set(ALPHABET)
    assert set(ALPHABET) <= set("23456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def test_new_code_has_the_xxxx_xxxx_xxxx_x_format(codes: list[str]) -> None:
    for code in codes:
        assert CODE_FORMAT.match(code), code


def test_new_code_never_uses_0_o_1_or_i(codes: list[str]) -> None:
    assert not set("".join(codes)) & set("0O1I")


def test_1000_new_codes_are_distinct(codes: list[str]) -> None:
    assert len(set(codes)) == 1000


def test_new_codes_use_the_whole_alphabet(codes: list[str]) -> None:
    assert set("".join(codes).replace("-", "")) == set(ALPHABET)


def test_every_position_of_the_body_uses_the_whole_alphabet(codes: list[str]) -> None:
    """Each symbol comes from its own random bits: no position is stuck, or shared with another."""
    bodies = [code.replace("-", "")[:12] for code in codes]
    for position in range(12):
        assert {body[position] for body in bodies} == set(ALPHABET), position
    assert all(len({body[i] for i in range(12)}) > 1 for body in bodies[:50])


def test_new_code_is_its_own_normal_form(codes: list[str]) -> None:
    for code in codes:
        assert normalise(code) == code


@pytest.mark.parametrize(
    "typed",
    [
        lambda c: c.lower(),
        lambda c: c.replace("-", ""),
        lambda c: c.replace("-", "").lower(),
        lambda c: c.replace("-", " "),
        lambda c: f"  {c}  ",
        lambda c: " ".join(c.replace("-", "")),
        lambda c: c[:2].lower() + c[2:],
        lambda c: c.replace("-", "--"),
    ],
    ids=["lower", "no-dashes", "lower-no-dashes", "spaces", "padded", "spaced-out", "mixed-case", "double-dashes"],
)
def test_normalise_accepts_case_spaces_and_missing_dashes(codes: list[str], typed: Callable[[str], str]) -> None:
    for code in codes[:100]:
        assert normalise(typed(code)) == code


def test_every_single_symbol_substitution_is_rejected(codes: list[str]) -> None:
    checked = 0
    for code in codes[:50]:
        raw = code.replace("-", "")
        for position, original in enumerate(raw):
            for symbol in ALPHABET:
                if symbol == original:
                    continue
                typo = raw[:position] + symbol + raw[position + 1 :]
                assert normalise(typo) is None, (code, typo)
                checked += 1
    assert checked == 50 * 13 * 31


def test_most_adjacent_transpositions_are_rejected(codes: list[str]) -> None:
    caught = total = 0
    for code in codes:
        raw = code.replace("-", "")
        for i in range(len(raw) - 1):
            if raw[i] == raw[i + 1]:
                continue  # swapping equal symbols is no mistake
            swapped = raw[:i] + raw[i + 1] + raw[i] + raw[i + 2 :]
            total += 1
            caught += normalise(swapped) is None
    assert total > 10_000
    assert caught / total >= 0.90


@pytest.mark.parametrize("length", [0, 1, 12, 14, 16, 26])
def test_wrong_length_is_rejected(codes: list[str], length: int) -> None:
    raw = (codes[0].replace("-", "") * 3)[:length]
    assert normalise(raw) is None


def test_a_valid_code_with_a_symbol_missing_or_added_is_rejected(codes: list[str]) -> None:
    for code in codes[:100]:
        raw = code.replace("-", "")
        assert normalise(raw[:-1]) is None
        assert normalise(raw[1:]) is None
        assert normalise(raw + raw[-1]) is None


@pytest.mark.parametrize(
    "foreign", ["0", "O", "1", "I", "o", "i", "!", "_", ".", "Ä", "é", "\uff2b", "٣", "😀", "\t", "\n"]
)
def test_foreign_characters_are_rejected(codes: list[str], foreign: str) -> None:
    for code in codes[:20]:
        raw = code.replace("-", "")
        for position in (0, 6, 12):
            assert normalise(raw[:position] + foreign + raw[position + 1 :]) is None
        assert normalise(code + foreign) is None


def test_non_ascii_letters_that_upper_case_into_the_alphabet_are_rejected() -> None:
    # U+017F (long s) upper-cases to "S", "ß" to "SS" and U+FB00 (ff ligature) to "FF": not symbols of a code.
    valid = "SSFF-2222-2222-"
    valid += next(c for c in ALPHABET if normalise(valid + c))
    assert normalise(valid) == valid
    assert normalise(valid.replace("SS", "\u017f\u017f", 1)) is None
    assert normalise(valid.replace("SS", "ß", 1)) is None
    assert normalise(valid.replace("FF", "\ufb00", 1)) is None


def test_award_ids_are_version_7_uuids_in_the_order_they_were_made() -> None:
    made = []
    for _ in range(3):
        made += [new_award_id() for _ in range(200)]
        time.sleep(0.002)
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in made)
    assert len(set(made)) == len(made)
    milliseconds = [i.int >> 80 for i in made]
    assert milliseconds == sorted(milliseconds)
    assert abs(milliseconds[-1] - time.time() * 1000) < 5000
    assert made[0] < made[200] < made[400]  # a later millisecond sorts after, as PostgreSQL compares them too


def test_award_ids_stay_in_order_when_the_clock_is_set_back(monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time_ns()
    first = new_award_id()
    monkeypatch.setattr(time, "time_ns", lambda: now - 60 * 10**9)  # a minute back
    later = [new_award_id() for _ in range(3)]
    assert all(i.int >> 80 == first.int >> 80 for i in later)  # the millisecond of the last id made, not the clock's
    assert all(i.version == 7 for i in later)
