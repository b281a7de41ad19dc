"""The metric catalog holds exactly the agreed names, and every alarm reads a series we write."""

from __future__ import annotations

from pathlib import Path

from app import bootstrap
from app.telemetry.catalog import BY_NAME, CATALOG, QUEUES, SERVICES, dimension_sets
from app.telemetry.reference import alarms_table, metrics_table

#: The names agreed for issue 12 (TEAM.md); they may grow, never be renamed.
AGREED = {
    "PaymentsSettled": ("Count", {"Provider", "Mode", "Outcome"}),
    "ProviderCallLatency": ("Milliseconds", {"Provider"}),
    "RenewalsDue": ("Count", set()),
    "RenewalsDone": ("Count", set()),
    "RenewalLag": ("Seconds", set()),
    "DunningTransitions": ("Count", {"Transition"}),
    "OutboxBacklog": ("Count", set()),
    "OutboxOldestAge": ("Seconds", set()),
    "EventsPublished": ("Count", set()),
    "QueueDepth": ("Count", {"Queue"}),
    "QueueMessageAge": ("Seconds", {"Queue"}),
    "CircuitBreakerOpen": ("Count", {"Provider"}),
    "ReplicaLag": ("Seconds", set()),
    "ReplicaFallbacks": ("Count", set()),
    "CacheHits": ("Count", {"Cache"}),
    "CacheMisses": ("Count", {"Cache"}),
    "HttpRequests": ("Count", {"Outcome"}),
    "HttpLatency": ("Milliseconds", set()),
    "PayLatency": ("Milliseconds", set()),
}
ALLOWED_DIMENSIONS = {"Provider", "Mode", "Outcome", "Queue", "Transition", "Cache"}


def test_the_agreed_metrics_have_their_agreed_unit_and_dimensions() -> None:
    for name, (unit, dimensions) in AGREED.items():
        metric = BY_NAME[name]
        assert (metric.unit, set(metric.dimensions)) == (unit, dimensions), name


def test_names_are_unique_and_dimensions_come_from_the_fixed_sets() -> None:
    assert len(BY_NAME) == len(CATALOG)
    for metric in CATALOG:
        assert set(metric.dimensions) <= ALLOWED_DIMENSIONS, metric.name
        assert all(metric.dimensions.values()), metric.name
        assert set(metric.services) <= set(SERVICES), metric.name
        assert metric.description


def test_every_alarm_pins_the_service_and_values_the_metric_can_take() -> None:
    for metric in CATALOG:
        for alarm in metric.alarms:
            assert alarm.dimensions["Service"] in metric.services, metric.name
            for name, value in alarm.dimensions.items():
                if name != "Service":
                    assert value in metric.dimensions[name], (metric.name, name)
            assert set(alarm.dimensions) in [set(s) for s in dimension_sets(metric)], metric.name
            if metric.kind == "counter":
                assert alarm.statistic == "Sum", metric.name


def test_docs_operations_holds_the_tables_made_from_the_catalog() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    assert metrics_table() in text, "regenerate with python -m app.telemetry.reference"
    assert alarms_table() in text, "regenerate with python -m app.telemetry.reference"


def test_every_dramatiq_queue_is_a_queue_dimension_value() -> None:
    assert {"default", *bootstrap.QUEUES.values()} == set(QUEUES)
