"""Ids: the fast base32 encoding is the plain digit-by-digit one, and ids sort by time."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from app.ids import DIGITS, encode, id_stem, is_id, new_id


def by_divmod(value: int) -> str:
    digits = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        digits.append(DIGITS[digit])
    return "".join(reversed(digits))


@given(st.integers(min_value=0, max_value=(1 << 128) - 1))
def test_encode_is_base32_digit_by_digit(value: int) -> None:
    assert encode(value) == by_divmod(value)


def test_edges() -> None:
    assert encode(0) == "0" * 26
    assert encode((1 << 130) - 1) == "z" * 26
    assert encode(31) == "0" * 25 + "z"


def test_new_ids_are_prefixed_and_sort_by_creation() -> None:
    ids = [new_id("pay") for _ in range(200)]
    assert all(re.fullmatch(r"pay_[0-9a-hjkmnp-tv-z]{26}", i) for i in ids)
    first, last = ids[0][4:14], ids[-1][4:14]  # the millisecond part
    assert first <= last


def test_a_stem_and_two_digits_make_distinct_ids_that_sort_by_creation() -> None:
    stem = id_stem("att")
    made = [stem + DIGITS[n // 32] + DIGITS[n % 32] for n in range(1, 1024)]
    assert all(is_id(i, "att") for i in made) and len(set(made)) == len(made)
    assert made == sorted(made)
    assert stem[4:14] <= new_id("att")[4:14], "the stem's millisecond part is its creation's"
