"""The API's request metrics (HttpRequests, HttpLatency, PayLatency), through app.telemetry."""

from __future__ import annotations

import time

from flask import Flask, Response, current_app, g, request

from app.telemetry import metrics


def init_metrics(app: Flask) -> None:
    """Count every request by status class and time it; time POST /pay on its own.

    The process starts emitting (EMF on stdout) at its first request, so `flask` CLI
    commands, which load the same app, keep stdout to themselves.
    """

    @app.before_request
    def _start() -> None:
        metrics.start("api", current_app.extensions["container"].config)
        g.request_started = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        started = g.get("request_started")
        metrics.count("HttpRequests", Outcome=f"{max(2, min(response.status_code // 100, 5))}xx")
        if started is not None:
            elapsed_ms = (time.perf_counter() - started) * 1000
            metrics.timing("HttpLatency", elapsed_ms)
            if request.method == "POST" and request.url_rule is not None \
                    and request.url_rule.rule == "/pay":
                metrics.timing("PayLatency", elapsed_ms)
        return response
