"""Recognising raw card numbers, which the engine refuses to accept or store."""

from __future__ import annotations

import re

_DIGIT_RUN = re.compile(r"\d(?:[ -]*\d)*")


def luhn_valid(digits: str) -> bool:
    """True when the digit string passes the Luhn checksum."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def contains_card_number(text: str) -> bool:
    """True when a run of 12-19 digits (spaces or dashes between allowed) passes Luhn."""
    for match in _DIGIT_RUN.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if 12 <= len(digits) <= 19 and luhn_valid(digits):
            return True
    return False
