"""Prefixed opaque ids that sort by creation time (newest first = descending id)."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lowercase
PREFIXES = frozenset(
    {"ten", "key", "cus", "pm", "plan", "sub", "pay", "att", "re", "evt", "clock", "ch"}
)


def new_id(prefix: str) -> str:
    """A new id like `pay_01j...`: 48-bit millisecond time then 80 random bits, base32."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return f"{prefix}_{''.join(reversed(chars))}"
