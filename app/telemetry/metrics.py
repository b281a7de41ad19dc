"""The one way a process emits metrics: `count`, `timing`, `gauge`, for CloudWatch and Prometheus.

    from app.telemetry import metrics
    metrics.count("PaymentsSettled", Provider="stripe", Mode="live", Outcome="succeeded")
    with metrics.timer("ProviderCallLatency", Provider="stripe"):
        ...

Every call updates the Prometheus series at once (prometheus-client; multi-process safe when
PROMETHEUS_MULTIPROC_DIR is set) and adds to an in-memory aggregate, which a background thread
writes as CloudWatch EMF lines on stdout every METRICS_FLUSH_SECONDS: a counter's sum, a
gauge's last value, and up to 100 of a timing's observations (a uniform sample), per series.
Lines are written only in a process that called `start(service)`, so a CLI's stdout stays its
own. Names and dimension values must be in the catalog; anything else raises ValueError.
"""

from __future__ import annotations

import atexit
import inspect
import logging
import os
import random
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

from app.config import Config
from app.telemetry import emf
from app.telemetry.catalog import BY_NAME, CATALOG, SERVICES, Metric

log = logging.getLogger(__name__)

PROMETHEUS_PREFIX = "subscription_engine_"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
Labels = tuple[tuple[str, str], ...]


def prometheus_name(metric: Metric) -> str:
    """The Prometheus name of a catalog metric: snake case, prefixed, in base units (seconds);
    prometheus-client adds `_total` to a counter."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", metric.name).lower()
    if metric.kind == "timing":
        snake = snake.removesuffix("_latency") + "_latency_seconds"
    elif metric.unit == "Seconds":
        snake += "_seconds"
    return PROMETHEUS_PREFIX + snake


def _prometheus(metric: Metric) -> Counter | Gauge | Histogram:
    name, labels = prometheus_name(metric), [d.lower() for d in metric.dimensions]
    if metric.kind == "counter":
        return Counter(name, metric.description, labels)
    if metric.kind == "timing":
        return Histogram(name, metric.description, labels, buckets=LATENCY_BUCKETS)
    # Gauges are levels sampled by one process (or one per process): the latest value wins.
    return Gauge(name, metric.description, labels, multiprocess_mode="mostrecent")


PROMETHEUS = {metric.name: _prometheus(metric) for metric in CATALOG}


@dataclass
class _Reservoir:
    """A uniform sample of at most emf.MAX_VALUES observations (Vitter's algorithm R)."""

    seen: int = 0
    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < emf.MAX_VALUES:
            self.values.append(value)
        else:
            slot = random.randrange(self.seen)
            if slot < emf.MAX_VALUES:
                self.values[slot] = value


@dataclass
class _State:
    """This process's aggregate since the last flush, and how it emits."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    counters: dict[emf.Series, float] = field(default_factory=dict)
    gauges: dict[emf.Series, float] = field(default_factory=dict)
    timings: dict[emf.Series, _Reservoir] = field(default_factory=dict)
    #: (metric, call-site labels) -> (Prometheus child, EMF series without Service).
    resolved: dict[tuple[str, Labels], tuple[object, emf.Series]] = field(default_factory=dict)
    samplers: list[Callable[[], Callable[[], None] | None]] = field(default_factory=list)
    service: str | None = None
    stream: TextIO | None = None
    flusher: threading.Thread | None = None


_state = _State()


def _after_fork() -> None:
    """A forked child (gunicorn or dramatiq worker) starts with nothing pending and no thread;
    it emits once its own entry point calls start()."""
    global _state
    _state = _State(resolved=_state.resolved, samplers=_state.samplers)


os.register_at_fork(after_in_child=_after_fork)


def _resolve(name: str, labels: Labels) -> tuple[object, emf.Series]:
    found = _state.resolved.get((name, labels))
    if found is None:
        metric = BY_NAME.get(name)
        if metric is None:
            raise ValueError(f"{name} is not in the metric catalog")
        given = dict(labels)
        if set(given) != set(metric.dimensions):
            raise ValueError(f"{name} takes dimensions {sorted(metric.dimensions)}, "
                             f"got {sorted(given)}")
        for dimension, value in given.items():
            if value not in metric.dimensions[dimension]:
                raise ValueError(f"{name}: {dimension}={value!r} is not one of "
                                 f"{metric.dimensions[dimension]}")
        family = PROMETHEUS[name]
        child = family.labels(**{k.lower(): v for k, v in given.items()}) if given else family
        found = (child, (name, tuple(sorted(labels))))
        _state.resolved[(name, labels)] = found
    return found


def count(name: str, value: float = 1, **dimensions: str) -> None:
    """Add `value` to counter `name` (summed per period in CloudWatch)."""
    child, series = _resolve(name, tuple(dimensions.items()))
    child.inc(value)  # type: ignore[attr-defined]
    state = _state
    with state.lock:
        state.counters[series] = state.counters.get(series, 0) + value


def timing(name: str, milliseconds: float, **dimensions: str) -> None:
    """Observe one duration of `name`, in milliseconds."""
    child, series = _resolve(name, tuple(dimensions.items()))
    child.observe(milliseconds / 1000)  # type: ignore[attr-defined]
    state = _state
    with state.lock:
        reservoir = state.timings.get(series)
        if reservoir is None:
            reservoir = state.timings[series] = _Reservoir()
        reservoir.add(round(milliseconds, 3))


@contextmanager
def timer(name: str, **dimensions: str) -> Iterator[None]:
    """Time the block as one observation of `name`, whether it returns or raises."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timing(name, (time.perf_counter() - started) * 1000, **dimensions)


def gauge(name: str, value: float, **dimensions: str) -> None:
    """Set gauge `name` to `value` (its latest value per period in CloudWatch)."""
    child, series = _resolve(name, tuple(dimensions.items()))
    child.set(value)  # type: ignore[attr-defined]
    state = _state
    with state.lock:
        state.gauges[series] = value


def sampler(fn: Callable[[], None]) -> None:
    """Call `fn` before every flush (it sets gauges: queue depths, open breakers, ...).
    A bound method is held weakly: its sampling stops when its object is gone."""
    ref: Callable[[], Callable[[], None] | None] = (
        weakref.WeakMethod(fn) if inspect.ismethod(fn) else lambda: fn
    )
    with _state.lock:
        _state.samplers.append(ref)


def start(service: str, config: Config, stream: TextIO | None = None) -> None:
    """Emit this process's metrics as `service`: run the samplers and, with METRICS_EMF=on,
    write EMF lines to `stream` (stdout) every METRICS_FLUSH_SECONDS and at exit. Idempotent."""
    if _state.flusher is not None:
        return
    if service not in SERVICES:
        raise ValueError(f"service must be one of {SERVICES}, got {service!r}")
    if config.metrics_emf not in ("on", "off"):
        raise ValueError(f"METRICS_EMF must be on or off, got {config.metrics_emf!r}")
    emf_enabled, flush_seconds = config.metrics_emf == "on", config.metrics_flush_seconds
    state = _state
    with state.lock:
        if state.flusher is not None:
            return
        state.service = service
        state.stream = (stream or sys.stdout) if emf_enabled else None
        state.flusher = threading.Thread(target=_flush_every, args=(state, flush_seconds),
                                         name="metrics-flush", daemon=True)
    state.flusher.start()
    atexit.register(flush)


def _flush_every(state: _State, seconds: float) -> None:
    while True:
        time.sleep(seconds)
        _flush(state)


def flush() -> None:
    """Run the samplers and write what was recorded since the last flush, now."""
    _flush(_state)


def _flush(state: _State) -> None:
    with state.lock:  # a flush may run on the flusher thread and another one at once
        samplers = [fn for fn in (ref() for ref in state.samplers) if fn is not None]
        state.samplers[:] = [ref for ref in state.samplers if ref() is not None]
    for fn in samplers:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - a failed sample (database down) is logged
            name = getattr(fn, "__qualname__", repr(fn))  # and must not stop the other metrics
            log.warning("metrics sampler failed", extra={"sampler": name, "error": str(exc)})
    with state.lock:
        values: dict[emf.Series, float | list[float]] = {
            **state.counters, **state.gauges,
            **{series: r.values for series, r in state.timings.items()},
        }
        state.counters, state.gauges, state.timings = {}, {}, {}
        stream, service = state.stream, state.service
    if stream is None or service is None or not values:
        return
    stamped = {(name, tuple(sorted((*labels, ("Service", service))))): value
               for (name, labels), value in values.items()}
    for line in emf.lines(stamped, int(time.time() * 1000)):
        stream.write(line + "\n")  # one write per line: lines from several processes never mix
        stream.flush()


def registry() -> CollectorRegistry:
    """What to expose: every process's series when PROMETHEUS_MULTIPROC_DIR is set (gunicorn
    workers, the dramatiq fleet), else this process's."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)  # type: ignore[no-untyped-call]
    return collected


def serve(port: int) -> None:
    """Serve /metrics (Prometheus text) on 0.0.0.0:`port` from a daemon thread; 0 means off."""
    if port:
        start_http_server(port, registry=registry())
