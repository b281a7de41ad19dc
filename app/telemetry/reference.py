"""The metric and alarm tables of docs/operations.md, made from the catalog:
`python -m app.telemetry.reference` prints them; a test checks the doc holds them verbatim."""

from __future__ import annotations

from app.telemetry.catalog import CATALOG, NAMESPACE
from app.telemetry.metrics import prometheus_name

COMPARISONS = {
    "GreaterThanOrEqualToThreshold": ">=",
    "GreaterThanThreshold": ">",
    "LessThanThreshold": "<",
    "LessThanOrEqualToThreshold": "<=",
}


def metrics_table() -> str:
    """Every metric: unit, kind, dimensions and their values, emitters, Prometheus name."""
    rows = [
        "| metric | unit | kind | dimensions (besides `Service`) | emitted by | Prometheus | "
        "what it measures |",
        "|---|---|---|---|---|---|---|",
    ]
    for metric in CATALOG:
        dimensions = "; ".join(f"`{name}`: {', '.join(values)}"
                               for name, values in metric.dimensions.items()) or "-"
        suffix = "_total" if metric.kind == "counter" else ""
        rows.append(
            f"| `{metric.name}` | {metric.unit} | {metric.kind} | {dimensions} | "
            f"{', '.join(metric.services)} | `{prometheus_name(metric)}{suffix}` | "
            f"{metric.description} |"
        )
    return "\n".join(rows)


def alarms_table() -> str:
    """Every alarm the AWS stack creates: the series it reads and when it fires."""
    rows = [
        f"| metric (`{NAMESPACE}`) | series | statistic | period | fires when | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for metric in CATALOG:
        for alarm in metric.alarms:
            series = ", ".join(f"{k}={v}" for k, v in alarm.dimensions.items())
            periods = (f"{alarm.period_seconds} s" if alarm.evaluation_periods == 1 else
                       f"{alarm.evaluation_periods} x {alarm.period_seconds} s")
            rows.append(
                f"| `{metric.name}` | {series} | {alarm.statistic} | {periods} | "
                f"{COMPARISONS[alarm.comparison]} {alarm.threshold:g} {metric.unit} | "
                f"{alarm.description} |"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    print(metrics_table(), alarms_table(), sep="\n\n")
