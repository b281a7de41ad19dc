"""CloudWatch Embedded Metric Format: the JSON lines that awslogs turns into metrics.

One line per combination of dimension values; its `_aws.CloudWatchMetrics` directives name
the namespace, the dimension sets each metric is written with (from the catalog) and each
metric's unit; the dimension values and the metric values are members of the root object.
A value is a number, or an array of at most 100 numbers (a timing's observations).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from app.telemetry.catalog import BY_NAME, NAMESPACE, dimension_sets

#: The specification's limit on the values of one metric in one line.
MAX_VALUES = 100
#: A series: metric name and its dimension values (`Service` included), sorted by name.
Series = tuple[str, tuple[tuple[str, str], ...]]


def lines(values: Mapping[Series, float | Sequence[float]], timestamp_ms: int) -> list[str]:
    """The EMF lines for these values, one per combination of dimension values."""
    by_dimensions: dict[tuple[tuple[str, str], ...], dict[str, float | Sequence[float]]] = {}
    for (name, dimensions), value in values.items():
        by_dimensions.setdefault(dimensions, {})[name] = value
    return [_line(dict(dimensions), metrics, timestamp_ms)
            for dimensions, metrics in sorted(by_dimensions.items())]


def _line(dimensions: dict[str, str], metrics: dict[str, float | Sequence[float]],
          timestamp_ms: int) -> str:
    directives: dict[tuple[tuple[str, ...], ...], list[dict[str, str]]] = {}
    for name in sorted(metrics):
        metric = BY_NAME[name]
        sets = tuple(dimension_sets(metric))
        directives.setdefault(sets, []).append({"Name": name, "Unit": metric.unit})
    document: dict[str, Any] = {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {"Namespace": NAMESPACE, "Dimensions": [list(s) for s in sets],
                 "Metrics": definitions}
                for sets, definitions in directives.items()
            ],
        },
        **dimensions,
    }
    for name, value in metrics.items():
        document[name] = list(value[:MAX_VALUES]) if isinstance(value, Sequence) else value
    return json.dumps(document, separators=(",", ":"))
