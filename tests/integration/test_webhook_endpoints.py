"""Webhook endpoints over the API, and single deliveries sent from this process to a local
receiver through the real sending path (DNS check, signature, retry schedule)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import text
from standardwebhooks import Webhook

from app.api import create_app
from app.bootstrap import Container, build
from app.config import Config
from app.webhooks import deliveries
from app.webhooks.gate import Gate
from tests.receiver import Receiver, receiving
from tests.support import Api


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    yield from receiving(slow_seconds=0.5)


@pytest.fixture(scope="module")
def dev_app(config: Config) -> Flask:
    """An API that allows endpoints on this machine, as `make run` does."""
    return create_app(replace(config, webhooks_allow_private_networks=True))


@pytest.fixture()
def dev_api(dev_app: Flask) -> Api:
    return Api.for_new_tenant(dev_app)


@pytest.fixture(scope="module")
def sending(config: Config) -> Container:
    return build(config)


def endpoint(api: Api, url: str, event_types: list[str] | None = None, **kw: Any) -> Any:
    types = ["*"] if event_types is None else event_types
    return api.post("/webhook-endpoints", {"url": url, "event_types": types}, **kw)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/hook", "http://localhost:9/hook", "http://[::1]/hook",
    "http://10.1.2.3/hook", "http://192.168.0.1/", "http://172.16.0.1/", "http://100.64.0.1/",
    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://224.0.0.1/",
    "http://0.0.0.0/", "http://[::ffff:127.0.0.1]/",
])
def test_non_public_hosts_are_refused_at_creation(api: Api, url: str) -> None:
    problem = api.ok(endpoint(api, url), 422)
    assert problem["code"] == "url_not_allowed"
    assert api.ok(api.get("/webhook-endpoints"), 200)["data"] == []


@pytest.mark.parametrize("url", ["ftp://example.com/", "example.com/hook", "http://",
                                 "http://user:pw@example.com/", "https://example.com:0/"])
def test_malformed_urls_are_refused(api: Api, url: str) -> None:
    assert api.ok(endpoint(api, url), 422)["code"] == "url_not_allowed"


def test_live_mode_takes_only_https(api: Api) -> None:
    problem = api.ok(endpoint(api, "http://example.com/hook", key=api.live_key), 422)
    assert problem["code"] == "url_not_allowed"
    created = api.ok(endpoint(api, "https://example.com/hook", key=api.live_key), 201)
    assert created["livemode"] is True


def test_unknown_event_types_are_422(api: Api) -> None:
    problem = api.ok(endpoint(api, "https://example.com/h", ["payment.succeeded", "nope"]), 422)
    assert problem["errors"][0]["field"] == "event_types"
    assert api.ok(endpoint(api, "https://example.com/h", ["*", "payment.failed"]), 422)
    assert api.ok(endpoint(api, "https://example.com/h", []), 422)


def test_create_get_list_delete(api: Api) -> None:
    created = api.ok(endpoint(api, "https://example.com/hook", ["payment.succeeded"],
                              headers={"Idempotency-Key": uuid.uuid4().hex}), 201)
    assert created["id"].startswith("we_") and created["secret"].startswith("whsec_")
    assert created["status"] == "enabled" and created["event_types"] == ["payment.succeeded"]
    shown = api.ok(api.get(f"/webhook-endpoints/{created['id']}"), 200)
    assert "secret" not in shown and shown == {k: v for k, v in created.items() if k != "secret"}
    listed = api.ok(api.get("/webhook-endpoints"), 200)
    assert [e["id"] for e in listed["data"]] == [created["id"]]
    assert created["secret"] not in json.dumps(listed)
    deleted = api.request("DELETE", f"/webhook-endpoints/{created['id']}")
    assert api.ok(deleted, 200) == {"id": created["id"], "object": "webhook_endpoint",
                                    "deleted": True}
    assert api.get(f"/webhook-endpoints/{created['id']}").status_code == 404
    assert api.request("DELETE", f"/webhook-endpoints/{created['id']}").status_code == 404
    assert api.ok(api.get("/webhook-endpoints"), 200)["data"] == []


def test_other_tenants_and_modes_see_nothing(app: Flask, api: Api) -> None:
    created = api.ok(endpoint(api, "https://example.com/hook"), 201)
    other = Api.for_new_tenant(app)
    for key in (other.test_key, api.live_key):
        assert api.get(f"/webhook-endpoints/{created['id']}", key=key).status_code == 404
        assert api.request("DELETE", f"/webhook-endpoints/{created['id']}",
                           key=key).status_code == 404
        assert api.get(f"/webhook-endpoints/{created['id']}/deliveries",
                       key=key).status_code == 404
        assert api.ok(api.get("/webhook-endpoints", key=key), 200)["data"] == []
    assert api.post("/webhook-deliveries/whd_nope/retry").status_code == 404
    assert api.get("/webhook-endpoints/we_%00x").status_code == 404


def _event(api: Api, event_type: str = "payment.succeeded") -> dict[str, Any]:
    return {"id": f"evt_{uuid.uuid4().hex}", "type": event_type, "schema_version": 1,
            "occurred_at": "2026-01-01T00:00:00Z", "tenant_id": api.tenant_id,
            "livemode": False, "data": {"object": {"id": "pay_x", "object": "payment"}}}


def _record(container: Container, events: list[dict[str, Any]]) -> set[str]:
    return _recorded(container, events)[0]


def _recorded(container: Container, events: list[dict[str, Any]]) -> tuple[set[str], int]:
    bodies = [json.dumps(e) for e in events]
    with container.uow() as uow:
        woken_and_new = deliveries.record(uow, events, bodies)
        uow.commit()
    return woken_and_new


def _send(container: Container, endpoint_id: str, *, allow_private: bool = True) -> list[float]:
    gate = Gate(redis.Redis.from_url(container.config.redis_url),
                container.config.redis_namespace, 2)
    more, retries = deliveries.send_due(container.uow, container.sealer, gate, endpoint_id,
                                        allow_private=allow_private, budget_seconds=10)
    assert not more
    return retries


def _deliveries(api: Api, endpoint_id: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = api.ok(
        api.get(f"/webhook-endpoints/{endpoint_id}/deliveries"), 200)["data"]
    return data


def test_a_delivery_is_signed_as_standard_webhooks_says(
    dev_api: Api, sending: Container, receiver: Receiver
) -> None:
    created = dev_api.ok(endpoint(dev_api, receiver.url("/ok"), ["payment.succeeded"]), 201)
    event, other = _event(dev_api), _event(dev_api, "payment.failed")
    assert _recorded(sending, [event, other]) == ({created["id"]}, 1)
    assert _recorded(sending, [event]) == ({created["id"]}, 0)  # read twice: recorded once
    assert _send(sending, created["id"]) == []
    hits = [h for h in receiver.on("/ok") if h.headers["webhook-id"] == event["id"]]
    assert len(hits) == 1
    verified = Webhook(created["secret"]).verify(hits[0].body, hits[0].headers)
    assert verified == event
    [delivery] = _deliveries(dev_api, created["id"])
    assert delivery | {"id": None, "created_at": None} == {
        "id": None, "object": "webhook_delivery", "event_id": event["id"],
        "event_type": "payment.succeeded", "status": "succeeded", "attempts": 1,
        "last_status_code": 200, "next_attempt_at": None, "created_at": None}


def test_a_failed_try_is_retried_on_the_schedule_then_fails(
    dev_api: Api, sending: Container, receiver: Receiver
) -> None:
    created = dev_api.ok(endpoint(dev_api, receiver.url("/dead")), 201)
    _record(sending, [_event(dev_api)])
    for attempt, delay in enumerate(deliveries.RETRY_SCHEDULE, start=1):
        assert _send(sending, created["id"]) == [float(delay)]
        [delivery] = _deliveries(dev_api, created["id"])
        assert (delivery["status"], delivery["attempts"]) == ("pending", attempt)
        assert delivery["last_status_code"] == 500
        assert _send(sending, created["id"]) == []  # not due yet: nothing sent
        with sending.engine.begin() as connection:  # the clock moves on to the next try
            connection.execute(text(
                "UPDATE webhook_deliveries SET next_attempt_at = now() - interval '1 second'"
                " WHERE endpoint_id = :e"), {"e": created["id"]})
    assert _send(sending, created["id"]) == []
    [delivery] = _deliveries(dev_api, created["id"])
    assert (delivery["status"], delivery["attempts"]) == ("failed", 11)
    assert delivery["next_attempt_at"] is None
    retried = dev_api.ok(dev_api.post(f"/webhook-deliveries/{delivery['id']}/retry"), 202)
    assert (retried["status"], retried["attempts"]) == ("pending", 11)
    assert sum(d <= 5 for d in deliveries.RETRY_SCHEDULE) == 1  # 5 s, then longer


def test_redirects_are_not_followed(dev_api: Api, sending: Container, receiver: Receiver) -> None:
    created = dev_api.ok(endpoint(dev_api, receiver.url("/redirect")), 201)
    _record(sending, [_event(dev_api)])
    assert _send(sending, created["id"]) == [5.0]
    [delivery] = _deliveries(dev_api, created["id"])
    assert (delivery["status"], delivery["last_status_code"]) == ("pending", 302)


def test_every_delivery_checks_the_address_again(
    dev_api: Api, sending: Container, receiver: Receiver
) -> None:
    """Allowed when created (development), refused when sent by an engine that is not."""
    created = dev_api.ok(endpoint(dev_api, f"http://localhost:{receiver.port}/ok"), 201)
    event = _event(dev_api)
    _record(sending, [event])
    assert _send(sending, created["id"], allow_private=False) == [5.0]
    assert not [h for h in receiver.hits if h.headers.get("webhook-id") == event["id"]]
    [delivery] = _deliveries(dev_api, created["id"])
    assert (delivery["attempts"], delivery["last_status_code"]) == (1, None)


def test_deleted_endpoints_get_nothing_more(
    dev_api: Api, sending: Container, receiver: Receiver
) -> None:
    created = dev_api.ok(endpoint(dev_api, receiver.url("/ok")), 201)
    dev_api.ok(dev_api.request("DELETE", f"/webhook-endpoints/{created['id']}"), 200)
    assert _record(sending, [_event(dev_api)]) == set()


def test_forgotten_deliveries_are_found(dev_api: Api, sending: Container,
                                        receiver: Receiver) -> None:
    created = dev_api.ok(endpoint(dev_api, receiver.url("/ok")), 201)
    _record(sending, [_event(dev_api)])
    with sending.uow() as uow:
        assert created["id"] not in deliveries.forgotten(uow.session, stale_seconds=60,
                                                         limit=1000)
        uow.session.execute(text(
            "UPDATE webhook_deliveries SET next_attempt_at = now() - :age WHERE endpoint_id = :e"),
            {"e": created["id"], "age": timedelta(seconds=120)})
        assert created["id"] in deliveries.forgotten(uow.session, stale_seconds=60, limit=1000)
