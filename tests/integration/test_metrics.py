"""Metrics in one process: the API's request series on /metrics, the breaker gauge, and the
catalog guarding names and dimension values (the processes' EMF lines and metrics ports are
tested in tests/e2e/test_metrics_e2e.py)."""

from __future__ import annotations

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from app.telemetry import metrics
from tests.support import Api


def scrape(app: Flask) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the API's /metrics, by name and labels."""
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def test_api_requests_are_counted_by_status_class_and_pay_is_timed(app: Flask, api: Api) -> None:
    requests_ = "subscription_engine_http_requests_total"
    pay_count = ("subscription_engine_pay_latency_seconds_count", ())
    before = scrape(app)
    for _ in range(3):
        app.test_client().get("/healthz")
    api.get("/payments/pay_nothing_here")
    api.pay()
    after = scrape(app)

    def grew(key: tuple[str, tuple[tuple[str, str], ...]]) -> float:
        return after.get(key, 0) - before.get(key, 0)

    # The first scrape, healthz x3, customer, payment method, pay (202): 2xx; the unknown
    # payment: 4xx. (A scrape is counted after its own response is rendered.)
    assert grew((requests_, (("outcome", "2xx"),))) == 7
    assert grew((requests_, (("outcome", "4xx"),))) == 1
    assert grew(pay_count) == 1
    assert grew(("subscription_engine_http_latency_seconds_count", ())) == 8


@pytest.mark.parametrize(("name", "dimensions"), [
    ("PaymentsMade", {}),                                               # not in the catalog
    ("PaymentsSettled", {"Provider": "adyen", "Mode": "live", "Outcome": "failed"}),
    ("PaymentsSettled", {"Provider": "stripe", "Mode": "live"}),        # a dimension missing
    ("OutboxBacklog", {"Provider": "stripe"}),                          # one it does not have
    ("HttpRequests", {"Outcome": "succeeded"}),                         # another metric's value
])
def test_names_and_dimension_values_outside_the_catalog_are_refused(
    name: str, dimensions: dict[str, str],
) -> None:
    with pytest.raises(ValueError, match=name):
        metrics.count(name, **dimensions)
