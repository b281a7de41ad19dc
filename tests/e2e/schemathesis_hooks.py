"""Schemathesis hooks of tests/e2e/test_openapi_e2e.py (loaded through SCHEMATHESIS_HOOKS).

Generated cases reuse short values ("0", "00") across operations and bodies. A valid
Idempotency-Key sent again with another body is refused by contract (422
idempotency_key_reuse) or answered from the first request, so each valid key is made unique
before the call, in every phase: the rule stays tested in tests/integration/test_idempotency.py.
Invalid keys are left as generated, for the negative checks.

JSON Schema counts 1999.0 as an integer; the contract refuses it (Conventions: never
floats; tests/integration/test_validation.py), so a body's integral floats are sent as the
integers the schema means.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import schemathesis

from app.api.idempotency import HEADER, KEY_PATTERN


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    key = (case.headers or {}).get(HEADER)
    if isinstance(key, str) and re.fullmatch(KEY_PATTERN, key):
        case.headers[HEADER] = key[:200] + uuid.uuid4().hex
    if isinstance(case.body, dict):
        case.body = _integers(case.body)


def _integers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integers(v) for v in value]
    return value
