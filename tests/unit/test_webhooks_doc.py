"""docs/webhooks.md's receiver example verifies what the engine signs, and refuses a forgery."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from app.webhooks import signing

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


def receiver_app(monkeypatch: pytest.MonkeyPatch, secret: str) -> Any:
    block = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None
    assert len(block.group(1).strip().splitlines()) <= 12
    monkeypatch.setenv("WEBHOOK_SECRET", secret)
    scope: dict[str, Any] = {"__name__": "receiver"}
    exec(compile(block.group(1), str(DOC), "exec"), scope)  # noqa: S102 - our own doc
    return scope["app"]


def test_the_documented_receiver_verifies_our_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = signing.new_secret()
    client = receiver_app(monkeypatch, secret).test_client()
    body = json.dumps({"id": "evt_1", "type": "payment.succeeded"}).encode()
    headers = signing.headers(secret, "evt_1", int(time.time()), body)
    assert client.post("/webhooks", data=body, headers=headers).status_code == 204
    forged = signing.headers(signing.new_secret(), "evt_1", int(time.time()), body)
    assert client.post("/webhooks", data=body, headers=forged).status_code == 400
    stale = signing.headers(secret, "evt_1", int(time.time()) - 3600, body)
    assert client.post("/webhooks", data=body, headers=stale).status_code == 400
