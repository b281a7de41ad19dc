"""Arbitrary JSON at /pay and /customers: never a 500, and a 2xx exactly for the valid bodies."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from app.bootstrap import Container
from tests.integration.checks import assert_problem, rows
from tests.support import Api

FUZZ = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
REFUSED = {400, 404, 413, 415, 422}
CURRENCIES = {"usd", "eur", "jpy", "gbp", "kwd"}
EMAIL = re.compile(r"[^@\s]+@[^@\s]+")

# Text of every kind, lone surrogates and NUL included.
any_text = st.text(st.characters(exclude_categories=[]), max_size=12) | st.sampled_from(
    ["", "\x00", "\ud800", "🎉", "\u202e", "x" * 41, "y" * 501, "z" * 1001]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)


def clean(value: Any) -> bool:
    """A string the API stores as it is: no NUL, no lone surrogate."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)


def valid_text(value: Any, max_length: int, *, nullable: bool = True) -> bool:
    if value is None:
        return nullable
    return clean(value) and len(value) <= max_length


def valid_metadata(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and len(value) <= 50
        and all(clean(k) and 1 <= len(k) <= 40 for k in value)
        and all(valid_text(v, 500, nullable=False) for v in value.values())
    )


@dataclass
class Target:
    api: Api
    container: Container
    customer_id: str
    method_id: str

    def __repr__(self) -> str:
        return f"Target({self.api.tenant_id})"

    def send(self, path: str, body: Any) -> TestResponse:
        return self.api.client.post(
            path,
            data=json.dumps(body),
            content_type="application/json",
            headers={"Authorization": f"Bearer {self.api.test_key}",
                     "Idempotency-Key": uuid.uuid4().hex},
        )

    def valid_pay(self, body: Any) -> bool:
        if not isinstance(body, dict):
            return False
        required = {"amount", "currency", "customer_id", "payment_method_id"}
        if not required <= set(body) <= required | {"description", "metadata"}:
            return False
        amount = body["amount"]
        return (
            type(amount) is int
            and 1 <= amount <= 99_999_999
            and isinstance(body["currency"], str)
            and body["currency"] in CURRENCIES
            and body["customer_id"] == self.customer_id
            and body["payment_method_id"] == self.method_id
            and valid_text(body.get("description"), 1000)
            and valid_metadata(body.get("metadata", {}))
        )

    @staticmethod
    def valid_customer(body: Any) -> bool:
        if not isinstance(body, dict) or not set(body) <= {"email", "name", "metadata"}:
            return False
        email = body.get("email")
        return (
            (email is None or (valid_text(email, 320) and EMAIL.fullmatch(email) is not None))
            and valid_text(body.get("name"), 500)
            and valid_metadata(body.get("metadata", {}))
        )

    def check(self, path: str, body: Any, valid: bool, created: int) -> None:
        """Send `body`; a valid one is created, anything else is refused and writes nothing."""
        event("valid" if valid else "refused")
        before = rows(self.container, self.api.tenant_id)
        response = self.send(path, body)
        if valid:
            assert response.status_code == created, (body, response.get_data(as_text=True))
            return
        assert response.status_code in REFUSED, (body, response.get_data(as_text=True))
        assert_problem(response, response.status_code)
        assert rows(self.container, self.api.tenant_id) == before


@pytest.fixture(scope="module")
def target(app: Flask, container: Container) -> Target:
    api = Api.for_new_tenant(app, rate_limit="100000/second")
    customer = api.customer()
    method = api.payment_method(customer["id"])
    return Target(api, container, customer["id"], method["id"])


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` three times in four, else `bad`: enough valid bodies get through to be checked."""
    return st.integers(0, 3).flatmap(lambda n: bad if n == 0 else good)


def pay_bodies(target: Target) -> st.SearchStrategy[Any]:
    fields = {
        "amount": mostly(st.integers(1, 99_999_999), st.integers() | json_values),
        "currency": mostly(st.sampled_from(sorted(CURRENCIES)), st.just("USD") | json_values),
        "customer_id": mostly(st.just(target.customer_id), st.just("cus_missing") | json_values),
        "payment_method_id": mostly(st.just(target.method_id), st.just("pm_nope") | json_values),
        "description": mostly(any_text, json_values),
        "metadata": mostly(st.dictionaries(any_text, any_text, max_size=3), json_values),
    }
    required = ("amount", "currency", "customer_id", "payment_method_id")
    objects = st.fixed_dictionaries(
        {name: fields[name] for name in required},
        optional={name: s for name, s in fields.items() if name not in required},
    )
    extras = st.dictionaries(any_text, json_values, max_size=2)
    with_extras = st.tuples(objects, extras).map(lambda pair: {**pair[1], **pair[0]})
    return mostly(objects, with_extras | json_values)


emails = (
    st.from_regex(r"[a-z0-9._+-]{1,20}@[a-z0-9.-]{1,20}", fullmatch=True)
    | st.sampled_from(["no-at-sign", "a@b c", "@b", "a@", "a@@b", "x" * 320 + "@b.c"])
    | json_values.filter(lambda v: not isinstance(v, str))
)
customer_bodies = (
    st.fixed_dictionaries(
        {},
        optional={
            "email": emails,
            "name": any_text | st.none() | json_values,
            "metadata": st.dictionaries(any_text, any_text, max_size=4) | json_values,
        },
    )
    | st.tuples(
        st.fixed_dictionaries({"name": any_text}),
        st.dictionaries(any_text, json_values, max_size=2),
    ).map(lambda pair: {**pair[1], **pair[0]})
    | json_values
)


@given(data=st.data())
@FUZZ
def test_pay_never_fails_with_a_500(target: Target, data: st.DataObject) -> None:
    body = data.draw(pay_bodies(target))
    target.check("/pay", body, target.valid_pay(body), 202)


@given(body=customer_bodies)
@FUZZ
def test_customers_never_fail_with_a_500(target: Target, body: Any) -> None:
    target.check("/customers", body, target.valid_customer(body), 201)


@given(data=st.binary(max_size=200))
@settings(max_examples=80, deadline=None)
def test_raw_bytes_at_pay_are_refused(app: Flask, target: Target, data: bytes) -> None:
    response = target.api.client.post(
        "/pay", data=data, content_type="application/json",
        headers={"Authorization": f"Bearer {target.api.test_key}",
                 "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code in REFUSED, response.get_data(as_text=True)
    assert_problem(response, response.status_code)
