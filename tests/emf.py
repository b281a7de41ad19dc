"""CloudWatch Embedded Metric Format lines checked against AWS's specification
("Specification: Embedded metric format", Amazon CloudWatch User Guide), and read back.

The structure (the `_aws` metadata object, MetricDirective, MetricDefinition) is a JSON
schema written from the specification's text; the rules a schema cannot say (referenced
members exist at the root with the right types) are checked after it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from jsonschema import Draft202012Validator

#: The units CloudWatch accepts (MetricDatum.Unit).
UNITS = [
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
    "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
]
SCHEMA = {
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                # milliseconds since the epoch
                "Timestamp": {"type": "integer", "minimum": 0},
                "CloudWatchMetrics": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "additionalProperties": False,
                        "properties": {
                            "Namespace": {"type": "string", "minLength": 1, "maxLength": 1024},
                            "Dimensions": {
                                "type": "array",
                                "items": {  # a DimensionSet: at most 30 dimension keys
                                    "type": "array", "maxItems": 30, "uniqueItems": True,
                                    "items": {"type": "string", "minLength": 1,
                                              "maxLength": 250},
                                },
                            },
                            "Metrics": {
                                "type": "array", "maxItems": 100,
                                "items": {
                                    "type": "object",
                                    "required": ["Name"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "Name": {"type": "string", "minLength": 1,
                                                 "maxLength": 1024},
                                        "Unit": {"enum": UNITS},
                                        "StorageResolution": {"enum": [1, 60]},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
VALIDATOR = Draft202012Validator(SCHEMA)


def check(line: str) -> dict[str, Any]:
    """The EMF document on `line`, after failing on anything the specification forbids."""
    document: dict[str, Any] = json.loads(line)
    VALIDATOR.validate(document)
    names: set[str] = set()
    for directive in document["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            for key in dimension_set:
                assert isinstance(document.get(key), str), f"dimension {key} must be a string"
                assert 1 <= len(document[key]) <= 1024
        for definition in directive["Metrics"]:
            name = definition["Name"]
            assert name not in names, f"{name} defined twice"
            names.add(name)
            value = document.get(name)
            if isinstance(value, list):
                assert 1 <= len(value) <= 100, f"{name}: at most 100 values"
                assert all(_number(v) for v in value), f"{name}: values must be numbers"
            else:
                assert _number(value), f"{name} must be a number, got {value!r}"
    assert len(line.encode()) < 4096, "one line must be one atomic pipe write"
    return document


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def documents(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The EMF documents among output lines (JSON objects with `_aws`), each checked."""
    found = []
    for line in lines:
        if line.startswith("{") and '"_aws"' in line:
            found.append(check(line))
    return found


def values(docs: Iterable[dict[str, Any]], name: str, **dimensions: str) -> list[float]:
    """Every value of metric `name` written with these dimension values (arrays flattened)."""
    out: list[float] = []
    for doc in docs:
        if name in doc and all(doc.get(k) == v for k, v in dimensions.items()):
            value = doc[name]
            out += value if isinstance(value, list) else [value]
    return out
