"""EMF lines as app.telemetry.emf writes them satisfy the specification and the catalog."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import ValidationError

from app.telemetry import emf
from app.telemetry.catalog import BY_NAME, CATALOG, NAMESPACE, SERVICES, dimension_sets
from tests.emf import check


@st.composite
def recorded(draw: st.DrawFn) -> dict[emf.Series, float | list[float]]:
    """Values of random catalog series, as one flush of a process would hold them."""
    service = draw(st.sampled_from(SERVICES))
    out: dict[emf.Series, float | list[float]] = {}
    for metric in draw(st.lists(st.sampled_from(CATALOG), min_size=1, max_size=8)):
        dims = {"Service": service} | {d: draw(st.sampled_from(v))
                                       for d, v in metric.dimensions.items()}
        series = (metric.name, tuple(sorted(dims.items())))
        number = st.floats(0, 1e6, allow_nan=False)
        out[series] = (draw(st.lists(number, min_size=1, max_size=150))
                       if metric.kind == "timing" else draw(number))
    return out


@given(recorded())
def test_every_line_is_valid_emf_and_carries_each_value_once(
    values: dict[emf.Series, float | list[float]],
) -> None:
    written = {}
    for line in emf.lines(values, 1_764_000_000_000):
        doc = check(line)
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == NAMESPACE
            for definition in directive["Metrics"]:
                metric = BY_NAME[definition["Name"]]
                assert definition["Unit"] == metric.unit
                assert [tuple(s) for s in directive["Dimensions"]] == dimension_sets(metric)
                dims = tuple(sorted((k, doc[k]) for k in ("Service", *metric.dimensions)))
                written[(metric.name, dims)] = doc[metric.name]
    assert written == {series: (v[:emf.MAX_VALUES] if isinstance(v, list) else v)
                       for series, v in values.items()}


def test_an_alarmed_metric_is_also_written_with_the_dimensions_its_alarm_pins() -> None:
    series = ("PaymentsSettled", (("Mode", "live"), ("Outcome", "unknown"),
                                  ("Provider", "stripe"), ("Service", "worker")))
    [line] = emf.lines({series: 3}, 0)
    [directive] = check(line)["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [["Service", "Provider", "Mode", "Outcome"],
                                       ["Service", "Mode", "Outcome"]]


def test_the_checker_rejects_what_the_specification_forbids() -> None:
    good = ('{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[["S"]],'
            '"Metrics":[{"Name":"M","Unit":"Count"}]}]},"S":"api","M":1}')
    check(good)
    for broken in (
        good.replace('"Timestamp":1,', ""),                 # no timestamp
        good.replace('"Unit":"Count"', '"Unit":"Things"'),  # not a CloudWatch unit
        good.replace(',"S":"api"', ""),                     # a dimension not at the root
        good.replace('"S":"api"', '"S":1'),                 # a dimension value not a string
        good.replace('"M":1', '"M":"1"'),                   # a value not a number
        good.replace('"Dimensions":[["S"]],', ""),          # no Dimensions
    ):
        with pytest.raises((AssertionError, ValidationError)):
            check(broken)
