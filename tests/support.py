"""Small factories and helpers shared by the tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select, text
from werkzeug.test import TestResponse

from app.bootstrap import Container
from app.models import OutboxEvent
from app.services.tenants import create_tenant

T = TypeVar("T")

# A tenant rate limit for tests that read back many objects as fast as they answer.
UNLIMITED = "100000/second"


def eventually(check: Callable[[], T], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy; fail with its last value on timeout.

    This waits for an observable outcome (a status in the database, a message in Kafka),
    never for a fixed time.
    """
    deadline = time.monotonic() + timeout
    last: T = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(0.02)
        last = check()
    return last


@dataclass
class Api:
    """Calls the app as one tenant; `key` defaults to the tenant's test key."""

    client: FlaskClient
    tenant_id: str
    test_key: str
    live_key: str

    @classmethod
    def for_new_tenant(cls, app: Flask, rate_limit: str | None = None) -> Api:
        with app.extensions["container"].uow() as uow:
            created = create_tenant(uow, f"tenant-{uuid.uuid4().hex[:8]}", rate_limit)
            uow.commit()
        return cls(app.test_client(), created.tenant_id, created.test_key, created.live_key)

    def request(self, method: str, path: str, body: Any = None, *, key: str | None = None,
                headers: dict[str, str] | None = None, **kwargs: Any) -> TestResponse:
        all_headers = {"Authorization": f"Bearer {key or self.test_key}", **(headers or {})}
        if body is not None:
            kwargs["json"] = body
        return self.client.open(path, method=method, headers=all_headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> TestResponse:
        return self.request("POST", path, body, **kwargs)

    def ok(self, response: TestResponse, status: int) -> dict[str, Any]:
        assert response.status_code == status, response.get_data(as_text=True)
        data: dict[str, Any] = response.get_json()
        return data

    def customer(self, **fields: Any) -> dict[str, Any]:
        key = fields.pop("key", None)
        body = {"email": "ada@example.com", "name": "Ada", **fields}
        return self.ok(self.post("/customers", body, key=key), 201)

    def payment_method(self, customer_id: str, token: str = "tok_ok") -> dict[str, Any]:
        body = {"provider": "sandbox", "token": token}
        return self.ok(self.post(f"/customers/{customer_id}/payment-methods", body), 201)

    def pay(self, token: str = "tok_ok", amount: int = 1999, **fields: Any) -> dict[str, Any]:
        """Create a customer with a sandbox method of `token` and pay with it."""
        customer = self.customer()
        method = self.payment_method(customer["id"], token)
        body = {"amount": amount, "currency": "usd", "customer_id": customer["id"],
                "payment_method_id": method["id"], **fields}
        response = self.post("/pay", body, headers={"Idempotency-Key": uuid.uuid4().hex})
        return self.ok(response, 202)

    def settled(self, payment_id: str, timeout: float = 15.0) -> dict[str, Any]:
        """The payment once it has left pending/processing."""
        def check() -> dict[str, Any] | None:
            payment = self.ok(self.get(f"/payments/{payment_id}"), 200)
            return None if payment["status"] in ("pending", "processing") else payment

        return eventually(check, timeout, what=f"{payment_id} to settle")


def lock_waits(engine: Engine, query_like: str = "%") -> int:
    """Sessions of this database waiting for a lock right now, running a query LIKE
    `query_like` (a new connection: pg_stat_activity is read once per transaction)."""
    with engine.connect() as connection:
        return int(connection.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE :query AND datname = current_database()"), {"query": query_like})
            or 0)


def outbox(container: Container, key: str) -> list[dict[str, Any]]:
    """The payloads of every outbox event keyed by `key`, in order."""
    with container.session_factory() as session:
        return list(session.scalars(
            select(OutboxEvent.payload).where(OutboxEvent.key == key).order_by(OutboxEvent.id)))
