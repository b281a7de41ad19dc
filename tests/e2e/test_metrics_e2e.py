"""Every process's metrics, as production runs them: the API (gunicorn, 2 workers), the
worker fleet (`dramatiq app.jobs`, 2 processes), the scheduler, the relay and the webhook
dispatcher each write EMF lines on stdout (checked against the specification and the catalog)
and serve Prometheus (the API on /metrics, the others on METRICS_PORT), after one payment went
through them all and its events reached a merchant's webhook endpoint."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.config import Config
from app.events.embedded_broker import EmbeddedBroker
from app.telemetry.catalog import BY_NAME
from tests import emf
from tests.e2e.conftest import own_database
from tests.e2e.stack import Process, Stack, free_port
from tests.eventing import broker, kafka_config
from tests.receiver import Receiver, receiving
from tests.support import eventually

__all__ = ["broker"]  # the module's Kafka broker fixture
SERVICES = {"api": "api", "worker": "worker", "scheduler": "scheduler", "relay": "relay",
            "webhooks": "webhooks"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    yield from receiving()


@pytest.fixture(scope="module")
def metered(config: Config, broker: EmbeddedBroker,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, dict[str, int]]]:
    """The five processes with EMF on (flushed every 0.3 s), each fleet with its own
    Prometheus directory, and all but the API on metrics ports."""
    settings = replace(kafka_config(config, broker), metrics_emf="on", metrics_flush_seconds=0.3,
                       webhooks_allow_private_networks=True)
    with own_database(settings) as own:
        logs = tmp_path_factory.mktemp("metrics-e2e")
        stack = Stack(own, logs, web_workers=2)
        worker = stack.processes["worker"]
        worker.argv[worker.argv.index("--processes") + 1] = "2"
        stack.processes["relay"] = Process(
            "relay", [sys.executable, "-m", "app.events.relay"], worker.env, logs / "relay.log")
        ports = {}
        for name, process in stack.processes.items():
            directory = logs / "prometheus" / name
            directory.mkdir(parents=True)
            process.env = {**process.env, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
            if name != "api":
                ports[name] = free_port()
                process.env["METRICS_PORT"] = str(ports[name])
        with stack.up(*stack.processes):
            yield stack, ports


def emitted(stack: Stack, name: str) -> list[dict[str, Any]]:
    """The EMF documents process `name` wrote so far, each checked against the spec."""
    return emf.documents(stack.processes[name].log.read_text(errors="replace").splitlines())


def written(stack: Stack, process: str, metric: str, dimensions: dict[str, str]) -> list[float]:
    return emf.values(emitted(stack, process), metric, **dimensions)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(url, timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_process_writes_valid_emf_and_serves_prometheus(
    metered: tuple[Stack, dict[str, int]], receiver: Receiver,
) -> None:
    stack, ports = metered
    client = stack.tenant("metrics")
    client.ok(client.post("/webhook-endpoints", {"url": receiver.url("/ok"),
                                                 "event_types": ["payment.succeeded"]}), 201)
    customer_id, method_id = client.customer_with_method()
    location = client.pay(customer_id, method_id).headers["Location"]
    eventually(lambda: client.ok(client.get(location), 200)["status"] == "succeeded", 30,
               what="the payment to succeed")
    assert client.get("/payments/pay_missing").status_code == 404

    expected = {
        "api": [("HttpRequests", {"Outcome": "2xx"}), ("HttpRequests", {"Outcome": "4xx"}),
                ("HttpLatency", {}), ("PayLatency", {})],
        "worker": [("ProviderCallLatency", {"Provider": "sandbox"}),
                   ("PaymentsSettled", {"Provider": "sandbox", "Mode": "test",
                                        "Outcome": "succeeded"}),
                   ("WebhookAttempts", {"Outcome": "delivered"}), ("WebhookCallLatency", {})],
        "scheduler": [("RenewalsDue", {}), ("RenewalLag", {}),
                      ("QueueDepth", {"Queue": "default"}), ("QueueMessageAge", {"Queue": "mail"})],
        "relay": [("EventsPublished", {}), ("OutboxBacklog", {}), ("OutboxOldestAge", {})],
        "webhooks": [("WebhookDeliveriesRecorded", {})],
    }
    for process, wanted in expected.items():
        for metric, dimensions in wanted:
            eventually(partial(written, stack, process, metric, dimensions), 30,
                       what=f"{process} to write {metric} {dimensions}")
        for document in emitted(stack, process):
            assert document["Service"] == SERVICES[process]
            for directive in document["_aws"]["CloudWatchMetrics"]:
                for definition in directive["Metrics"]:
                    assert process in BY_NAME[definition["Name"]].services, definition

    def series(url: str, name: str, **labels: str) -> float:
        return scrape(url).get((name, tuple(sorted(labels.items()))), 0.0)

    api = f"{stack.base_url}/metrics"
    assert series(api, "subscription_engine_http_requests_total", outcome="4xx") >= 1
    assert series(api, "subscription_engine_pay_latency_seconds_count") >= 1
    worker, scheduler, relay, webhooks = (f"http://127.0.0.1:{ports[n]}/metrics"
                                          for n in ("worker", "scheduler", "relay", "webhooks"))
    assert series(worker, "subscription_engine_provider_call_latency_seconds_count",
                  provider="sandbox") >= 1
    eventually(lambda: series(relay, "subscription_engine_events_published_total") >= 1, 30,
               what="the relay's port to show published events")
    assert ("subscription_engine_queue_depth", (("queue", "default"),)) in scrape(scheduler)
    assert ("subscription_engine_renewal_lag_seconds", ()) in scrape(scheduler)
    assert series(webhooks, "subscription_engine_webhook_deliveries_recorded_total") >= 1
    assert series(worker, "subscription_engine_webhook_attempts_total", outcome="delivered") >= 1
