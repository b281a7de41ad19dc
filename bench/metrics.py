"""The cost of recording one metric event (app.telemetry.metrics), per call.

    .venv/bin/python bench/metrics.py

Times `count` (three dimensions, as PaymentsSettled), `timing` (one, as ProviderCallLatency)
and `gauge`, each the best of 5 runs of 100,000 calls, against an empty call taking the same
arguments; once with Prometheus in memory (one process) and once in multi-process mode
(PROMETHEUS_MULTIPROC_DIR: gunicorn and the Dramatiq fleet, values in mmap'd files). Each
mode runs in its own child process, as prometheus-client picks its mode at import. Also
times one flush of the aggregate into EMF lines. Prints and writes bench/results/metrics.json.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import timeit
from typing import Any

from procs import ROOT, machine

RESULTS = ROOT / "bench" / "results" / "metrics.json"
CALLS = 100_000


def measure() -> dict[str, float]:
    """ns per call of each kind, in this process's Prometheus mode."""
    from app.config import Config
    from app.telemetry import metrics

    def nothing(name: str, *args: Any, **dimensions: str) -> None:
        return None

    calls = {
        "empty_call": lambda: nothing("PaymentsSettled", Provider="stripe", Mode="live",
                                      Outcome="succeeded"),
        "count": lambda: metrics.count("PaymentsSettled", Provider="stripe", Mode="live",
                                       Outcome="succeeded"),
        "timing": lambda: metrics.timing("ProviderCallLatency", 123.456, Provider="stripe"),
        "gauge": lambda: metrics.gauge("QueueDepth", 7, Queue="default"),
    }
    out = {name: min(timeit.repeat(fn, number=CALLS, repeat=5)) / CALLS * 1e9
           for name, fn in calls.items()}
    stream = io.StringIO()
    metrics.start("worker", Config(metrics_flush_seconds=3600), stream=stream)
    for fn in calls.values():
        fn()
    out["flush_us"] = timeit.timeit(metrics.flush, number=1) * 1e6
    return out


def main() -> None:
    results: dict[str, Any] = {"machine": machine(), "load_average": os.getloadavg(),
                               "calls": CALLS, "ns_per_call": {}}
    with tempfile.TemporaryDirectory() as directory:
        for mode, extra in (("in_memory", {}), ("multiprocess", {"PROMETHEUS_MULTIPROC_DIR":
                                                                   directory})):
            env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
            child = subprocess.run(
                [sys.executable, __file__, "--measure"], env={**env, **extra}, cwd=ROOT,
                capture_output=True, text=True, check=True,
            )
            results["ns_per_call"][mode] = json.loads(child.stdout.splitlines()[-1])
    results["load_average_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--measure"]:
        sys.path.insert(0, str(ROOT))
        print(json.dumps(measure()))
    else:
        main()
