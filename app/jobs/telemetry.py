"""The worker fleet's metrics: each worker process emits as `worker`, and one extra process
of the fleet serves all of their Prometheus series on METRICS_PORT."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import dramatiq

from app.config import Config
from app.telemetry import metrics

log = logging.getLogger(__name__)


class WorkerMetrics(dramatiq.Middleware):
    """Starts emitting in each worker process, flushes on its way out, and has the `dramatiq`
    master fork `serve_fleet_metrics` when METRICS_PORT is set."""

    def __init__(self, config: Config) -> None:
        self.config = config

    @property
    def forks(self) -> list[Any]:
        return [serve_fleet_metrics] if self.config.metrics_port else []

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        metrics.start("worker", self.config)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        metrics.flush()


def serve_fleet_metrics() -> None:
    """The fork process: serve every worker process's series until the master stops it."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        log.error("METRICS_PORT is set but PROMETHEUS_MULTIPROC_DIR is not: this port "
                  "cannot see the worker processes' series")
    metrics.serve(Config.from_env().metrics_port)
    threading.Event().wait()
