"""Every metric the engine emits: the one list that the emitters, the docs and the alarms read.

Each metric goes to CloudWatch (Embedded Metric Format, namespace `SubscriptionEngine`) and
to Prometheus. Every data point carries the dimension `Service` (the process kind) and only
the metric's own dimensions, each from a fixed set of values, so the number of series stays
small and known. An alarm names the dimension values it watches; the emitter also writes
that dimension combination, so CloudWatch has the exact series the alarm reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

NAMESPACE = "SubscriptionEngine"

Unit = Literal["Count", "Milliseconds", "Seconds"]
#: counter: events counted (summed per period); gauge: a level sampled now (latest/max);
#: timing: a duration observed per event (distribution: average, max, percentiles).
Kind = Literal["counter", "gauge", "timing"]
#: CloudWatch's ComparisonOperator names.
Comparison = Literal[
    "GreaterThanOrEqualToThreshold",
    "GreaterThanThreshold",
    "LessThanThreshold",
    "LessThanOrEqualToThreshold",
]

SERVICES = ("api", "worker", "scheduler", "relay", "webhooks")
PROVIDERS = ("stripe", "paypal", "sandbox")
MODES = ("test", "live")
PAYMENT_OUTCOMES = ("succeeded", "failed", "unknown", "requires_action")
HTTP_OUTCOMES = ("2xx", "3xx", "4xx", "5xx")
QUEUES = ("default", "mail", "webhooks", "clocks")
TRANSITIONS = ("past_due", "recovered", "canceled")
CACHES = ("api_key", "tenant", "plan")
WEBHOOK_OUTCOMES = ("delivered", "retrying", "failed")


@dataclass(frozen=True)
class Alarm:
    """A CloudWatch alarm on one series of a metric: `statistic` over `period_seconds`,
    compared with `threshold`, breaching in `evaluation_periods` periods in a row.

    `statistic` is a CloudWatch statistic (Sum, Maximum, Average) or percentile (p99).
    `dimensions` pins the series: `Service` always, plus any of the metric's dimensions.
    Missing data does not breach: a process that emits nothing is watched by its health check.
    """

    threshold: float
    comparison: Comparison
    statistic: str
    dimensions: Mapping[str, str]
    period_seconds: int = 300
    evaluation_periods: int = 1
    description: str = ""


@dataclass(frozen=True)
class Metric:
    """One metric: its CloudWatch name and unit, what it measures, and its dimensions, each
    with the only values it may take (besides `Service`)."""

    name: str
    unit: Unit
    kind: Kind
    description: str
    services: tuple[str, ...]
    dimensions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    alarms: tuple[Alarm, ...] = ()


def _alarm(threshold: float, comparison: Comparison, statistic: str, description: str,
           **dimensions: str) -> Alarm:
    return Alarm(threshold, comparison, statistic, dimensions, description=description)


CATALOG: tuple[Metric, ...] = (
    Metric(
        "PaymentsSettled", "Count", "counter",
        "Payment attempts settled, by the outcome the provider gave.",
        ("worker", "scheduler", "api"),
        {"Provider": PROVIDERS, "Mode": MODES, "Outcome": PAYMENT_OUTCOMES},
        (_alarm(5, "GreaterThanThreshold", "Sum",
                "More than 5 live payments in 5 minutes whose outcome the provider left unknown.",
                Service="worker", Mode="live", Outcome="unknown"),),
    ),
    Metric(
        "ProviderCallLatency", "Milliseconds", "timing",
        "Duration of one call to a payment provider (a batch call counts once).",
        ("worker", "scheduler", "api"),
        {"Provider": PROVIDERS},
        (_alarm(5000, "GreaterThanThreshold", "p99",
                "Provider calls from workers slower than 5 s at the 99th percentile.",
                Service="worker"),),
    ),
    Metric(
        "RenewalsDue", "Count", "gauge",
        "Real-time subscriptions whose next event (renewal, retry, trial end, ...) is due and "
        "not yet claimed by a scheduler; sampled by the scheduler.",
        ("scheduler",),
    ),
    Metric(
        "RenewalsDone", "Count", "counter",
        "Renewals applied: a subscription's new period started and its payment was created.",
        ("worker",),
    ),
    Metric(
        "RenewalLag", "Seconds", "gauge",
        "How long the oldest of RenewalsDue has been due (0 when none is).",
        ("scheduler",),
        alarms=(_alarm(300, "GreaterThanThreshold", "Maximum",
                       "Renewals more than 5 minutes behind schedule.",
                       Service="scheduler"),),
    ),
    Metric(
        "DunningTransitions", "Count", "counter",
        "Subscriptions moved by dunning: into past_due, recovered to active, or canceled.",
        ("worker", "scheduler", "api"),
        {"Transition": TRANSITIONS},
    ),
    Metric(
        "OutboxBacklog", "Count", "gauge",
        "Outbox events written and not yet published to Kafka.",
        ("relay",),
        alarms=(_alarm(10000, "GreaterThanThreshold", "Maximum",
                       "More than 10000 events waiting in the outbox.", Service="relay"),),
    ),
    Metric(
        "OutboxOldestAge", "Seconds", "gauge",
        "Age of the oldest unpublished outbox event (0 when none waits).",
        ("relay",),
        alarms=(_alarm(60, "GreaterThanThreshold", "Maximum",
                       "An event has waited more than 60 s to reach Kafka.", Service="relay"),),
    ),
    Metric(
        "EventsPublished", "Count", "counter",
        "Outbox events the relay published to Kafka.",
        ("relay",),
    ),
    Metric(
        "QueueDepth", "Count", "gauge",
        "Messages ready in a Dramatiq queue, sampled by the scheduler.",
        ("scheduler",),
        {"Queue": QUEUES},
        (_alarm(10000, "GreaterThanThreshold", "Maximum",
                "More than 10000 messages waiting in the default queue.",
                Service="scheduler", Queue="default"),),
    ),
    Metric(
        "QueueMessageAge", "Seconds", "gauge",
        "Age of the oldest ready message in a Dramatiq queue (0 when empty).",
        ("scheduler",),
        {"Queue": QUEUES},
        (_alarm(120, "GreaterThanThreshold", "Maximum",
                "A job has waited more than 2 minutes for a worker.",
                Service="scheduler", Queue="default"),),
    ),
    Metric(
        "CircuitBreakerOpen", "Count", "gauge",
        "Open circuit breakers of live payments (one per provider and tenant) in a process; "
        "test mode's breakers guard merchants' tests and are not counted.",
        ("worker", "scheduler", "api"),
        {"Provider": PROVIDERS},
        (_alarm(1, "GreaterThanOrEqualToThreshold", "Maximum",
                "A circuit breaker to Stripe is open in a worker.",
                Service="worker", Provider="stripe"),
         _alarm(1, "GreaterThanOrEqualToThreshold", "Maximum",
                "A circuit breaker to PayPal is open in a worker.",
                Service="worker", Provider="paypal")),
    ),
    Metric(
        "ReplicaLag", "Seconds", "gauge",
        "Replay lag of a read replica behind the primary, as last measured.",
        ("api",),
        alarms=(_alarm(30, "GreaterThanThreshold", "Maximum",
                       "A read replica is more than 30 s behind the primary.", Service="api"),),
    ),
    Metric(
        "ReplicaFallbacks", "Count", "counter",
        "Reads sent to the primary because no replica was up or caught up.",
        ("api",),
        alarms=(_alarm(1000, "GreaterThanThreshold", "Sum",
                       "More than 1000 reads in 5 minutes fell back to the primary.",
                       Service="api"),),
    ),
    Metric(
        "CacheHits", "Count", "counter",
        "Reads served from the Redis cache.",
        ("api", "worker", "scheduler"),
        {"Cache": CACHES},
    ),
    Metric(
        "CacheMisses", "Count", "counter",
        "Reads the Redis cache did not have, served from the database.",
        ("api", "worker", "scheduler"),
        {"Cache": CACHES},
    ),
    Metric(
        "WebhookDeliveriesRecorded", "Count", "counter",
        "Webhook deliveries the dispatcher recorded from Kafka (one per event and endpoint "
        "subscribed to it).",
        ("webhooks",),
    ),
    Metric(
        "WebhookAttempts", "Count", "counter",
        "Tries to deliver a webhook, by outcome: delivered (2xx), retrying (another try is "
        "scheduled) or failed (the schedule ran out).",
        ("worker",),
        {"Outcome": WEBHOOK_OUTCOMES},
        (_alarm(10, "GreaterThanThreshold", "Sum",
                "More than 10 webhook deliveries given up in 5 minutes.",
                Service="worker", Outcome="failed"),),
    ),
    Metric(
        "WebhookCallLatency", "Milliseconds", "timing",
        "Duration of one webhook POST to a merchant's endpoint, answer or not.",
        ("worker",),
    ),
    Metric(
        "HttpRequests", "Count", "counter",
        "HTTP requests answered, by status class.",
        ("api",),
        {"Outcome": HTTP_OUTCOMES},
        (_alarm(10, "GreaterThanThreshold", "Sum",
                "More than 10 server errors in 5 minutes.", Service="api", Outcome="5xx"),),
    ),
    Metric(
        "HttpLatency", "Milliseconds", "timing",
        "Time to answer an HTTP request, from the request's first hook to its response.",
        ("api",),
        alarms=(_alarm(2000, "GreaterThanThreshold", "p99",
                       "API responses slower than 2 s at the 99th percentile.",
                       Service="api"),),
    ),
    Metric(
        "PayLatency", "Milliseconds", "timing",
        "Time to answer POST /pay.",
        ("api",),
        alarms=(_alarm(500, "GreaterThanThreshold", "p99",
                       "POST /pay slower than 500 ms at the 99th percentile.", Service="api"),),
    ),
)

BY_NAME: Mapping[str, Metric] = {metric.name: metric for metric in CATALOG}


def dimension_sets(metric: Metric) -> list[tuple[str, ...]]:
    """The dimension combinations a metric is written with: all of its dimensions, and
    each combination an alarm on it pins (so CloudWatch holds the series the alarm reads)."""
    full = ("Service", *metric.dimensions)
    sets = [full]
    for alarm in metric.alarms:
        pinned = tuple(name for name in full if name in alarm.dimensions)
        if pinned not in sets:
            sets.append(pinned)
    return sets
