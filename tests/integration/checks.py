"""Assertions the contract tests share: problem+json bodies and "nothing was written"."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select, text
from werkzeug.test import TestResponse

from app.bootstrap import Container
from app.models import Customer, IdempotencyKey, Payment, PaymentMethod, Refund
from app.models.outbox import OutboxEvent

PROBLEM_KEYS = {"type", "title", "status", "code", "detail"}


def assert_problem(response: TestResponse, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem with `status` (and `code`); returns its body."""
    body_text = response.get_data(as_text=True)
    assert response.status_code == status, body_text
    assert response.mimetype == "application/problem+json", (response.mimetype, body_text)
    body: dict[str, Any] = response.get_json()
    assert PROBLEM_KEYS <= set(body), body
    assert body["status"] == status
    assert body["type"].endswith("/errors/" + body["code"])
    assert body["title"] and body["detail"]
    if code is not None:
        assert body["code"] == code, body
    return body


def error_fields(body: dict[str, Any]) -> set[str]:
    """The top-level field names a 422 body's `errors` names (`metadata.x` counts as metadata)."""
    assert body.get("errors"), body
    return {str(e["field"]).split(".")[0] for e in body["errors"]}


@dataclass(frozen=True)
class Rows:
    """How many rows a tenant owns in each table a request can write to."""

    customers: int
    payment_methods: int
    payments: int
    refunds: int
    idempotency_keys: int
    created_events: int  # the workers write the other events, asynchronously


def rows(container: Container, tenant_id: str) -> Rows:
    """Count what `tenant_id` has stored, straight from the database (one round trip)."""

    def count(model: Any) -> Any:
        return (
            select(func.count())
            .select_from(model)
            .where(model.tenant_id == tenant_id)
            .scalar_subquery()
        )

    events = (
        select(func.count())
        .select_from(OutboxEvent)
        .where(
            OutboxEvent.payload["tenant_id"].astext == tenant_id,
            OutboxEvent.type.like("%.created"),
        )
        .scalar_subquery()
    )
    models = (Customer, PaymentMethod, Payment, Refund, IdempotencyKey)
    with container.session_factory() as session:
        counts = session.execute(select(*(count(m) for m in models), events)).one()
    return Rows(*(int(c) for c in counts))


def stored_text(container: Container) -> str:
    """Every row of every table of this session's database, as text (to look for leaks)."""
    with container.session_factory() as session:
        names = session.scalars(
            text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        ).all()
        parts = [
            str(session.scalar(text(f'SELECT string_agg(t::text, \' \') FROM "{name}" t')))  # noqa: S608
            for name in names
        ]
    return "\n".join(parts)


def assert_shape(obj: dict[str, Any], model: type[BaseModel]) -> None:
    """`obj` has exactly the documented fields of `model`, each of the documented type."""
    assert set(obj) == set(model.model_fields), set(obj) ^ set(model.model_fields)
    model.model_validate_json(json.dumps(obj), strict=True)


def outbox_events(container: Container, object_id: str) -> list[OutboxEvent]:
    """The outbox rows about one object, in the order they were written."""
    with container.session_factory() as session:
        query = select(OutboxEvent).where(OutboxEvent.key == object_id).order_by(OutboxEvent.id)
        return list(session.scalars(query))
