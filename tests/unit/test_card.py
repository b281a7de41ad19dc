"""Recognising raw card numbers: Luhn checksum and digit runs with separators."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.billing.card import contains_card_number, luhn_valid


def check_digit(payload: str) -> str:
    """The Luhn digit that makes `payload + digit` valid (computed independently of the app)."""
    total = 0
    for index, char in enumerate(reversed(payload)):
        value = int(char)
        if index % 2 == 0:  # doubled: these are odd positions once the check digit is appended
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


def card_numbers(min_size: int = 12, max_size: int = 19) -> st.SearchStrategy[str]:
    payloads = st.text("0123456789", min_size=min_size - 1, max_size=max_size - 1)
    return payloads.map(lambda p: p + check_digit(p))


def with_separators(number: str, cuts: list[int], separator: str) -> str:
    """`number` with `separator` inserted at the positions in `cuts`."""
    out = []
    for index, char in enumerate(number):
        if index in cuts:
            out.append(separator)
        out.append(char)
    return "".join(out)


@pytest.mark.parametrize(
    "number",
    ["4242424242424242", "4000056655665556", "378282246310005", "6011111111111117",
     "5555555555554444", "79927398713", "0"],
)
def test_known_numbers_pass_luhn(number: str) -> None:
    assert luhn_valid(number)


@pytest.mark.parametrize("number", ["4242424242424241", "79927398710", "1234567812345678"])
def test_known_bad_numbers_fail_luhn(number: str) -> None:
    assert not luhn_valid(number)


@given(card_numbers(1, 30))
def test_generated_numbers_pass_luhn(number: str) -> None:
    assert luhn_valid(number)


@given(card_numbers(), st.data())
def test_one_changed_digit_is_always_caught(number: str, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(number) - 1))
    digit = data.draw(st.sampled_from([d for d in "0123456789" if d != number[index]]))
    changed = number[:index] + digit + number[index + 1 :]
    assert not luhn_valid(changed)
    assert not contains_card_number(changed)


@given(
    card_numbers(),
    st.lists(st.integers(1, 18), unique=True, max_size=5),
    st.sampled_from([" ", "-"]),
    st.sampled_from(["", "tok_", "card: ", "x "]),
    st.sampled_from(["", " exp 12/30", "_end"]),
)
def test_valid_numbers_with_separators_are_detected(
    number: str, cuts: list[int], separator: str, before: str, after: str
) -> None:
    text = before + with_separators(number, cuts, separator) + after
    assert contains_card_number(text)


@given(card_numbers(1, 11) | card_numbers(20, 25))
def test_runs_too_short_or_too_long_for_a_card_are_not_cards(number: str) -> None:
    assert not contains_card_number(number)


@pytest.mark.parametrize(
    "text", ["tok_ok", "tok_fail_3", "pm_1NqX8s2eZvKYlo2C", "", "4242", "2026-01-31T00:00:00Z"]
)
def test_ordinary_tokens_are_not_cards(text: str) -> None:
    assert not contains_card_number(text)
