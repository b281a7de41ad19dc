"""Money rules: the amount range, the currency table and the human form of an amount."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.billing.money import (
    CURRENCY_EXPONENTS,
    MAX_AMOUNT,
    MIN_AMOUNT,
    format_amount,
    is_supported_currency,
    is_valid_amount,
)

currencies = st.sampled_from(sorted(CURRENCY_EXPONENTS))


def test_the_contract_range() -> None:
    assert (MIN_AMOUNT, MAX_AMOUNT) == (1, 99_999_999)
    assert [is_valid_amount(a) for a in (0, 1, 99_999_999, 100_000_000, -1)] == [
        False, True, True, False, False,
    ]
    assert is_valid_amount(0, allow_zero=True)
    assert not is_valid_amount(-1, allow_zero=True)
    assert not is_valid_amount(100_000_000, allow_zero=True)


@given(st.integers())
def test_valid_amounts_are_exactly_the_range(amount: int) -> None:
    assert is_valid_amount(amount) == (1 <= amount <= 99_999_999)
    assert is_valid_amount(amount, allow_zero=True) == (0 <= amount <= 99_999_999)


@pytest.mark.parametrize(
    ("code", "exponent"), [("usd", 2), ("eur", 2), ("gbp", 2), ("jpy", 0), ("krw", 0), ("kwd", 3)]
)
def test_minor_units(code: str, exponent: int) -> None:
    assert CURRENCY_EXPONENTS[code] == exponent
    assert is_supported_currency(code)


@pytest.mark.parametrize(
    "code", ["USD", "Usd", "usd ", "us", "usdd", "xyz", "", "\u0000sd", "\uff55\uff53\uff44"]
)
def test_unsupported_codes(code: str) -> None:
    assert not is_supported_currency(code)


def test_every_code_is_three_lowercase_letters() -> None:
    assert len(CURRENCY_EXPONENTS) > 100
    assert all(len(c) == 3 and c.isascii() and c.islower() for c in CURRENCY_EXPONENTS)
    assert set(CURRENCY_EXPONENTS.values()) == {0, 2, 3}


@given(st.text(max_size=4))
def test_only_known_codes_are_supported(code: str) -> None:
    assert is_supported_currency(code) == (code in CURRENCY_EXPONENTS)


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (1999, "usd", "19.99 USD"),
        (5, "usd", "0.05 USD"),
        (100, "eur", "1.00 EUR"),
        (500, "jpy", "500 JPY"),
        (1234, "kwd", "1.234 KWD"),
        (-1999, "usd", "-19.99 USD"),
        (0, "usd", "0.00 USD"),
        (99_999_999, "usd", "999999.99 USD"),
    ],
)
def test_format_examples(amount: int, currency: str, text: str) -> None:
    assert format_amount(amount, currency) == text


@given(st.integers(-(10**12), 10**12), currencies)
def test_formatting_loses_nothing(amount: int, currency: str) -> None:
    """The human form reads back as exactly the same number of minor units."""
    number, code = format_amount(amount, currency).split(" ")
    assert code == currency.upper()
    exponent = CURRENCY_EXPONENTS[currency]
    assert Decimal(number).scaleb(exponent) == amount
    decimals = number.partition(".")[2]
    assert len(decimals) == exponent
