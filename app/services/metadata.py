"""Merging metadata on update, as Stripe does: keys given replace, a key set to "" goes."""

from __future__ import annotations

from collections.abc import Mapping

from app.services.errors import Invalid

MAX_KEYS = 50


def merged(current: Mapping[str, str], changes: Mapping[str, str]) -> dict[str, str]:
    """`current` with `changes` applied; 422 when more than MAX_KEYS keys would remain."""
    kept = {key: value for key, value in {**current, **changes}.items() if value != ""}
    if len(kept) > MAX_KEYS:
        raise Invalid("metadata", f"At most {MAX_KEYS} keys; this update would leave {len(kept)}.")
    return kept
