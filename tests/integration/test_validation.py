"""Bad input of every shape: a clear 4xx problem+json, never a 500, never half a write."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from app.bootstrap import Container
from tests.integration.checks import assert_problem, error_fields, rows
from tests.support import Api

NESTED_OK_DEPTH = 200
NESTED_TOO_DEEP = 20_000


@dataclass
class Payer:
    """A tenant with a customer and a sandbox method, ready to pay; its requests are unlimited."""

    api: Api
    container: Container
    customer_id: str
    method_id: str

    def body(self, **changes: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "amount": 1999,
            "currency": "usd",
            "customer_id": self.customer_id,
            "payment_method_id": self.method_id,
        }
        body.update(changes)
        return body

    def pay(self, body: Any, **headers: str) -> TestResponse:
        key = {"Idempotency-Key": uuid.uuid4().hex}
        return self.raw("/pay", json.dumps(body), **{**key, **headers})

    def raw(self, path: str, data: bytes | str, content_type: str | None = "application/json",
            method: str = "POST", **headers: str) -> TestResponse:
        """Send `data` exactly as given."""
        all_headers = {"Authorization": f"Bearer {self.api.test_key}", **headers}
        if content_type is not None:
            all_headers["Content-Type"] = content_type
        return self.api.client.open(path, method=method, data=data, headers=all_headers)

    def refused(self, response: TestResponse, status: int, code: str | None = None,
                fields: set[str] | None = None) -> dict[str, Any]:
        """Assert a problem, with exactly `fields` named in `errors` when given."""
        problem = assert_problem(response, status, code)
        if fields is not None:
            assert error_fields(problem) == fields, problem
        return problem


@pytest.fixture(scope="module")
def payer(app: Flask, container: Container) -> Payer:
    api = Api.for_new_tenant(app, rate_limit="100000/second")
    customer = api.customer()
    method = api.payment_method(customer["id"])
    return Payer(api, container, customer["id"], method["id"])


@pytest.fixture(scope="module")
def paths(payer: Payer) -> list[str]:
    """Every POST endpoint (a pending payment's refunds included)."""
    payment_id = payer.api.ok(payer.pay(payer.body()), 202)["id"]
    return [
        "/pay",
        "/customers",
        f"/customers/{payer.customer_id}/payment-methods",
        f"/payments/{payment_id}/refunds",
    ]


@pytest.fixture()
def nothing_written(payer: Payer, paths: list[str]) -> Iterator[None]:
    """The test's requests leave the tenant's rows exactly as they were."""
    before = rows(payer.container, payer.api.tenant_id)
    yield
    assert rows(payer.container, payer.api.tenant_id) == before


def new_key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


# --- transport: content type, size, JSON syntax -------------------------------------------

MALFORMED = [
    b'{"amount": ',
    b"{'amount': 1999}",
    b'{"amount": 1999,}',
    b'{"amount": 1999} trailing',
    b"nul",
    b"\xff\xfe\x00",
    b'{"name": "\xff"}',
    b'{"name": "\xed\xa0\x80"}',
    b'{"amount": 0x10}',
    b'{"amount": NaN}',
    b'{"metadata": {"k": Infinity}}',
    b'{"amount": -Infinity}',
    b"\x00",
]


def test_malformed_json_is_400(payer: Payer, paths: list[str], nothing_written: None) -> None:
    for path in paths:
        for data in MALFORMED:
            payer.refused(payer.raw(path, data, **new_key()), 400, "invalid_json")


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     "application/xml", "application/jsonx", "text/json"],
)
def test_a_body_not_declared_as_json_is_415(
    payer: Payer, paths: list[str], content_type: str | None, nothing_written: None
) -> None:
    bodies = [payer.body(), {"name": "Ada"}, {"provider": "sandbox", "token": "tok_ok"},
              {"amount": 1}]
    for path, body in zip(paths, bodies, strict=True):
        response = payer.raw(path, json.dumps(body), content_type, **new_key())
        payer.refused(response, 415, "unsupported_media_type")


def test_json_with_a_charset_parameter_is_accepted(payer: Payer) -> None:
    data = json.dumps({"name": "Ada"})
    response = payer.raw("/customers", data, "application/json; charset=utf-8")
    assert payer.api.ok(response, 201)["name"] == "Ada"


@pytest.mark.parametrize("size", [65_537, 70_000, 1_000_000])
def test_a_body_over_64_kib_is_413(
    payer: Payer, paths: list[str], size: int, nothing_written: None
) -> None:
    prefix = '{"name": "'
    data = prefix + "x" * (size - len(prefix) - 2) + '"}'
    assert len(data) == size
    for path in paths:
        payer.refused(payer.raw(path, data, **new_key()), 413, "payload_too_large")


def test_a_body_of_exactly_64_kib_is_read(payer: Payer, nothing_written: None) -> None:
    prefix = '{"name": "'
    data = prefix + "x" * (65_536 - len(prefix) - 2) + '"}'
    assert len(data) == 65_536
    payer.refused(payer.raw("/customers", data), 422, "validation_failed", {"name"})


@pytest.mark.parametrize("value", ["[]", "[1, 2]", '"text"', "1999", "true", "null", "1.5"])
def test_json_that_is_not_an_object_is_422(
    payer: Payer, paths: list[str], value: str, nothing_written: None
) -> None:
    for path in paths:
        payer.refused(payer.raw(path, value, **new_key()), 422, "validation_failed")


def test_deeply_nested_json_is_refused(payer: Payer, nothing_written: None) -> None:
    arrays = '{"metadata": {"k": ' + "[" * NESTED_TOO_DEEP + "]" * NESTED_TOO_DEEP + "}}"
    payer.refused(payer.raw("/customers", arrays), 400, "invalid_json")
    objects = '{"metadata": ' + '{"a":' * 10_000 + "1" + "}" * 10_000 + "}"
    payer.refused(payer.raw("/customers", objects), 400, "invalid_json")
    parsable = '{"metadata": {"k": ' + "[" * NESTED_OK_DEPTH + "]" * NESTED_OK_DEPTH + "}}"
    payer.refused(payer.raw("/customers", parsable), 422, "validation_failed", {"metadata"})
    payer.refused(payer.pay(payer.body(amount=[[[[1999]]]])), 422, "validation_failed", {"amount"})


@pytest.mark.parametrize(
    "literal",
    ["9" * 5000, "-" + "9" * 5000, "9" * 4000, "1" + "0" * 30, "1e999", "-1e999", "1e2",
     "1" + "0" * 400 + ".5"],
)
def test_huge_numbers_are_out_of_range(
    payer: Payer, paths: list[str], literal: str, nothing_written: None
) -> None:
    """Valid JSON, however large, is a validation error of its field, not malformed JSON."""
    pay = json.dumps(payer.body(amount="N")).replace('"N"', literal)
    payer.refused(payer.raw("/pay", pay, **new_key()), 422, "validation_failed", {"amount"})
    customer = json.dumps({"metadata": {"k": "N"}}).replace('"N"', literal)
    payer.refused(payer.raw("/customers", customer), 422, "validation_failed", {"metadata"})
    refund = json.dumps({"amount": "N"}).replace('"N"', literal)
    payer.refused(payer.raw(paths[3], refund), 422, "validation_failed", {"amount"})


# --- fields of POST /pay ------------------------------------------------------------------

SURROGATE = "\ud800"
NUL = "\u0000"
BAD_PAY_FIELDS: list[tuple[str, Any]] = [
    *[("amount", v) for v in ["1999", "", 19.99, 1999.0, True, False, None, 0, -1, -1999,
                              100_000_000, 10**20, [], {}, [1999]]],
    *[("currency", v) for v in ["USD", "Usd", "xyz", "us", "usdd", "", " usd", "usd ", 840, None,
                                NUL + "sd", SURROGATE, ["usd"]]],
    *[("customer_id", v) for v in [None, 1, "", "c" * 41, SURROGATE, "cus_" + NUL, ["x"], {}]],
    *[("payment_method_id", v) for v in [None, 1, "", "p" * 41, "pm_" + SURROGATE, "pm" + NUL]],
    *[("description", v) for v in [1, True, "x" * 1001, SURROGATE, "a" + NUL + "b", [], {}]],
    *[("metadata", v) for v in [None, [], "x", 1, {"k": 1}, {"k": None}, {"k": True}, {"k": {}},
                                {"k": []}, {"k": 1.5}, {"": "v"}, {"k" * 41: "v"},
                                {"k": "v" * 501}, {f"k{i}": "v" for i in range(51)},
                                {SURROGATE: "v"}, {"k": SURROGATE}, {"k" + NUL: "v"},
                                {"k": NUL}, {"ok": "v", "bad": 2}]],
]


@pytest.mark.parametrize(("field", "value"), BAD_PAY_FIELDS)
def test_each_bad_pay_field_is_named(
    payer: Payer, field: str, value: Any, nothing_written: None
) -> None:
    payer.refused(payer.pay(payer.body(**{field: value})), 422, "validation_failed", {field})


@pytest.mark.parametrize("field", ["foo", "Amount", "amount ", "tenant_id", "status", "id"])
def test_unknown_pay_fields_are_named(payer: Payer, field: str, nothing_written: None) -> None:
    payer.refused(payer.pay(payer.body(**{field: 1})), 422, "validation_failed", {field})


def test_every_bad_field_is_listed_at_once(payer: Payer, nothing_written: None) -> None:
    body = {"amount": "1999", "currency": "USD", "metadata": {"k": 1}, "extra": True}
    problem = payer.refused(payer.pay(body), 422, "validation_failed")
    assert error_fields(problem) == {
        "amount", "currency", "metadata", "extra", "customer_id", "payment_method_id"
    }
    assert all(e["message"] for e in problem["errors"])
    payer.refused(payer.pay({}), 422, "validation_failed",
                  {"amount", "currency", "customer_id", "payment_method_id"})


def test_amount_and_metadata_bounds_are_inclusive(payer: Payer) -> None:
    for amount in (1, 99_999_999):
        assert payer.api.ok(payer.pay(payer.body(amount=amount)), 202)["amount"] == amount
    metadata = {("k" * 38 + f"{i:02d}"): "v" * 500 for i in range(50)}
    created = payer.api.ok(payer.pay(payer.body(metadata=metadata, description="d" * 1000)), 202)
    assert created["metadata"] == metadata
    for currency in ("eur", "jpy", "kwd"):
        assert payer.api.ok(payer.pay(payer.body(currency=currency)), 202)["currency"] == currency


ODD_TEXT = [
    "🎉 emoji 👩‍👩‍👧",
    "עִבְרִית \u200f right-to-left mark",
    "\u202eoverride\u202c",
    "zero\u200bwidth\ufeff",
    "combining e\u0301",
    "\U0010fffd plane 16",
    "tab\tnew\nline",
]


@pytest.mark.parametrize("text", ODD_TEXT)
def test_odd_but_valid_unicode_round_trips(payer: Payer, text: str) -> None:
    created = payer.api.ok(
        payer.pay(payer.body(description=text, metadata={text[:40]: text})), 202
    )
    fetched = payer.api.ok(payer.api.get(f"/payments/{created['id']}"), 200)
    assert fetched["description"] == text
    assert fetched["metadata"] == {text[:40]: text}
    customer = payer.api.ok(
        payer.api.post("/customers", {"name": text, "email": "zoë@exämple.test",
                                      "metadata": {text[:40]: text}}), 201)
    again = payer.api.ok(payer.api.get(f"/customers/{customer['id']}"), 200)
    assert (again["name"], again["metadata"]) == (text, {text[:40]: text})


def test_raw_utf8_bytes_are_read_as_text(payer: Payer) -> None:
    data = json.dumps({"name": "Zoë ✓ 🎉"}, ensure_ascii=False).encode()
    assert payer.api.ok(payer.raw("/customers", data), 201)["name"] == "Zoë ✓ 🎉"


# --- fields of the other POSTs ------------------------------------------------------------

BAD_CUSTOMER_FIELDS: list[tuple[str, Any]] = [
    *[("email", v) for v in ["not-an-email", "a@b c", "@b", "a@", 1, "x" * 320 + "@b.c",
                             "a" + NUL + "@b.c", SURROGATE + "@b.c", ["a@b.c"]]],
    *[("name", v) for v in [1, False, "x" * 501, SURROGATE, "Ada" + NUL, {"first": "Ada"}]],
    *[("metadata", v) for v in [[], {"k": 1}, {"": "v"}, {"k" * 41: "v"}, {"k": "v" * 501},
                                {f"k{i}": "v" for i in range(51)}, {SURROGATE: "v"}]],
    ("phone", "+1 555"),
    ("test_clock_id", 5),
]


@pytest.mark.parametrize(("field", "value"), BAD_CUSTOMER_FIELDS)
def test_each_bad_customer_field_is_named(
    payer: Payer, field: str, value: Any, nothing_written: None
) -> None:
    response = payer.api.post("/customers", {"name": "Ada", **{field: value}})
    payer.refused(response, 422, "validation_failed", {field})


BAD_METHOD_FIELDS: list[tuple[str, Any]] = [
    *[("provider", v) for v in ["Sandbox", "visa", "", None, 1, ["sandbox"], SURROGATE,
                                "sandbox" + NUL]],
    *[("token", v) for v in ["", None, 1, "x" * 256, SURROGATE, "tok_ok" + NUL, ["tok_ok"]]],
    ("brand", "visa"),
]


@pytest.mark.parametrize(("field", "value"), BAD_METHOD_FIELDS)
def test_each_bad_payment_method_field_is_named(
    payer: Payer, field: str, value: Any, nothing_written: None
) -> None:
    body = {"provider": "sandbox", "token": "tok_ok", field: value}
    response = payer.api.post(f"/customers/{payer.customer_id}/payment-methods", body)
    payer.refused(response, 422, "validation_failed", {field})


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"provider": "sandbox", "token": "tok_nope"}, "invalid_payment_method", "token"),
        ({"provider": "sandbox", "token": "tok_fail_0"}, "invalid_payment_method", "token"),
        ({"provider": "stripe", "token": "pm_123"}, "provider_not_configured", "provider"),
    ],
)
def test_a_token_the_provider_does_not_know_is_422(
    payer: Payer, body: dict[str, str], code: str, field: str, nothing_written: None
) -> None:
    response = payer.api.post(f"/customers/{payer.customer_id}/payment-methods", body)
    payer.refused(response, 422, code, {field})


@pytest.mark.parametrize("value", ["5", 0, -1, 1.5, True, 100_000_000, [5], {}])
def test_bad_refund_amounts_are_named(
    payer: Payer, paths: list[str], value: Any, nothing_written: None
) -> None:
    payer.refused(payer.api.post(paths[3], {"amount": value}), 422, "validation_failed", {"amount"})


def test_unknown_refund_fields_are_named(
    payer: Payer, paths: list[str], nothing_written: None
) -> None:
    payer.refused(payer.api.post(paths[3], {"reason": "x"}), 422, "validation_failed", {"reason"})


# --- headers and query strings ------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "k" * 256, "clé", "tab\there", "del\x7f", "\x01"])
def test_an_invalid_idempotency_key_is_400(
    payer: Payer, key: str, nothing_written: None
) -> None:
    headers = {"Idempotency-Key": key}
    payer.refused(payer.pay(payer.body(), **headers), 400, "invalid_idempotency_key")
    customer = payer.raw("/customers", json.dumps({"name": "Ada"}), **headers)
    payer.refused(customer, 400, "invalid_idempotency_key")


def test_the_longest_idempotency_key_is_accepted(payer: Payer) -> None:
    # Every printable character, spaces inside only: HTTP strips them at either end.
    key = ("".join(chr(c) for c in range(0x21, 0x7F)) + " ") * 3
    payer.api.ok(payer.pay(payer.body(), **{"Idempotency-Key": key[:254] + "~"}), 202)


BAD_QUERIES = [
    ("limit=0", {"limit"}),
    ("limit=101", {"limit"}),
    ("limit=-1", {"limit"}),
    ("limit=abc", {"limit"}),
    ("limit=1.5", {"limit"}),
    ("limit=", {"limit"}),
    ("limit=" + "9" * 5000, {"limit"}),
    ("starting_after=", {"starting_after"}),
    ("starting_after=" + "x" * 41, {"starting_after"}),
    ("starting_after=pay_%00", {"starting_after"}),
    ("foo=bar", {"foo"}),
    ("limit=0&foo=bar", {"limit", "foo"}),
]


@pytest.mark.parametrize(("query", "fields"), BAD_QUERIES)
@pytest.mark.parametrize("path", ["/payments", "/customers"])
def test_bad_list_queries_are_422(payer: Payer, path: str, query: str, fields: set[str]) -> None:
    response = payer.api.get(f"{path}?{query}")
    payer.refused(response, 422, "validation_failed", fields)


@pytest.mark.parametrize(
    ("query", "fields"),
    [("status=bogus", {"status"}), ("status=SUCCEEDED", {"status"}),
     ("customer_id=", {"customer_id"}), ("subscription_id=" + "s" * 41, {"subscription_id"}),
     ("customer=cus_1", {"customer"})],
)
def test_bad_payment_filters_are_422(payer: Payer, query: str, fields: set[str]) -> None:
    payer.refused(payer.api.get(f"/payments?{query}"), 422, "validation_failed", fields)


def test_bad_sandbox_queries_are_422(payer: Payer) -> None:
    payer.refused(payer.api.get("/sandbox/charges?pay=1"), 422, "validation_failed", {"pay"})
    payer.refused(payer.api.get("/sandbox/charges?payment_id="), 422, "validation_failed",
                  {"payment_id"})


def test_odd_ids_in_paths_are_404(payer: Payer) -> None:
    for odd in ["pay_é", "pay_%00", "%F0%9F%8E%89", "x" * 300, "pay_%ED%A0%80", "..%2F"]:
        assert_problem(payer.api.get(f"/payments/{odd}"), 404)
        assert_problem(payer.api.get(f"/customers/{odd}"), 404)


def test_unknown_routes_and_methods_are_problems(payer: Payer) -> None:
    assert_problem(payer.api.get("/nothing-here"), 404)
    response = payer.api.request("DELETE", "/customers")
    assert_problem(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]
    assert_problem(payer.api.request("PUT", "/pay", payer.body()), 405)
