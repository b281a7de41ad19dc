"""The engine's own CloudWatch metrics, read from app/telemetry/catalog.py, the one list of what
the processes emit. Asking for a metric, a dimension or a value the engine does not write
fails the synth, so an alarm or a scaling policy can never watch a series that stays empty.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cw

from app.telemetry.catalog import BY_NAME, NAMESPACE, Metric, dimension_sets


def allowed(metric: Metric, dimension: str) -> tuple[str, ...]:
    return metric.services if dimension == "Service" else metric.dimensions[dimension]


def engine_metric(name: str, statistic: str, period: cdk.Duration | None = None,
                  label: str | None = None, **dimensions: str) -> cw.Metric:
    """The series `name` with exactly these dimensions, as the engine writes it."""
    metric = BY_NAME[name]
    pinned = tuple(d for d in ("Service", *metric.dimensions) if d in dimensions)
    assert len(pinned) == len(dimensions), f"{name}: unknown dimensions in {dimensions}"
    assert pinned in dimension_sets(metric), f"{name} is never written with {pinned}"
    for dimension, value in dimensions.items():
        assert value in allowed(metric, dimension), f"{name}: {dimension}={value} never written"
    return cw.Metric(namespace=NAMESPACE, metric_name=name, dimensions_map=dimensions,
                     statistic=statistic, period=period or cdk.Duration.minutes(5),
                     label=label)
