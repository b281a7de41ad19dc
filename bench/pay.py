"""Load on POST /pay against gunicorn, with a Flask hello-world as the ceiling, in one run.

    .venv/bin/python bench/pay.py      (about two minutes; needs Debian's wrk: apt-get install wrk)

Phases, all against 127.0.0.1, on a database (`se_bench`) and Redis namespace (`se-bench-pay`)
of its own that it recreates and removes:
  1. ceiling: bench/hello.py under the same gunicorn settings, wrk with 32 connections;
  2. the API (`gunicorn wsgi:app`) and a worker fleet (`dramatiq app.jobs`) start; a tenant
     with a high rate limit gets a customer with a sandbox `tok_ok` payment method;
  3. fixed rates (open loop, bench/openloop.py): latency p50/p99 of POST /pay measured from
     each request's scheduled time, and the time from each 202 to the worker's settle;
  4. max throughput: wrk with 32 connections, a new Idempotency-Key per request (bench/wrk.lua);
     only 202 counts as accepted; then the fleet drains the backlog.
It prints a table and writes bench/results/pay.json, with the CPU each process used per phase
(the 2 cores are shared by the server, the fleet, PostgreSQL, Redis, the load generator and
whatever else runs on the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import procs
import redis
import spy
from openloop import Sample, percentile, request_bytes, run_fixed_rate
from procs import (
    PG,
    REDIS,
    ROOT,
    CpuSnapshot,
    Fleet,
    cpu_snapshot,
    cpu_usage,
    free_port,
    wait_http,
)
from sqlalchemy import Engine, create_engine, text

from app.bootstrap import build
from app.config import Config
from app.models.database import drop_database, ensure_database, migrate
from app.services.tenants import create_tenant

BENCH = ROOT / "bench"
RESULTS = BENCH / "results" / "pay.json"
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
TARGET_ACCEPTED = 800.0
TARGET_P99_MS = 50.0
TARGET_RATE = 400.0
#: Steps of a POST /pay in the API's profile (frames, matched inside the request handler).
PAY_STEPS = {
    "auth: API key lookup": "authenticate_request (",
    "rate limit: hit": "Limiter._check_request_limit (",
    "rate limit: response headers": "Limiter.__inject_headers (",
    "body parse + validation": "_validate (app/api/routing.py",
    "idempotency layer (lock, lookup, view, store, commit)": "run (app/api/idempotency.py",
    "  create_payment (customer, method, insert, outbox)": "create_payment (",
    "  commit (flush inserts + COMMIT)": "Session.commit (",
    "  enqueue charge_payment (Redis)": "Container.enqueue (",
    "  render + JSON": "json_response (",
    "pool checkout pre-ping": "do_ping (",
    "metrics": "init_metrics.<locals>",
}
#: Where the request handler's stacks end: waiting on a server rather than running Python.
PAY_LEAVES = {
    "waiting on PostgreSQL": ("do_execute (", "do_commit (", "do_ping (", "do_rollback ("),
    "waiting on Redis": ("_read_from_socket (", "send_packed_command (", "readline ("),
}
WRK_MISSING = """wrk is not installed. On Debian/Ubuntu: sudo apt-get install -y wrk
(or build it from https://github.com/wg/wrk and put it on PATH)."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (both apps)")
    parser.add_argument("--worker-class", default="sync", help="gunicorn worker class")
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker")
    parser.add_argument("--fleet-processes", type=int, default=2, help="dramatiq processes")
    parser.add_argument("--fleet-threads", type=int, default=4, help="dramatiq threads each")
    parser.add_argument(
        "--fleet-nice", type=int, default=0, help="run the fleet under `nice -n N` (0: as is)"
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--max-seconds", type=int, default=10, help="each wrk run")
    parser.add_argument("--rates", default="25,200,400", help="fixed rates, requests/s")
    parser.add_argument("--rate-seconds", type=float, default=15.0, help="each fixed rate")
    parser.add_argument("--drain-seconds", type=float, default=40.0, help="wait for the fleet")
    parser.add_argument("--db-pool-size", type=int, default=5)
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for the machine to be >= 80%% idle (shared machines)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the API and the fleet during the max phase (pip install py-spy)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


_T0 = time.monotonic()


def say(message: str) -> None:
    """Progress on stderr, with seconds since the start."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def main() -> None:
    args = parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit(WRK_MISSING)
    config = Config.from_env(
        {},
        database_url=f"{PG}/se_bench",
        redis_url=REDIS,
        redis_namespace="se-bench-pay",
        engine_env="development",
        db_pool_size=args.db_pool_size,
    )
    idle_at_start = wait_quiet(args.wait_quiet)
    started = time.monotonic()
    say("recreating database se_bench")
    drop_database(config.database_url)
    _clear_redis(config)
    ensure_database(config.database_url)
    migrate(config.database_url)
    with tempfile.TemporaryDirectory(prefix="se-bench-") as tmp:
        fleet = Fleet(Path(tmp))
        try:
            results = Bench(args, config, fleet, Path(tmp), wrk).run()
        finally:
            say("stopping processes")
            fleet.stop_all()
            _clear_redis(config)
            if not args.keep:
                drop_database(config.database_url)
    results["bench_seconds"] = round(time.monotonic() - started, 1)
    results["machine"]["idle_cores_at_start"] = idle_at_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    print(f"\nwritten to {args.out}")


def wait_quiet(limit: float) -> float:
    """Wait (at most `limit` s) until the machine is at least 80% idle; the idle cores seen."""
    deadline = time.monotonic() + limit
    cores = os.cpu_count() or 1
    while True:
        before = cpu_snapshot()
        time.sleep(3)
        after = cpu_snapshot()
        idle = (after.idle - before.idle) / procs.TICKS / (after.at - before.at)
        if idle >= 0.8 * cores or time.monotonic() > deadline:
            say(f"{idle:.2f} of {cores} cores idle")
            return round(idle, 2)
        say(f"waiting for a quieter machine: {idle:.2f} of {cores} cores idle")


class Bench:
    """One run of every phase; each method is one phase and returns what it measured."""

    def __init__(
        self, args: argparse.Namespace, config: Config, fleet: Fleet, tmp: Path, wrk: str
    ) -> None:
        self.args, self.config, self.fleet, self.wrk = args, config, fleet, wrk
        self.run_id = uuid.uuid4().hex[:8]
        metrics = tmp / "prometheus"
        metrics.mkdir()
        self.env = {
            **os.environ,
            **config.to_env(),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        }
        self.engine: Engine = create_engine(config.database_url)
        self.cpu: dict[str, dict[str, float]] = {}
        self.wrk_cpu = 0.0  # CPU seconds of the last wrk run (it has exited when we look)
        self.max_started = self.max_ended = 0.0

    def run(self) -> dict[str, Any]:
        results: dict[str, Any] = {"machine": machine(), "settings": self.settings()}
        say("ceiling: hello-world under gunicorn, wrk")
        results["ceiling"] = self.ceiling()
        say(f"ceiling {results['ceiling']['requests_per_s']:.0f} req/s; starting API and fleet")
        port = self.start_api()
        base = f"http://{HOST}:{port}"
        key, body = self.prepare(base)
        self.fixed_rate(port, key, body, rate=50.0, seconds=3.0)  # warm-up, not reported
        results["fixed_rate"] = [
            self.fixed_rate(port, key, body, rate=float(rate), seconds=self.args.rate_seconds)
            for rate in self.args.rates.split(",")
        ]
        results["pay_max"] = self.max_throughput(port, key, body)
        results["drain_after_max"] = self.drain_after_max(results["pay_max"])
        results["ratio_to_ceiling"] = round(
            results["pay_max"]["accepted_per_s"] / results["ceiling"]["requests_per_s"], 3
        )
        results["targets"] = targets(results)
        results["cpu_cores_used"] = self.cpu
        results["cpu_bound_estimate"] = cpu_bound_estimate(self.cpu["max (wrk on /pay)"])
        if self.args.profile:
            results["profile_during_max"] = self.profiles
        self.engine.dispose()
        return results

    def settings(self) -> dict[str, Any]:
        a = self.args
        return {
            "gunicorn": {
                "workers": a.workers,
                "worker_class": a.worker_class,
                "threads": a.threads,
                "access_log": False,
                "log_level": "warning",
            },
            "dramatiq": {
                "processes": a.fleet_processes,
                "threads": a.fleet_threads,
                "nice": a.fleet_nice,
            },
            "wrk": {"threads": 2, "connections": a.connections, "seconds": a.max_seconds},
            "fixed_rate": {
                "rates": a.rates,
                "seconds": a.rate_seconds,
                "generator": "bench/openloop.py (asyncio, open loop, new connection "
                "per request when the server closes it)",
            },
            "db_pool_size": a.db_pool_size,
            "tenant_rate_limit": "100000/second",
            "prometheus_multiproc": True,
            "not_running": "scheduler, outbox relay, Kafka",
        }

    def gunicorn(self, name: str, app: str, port: int, *extra: str) -> None:
        argv = [
            str(BIN / "gunicorn"),
            app,
            "--bind",
            f"{HOST}:{port}",
            "--workers",
            str(self.args.workers),
            "--worker-class",
            self.args.worker_class,
            "--threads",
            str(self.args.threads),
            "--log-level",
            "warning",
            "--no-control-socket",  # else every gunicorn on the machine shares one socket
            *extra,
        ]
        self.fleet.start(name, argv, self.env, ROOT)

    def ceiling(self) -> dict[str, Any]:
        """Phase 1: hello-world throughput under the same gunicorn settings (plain wrk)."""
        port = free_port()
        self.gunicorn("hello", "hello:app", port, "--pythonpath", str(BENCH))
        wait_http(f"http://{HOST}:{port}/", self.fleet)
        url = f"http://{HOST}:{port}/"
        self.plain_wrk(url, 2)  # warm-up
        before = cpu_snapshot()
        result = self.plain_wrk(url, self.args.max_seconds)
        self.record_cpu("ceiling (wrk on hello)", before, result["requests"])
        self.fleet.stop("hello")
        return result

    def plain_wrk(self, url: str, seconds: int) -> dict[str, Any]:
        argv = [self.wrk, "-t2", f"-c{self.args.connections}", f"-d{seconds}s", "--latency", url]
        out = self.run_wrk(argv, seconds)
        return parse_plain_wrk(out)

    def run_wrk(self, argv: list[str], seconds: int) -> str:
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        out, _ = process.communicate(timeout=seconds + 30)
        now = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.wrk_cpu = now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime
        if process.returncode != 0:
            raise RuntimeError(f"wrk failed ({process.returncode}): {out}")
        return out

    def start_profiles(self, seconds: int) -> None:
        self.spies: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        if not self.args.profile:
            return
        for pid, name in self.fleet.pgids().items():
            out = self.args.out.parent / f"pay-profile-{name}.txt"
            self.spies[name] = (spy.record(pid, seconds, out), out)

    def finish_profiles(self) -> None:
        self.profiles: dict[str, Any] = {}
        for name, (process, out) in self.spies.items():
            process.wait(timeout=60)
            if out.exists():
                self.profiles[name] = {
                    "raw": str(out),
                    "pay_steps": spy.steps(out, "Flask.wsgi_app (", PAY_STEPS, PAY_LEAVES),
                    "by_package_self_pct": spy.by_package(out)[:15],
                    **spy.summarize(out, top=25),
                }

    def record_cpu(self, phase: str, before: CpuSnapshot, requests: int) -> None:
        """Cores used per consumer during a phase, and CPU ms each of ours spent per request.

        `requests` is what the server completed in the phase (for /pay: payments created).
        """
        own = {os.getpid(): "bench (load generator)"}
        exited = {"wrk": self.wrk_cpu}
        self.wrk_cpu = 0.0
        usage = cpu_usage(before, cpu_snapshot(), self.fleet.pgids(), own, exited)
        per_request = {
            name: round(cores * usage["seconds"] * 1000 / max(requests, 1), 2)
            for name, cores in usage["cores"].items()
            if name not in ("other processes", "idle", "postgresql (server processes)",
                            "steal (hypervisor)")
        }
        self.cpu[phase] = {**usage, "requests": requests, "cpu_ms_per_request": per_request}

    def start_api(self) -> int:
        """Phase 2: the API and the worker fleet, as production runs them."""
        port = free_port()
        nice = ["nice", "-n", str(self.args.fleet_nice)] if self.args.fleet_nice else []
        self.fleet.start(
            "dramatiq",
            [
                *nice,
                str(BIN / "dramatiq"),
                "app.jobs",
                "--processes",
                str(self.args.fleet_processes),
                "--threads",
                str(self.args.fleet_threads),
            ],
            self.env,
            ROOT,
        )
        self.gunicorn("gunicorn", "wsgi:app", port)
        wait_http(f"http://{HOST}:{port}/readyz", self.fleet, timeout=90)
        return port

    def prepare(self, base: str) -> tuple[str, bytes]:
        """A tenant that is never rate limited, one customer and its `tok_ok` payment method."""
        with build(self.config).uow() as uow:
            tenant = create_tenant(uow, "bench", rate_limit="100000/second")
            uow.commit()
        key = tenant.test_key
        customer = call(base, key, "/customers", {"email": "bench@example.com", "name": "Bench"})
        method = call(
            base,
            key,
            f"/customers/{customer['id']}/payment-methods",
            {"provider": "sandbox", "token": "tok_ok"},
        )
        body = {
            "amount": 1999,
            "currency": "usd",
            "customer_id": customer["id"],
            "payment_method_id": method["id"],
            "description": "bench",
            "metadata": {},
        }
        return key, json.dumps(body, separators=(",", ":")).encode()

    def fixed_rate(
        self, port: int, key: str, body: bytes, *, rate: float, seconds: float
    ) -> dict[str, Any]:
        """Phase 3: POST /pay at a fixed rate; latency from the schedule; 202 -> settled."""
        self.wait_drained(self.args.drain_seconds)
        self.fleet.check_alive()
        say(f"POST /pay at {rate:.0f}/s for {seconds:.0f} s")
        prefix = f"{self.run_id}-r{int(rate)}-"
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

        def factory(number: int) -> bytes:
            return request_bytes(
                "POST",
                "/pay",
                f"{HOST}:{port}",
                {**headers, "Idempotency-Key": f"{prefix}{number}"},
                body,
            )

        before, started = cpu_snapshot(), time.time()
        samples = asyncio.run(run_fixed_rate(HOST, port, rate, seconds, factory))
        if seconds >= 5:
            self.record_cpu(f"fixed {int(rate)}/s", before, self.created(started, time.time()))
        wait_http(f"http://{HOST}:{port}/healthz", self.fleet, timeout=60)  # it caught up
        result = latency_summary(samples, rate, seconds)
        result["settle"] = self.settle_times(samples)
        return result

    def max_throughput(self, port: int, key: str, body: bytes) -> dict[str, Any]:
        """Phase 4: wrk with 32 connections on POST /pay; only 202 counts as accepted."""
        self.wait_drained(self.args.drain_seconds)
        self.fleet.check_alive()
        say("POST /pay max: wrk")
        seconds = self.args.max_seconds
        prefix = f"{self.run_id}-max"
        argv = [
            self.wrk,
            "-t2",
            f"-c{self.args.connections}",
            f"-d{seconds}s",
            "--timeout",
            "30s",  # a request wrk gave up on would still be served, after the phase
            "-s",
            str(BENCH / "wrk.lua"),
            f"http://{HOST}:{port}",
            "--",
            "POST",
            "/pay",
            key,
            body.decode(),
            prefix,
        ]
        self.max_started = time.time()
        self.start_profiles(seconds)
        before = cpu_snapshot()
        out = self.run_wrk(argv, seconds)
        self.max_ended = time.time()
        line = next(line for line in out.splitlines() if line.startswith("WRK_JSON "))
        data = json.loads(line.removeprefix("WRK_JSON "))
        self.record_cpu("max (wrk on /pay)", before, self.created(self.max_started, self.max_ended))
        self.finish_profiles()
        elapsed = data["duration_us"] / 1e6
        accepted = data["statuses"].get("202", 0)
        failed = sum(data["socket_errors"].values())
        attempted = data["requests"] + failed
        in_db = self.scalar(
            "SELECT count(*) FROM idempotency_keys WHERE key LIKE :p AND status_code = 202",
            p=f"{prefix}-%",
        )
        return {
            "seconds": round(elapsed, 2),
            "requests": data["requests"],
            "accepted": accepted,
            "accepted_in_db": in_db,
            "accepted_per_s": round(accepted / elapsed, 1),
            "error_rate": round(1 - accepted / attempted, 4) if attempted else 1.0,
            "statuses": data["statuses"],
            "socket_errors": data["socket_errors"],
            "latency_ms": {k: round(v / 1000, 1) for k, v in data["latency_us"].items()},
        }

    def drain_after_max(self, pay_max: dict[str, Any]) -> dict[str, Any]:
        """How long the fleet takes to settle the max phase's backlog, and its settle rate."""
        backlog = self.unsettled()
        say(f"waiting for the fleet to settle {backlog} payments")
        drained = self.wait_drained(self.args.drain_seconds)
        end = time.time()
        settled = self.scalar(
            "SELECT count(*) FROM payments WHERE status NOT IN ('pending', 'processing') "
            "AND created_at >= to_timestamp(:start)",
            start=self.max_started,
        )
        with self.engine.connect() as connection:
            row = connection.execute(
                text(
                    "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY s), "
                    "percentile_disc(0.99) WITHIN GROUP (ORDER BY s) FROM ("
                    "SELECT extract(epoch FROM updated_at - created_at) AS s FROM payments "
                    "WHERE status = 'succeeded' AND created_at >= to_timestamp(:start)) t"
                ),
                {"start": self.max_started},
            ).one()
        return {
            "backlog_when_wrk_ended": backlog,
            "drained": drained,
            "unsettled_left": self.unsettled(),
            "seconds_after_wrk": round(end - self.max_ended, 1),
            "fleet_settled_per_s": round(settled / (end - self.max_started), 1),
            "created_to_settled_s": {"p50": _round(row[0], 2), "p99": _round(row[1], 2)},
            "accepted": pay_max["accepted"],
        }

    def settle_times(self, samples: list[Sample]) -> dict[str, Any]:
        """Seconds from each 202 to the worker's settle (payments.updated_at), once settled."""
        answered = {json.loads(s.body)["id"]: s.answered_at for s in samples if s.status == 202}
        if not answered:
            return {"payments": 0}
        self.wait_drained(self.args.drain_seconds)
        with self.engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT id, status, extract(epoch FROM updated_at), "
                    "extract(epoch FROM updated_at - created_at) FROM payments "
                    "WHERE id = ANY(:ids)"
                ),
                {"ids": list(answered)},
            ).all()
        done = [r for r in rows if r[1] == "succeeded"]
        from_202 = sorted(float(r[2]) - answered[r[0]] for r in done)
        server = sorted(float(r[3]) for r in done)
        return {
            "payments": len(answered),
            "succeeded": len(done),
            "other_statuses": len(rows) - len(done),
            "from_202_ms": _percentiles(from_202),
            "created_to_settled_ms": _percentiles(server),
        }

    def created(self, start: float, end: float) -> int:
        """Payments the API created between two wall-clock times (what the server got done)."""
        return self.scalar(
            "SELECT count(*) FROM payments WHERE created_at BETWEEN to_timestamp(:a) "
            "AND to_timestamp(:b)",
            a=start,
            b=end,
        )

    def unsettled(self) -> int:
        return self.scalar(
            "SELECT count(*) FROM payments WHERE status IN ('pending', 'processing')"
        )

    def wait_drained(self, timeout: float) -> bool:
        """Wait (bounded) until the fleet has settled every payment."""
        deadline = time.monotonic() + timeout
        while self.unsettled():
            self.fleet.check_alive()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.25)
        return True

    def scalar(self, sql: str, **params: Any) -> int:
        with self.engine.connect() as connection:
            return int(connection.scalar(text(sql), params) or 0)


def latency_summary(samples: list[Sample], rate: float, seconds: float) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    for sample in samples:
        statuses[str(sample.status)] = statuses.get(str(sample.status), 0) + 1
    accepted = statuses.get("202", 0)
    last = max(s.due + s.latency for s in samples)
    return {
        "rate": rate,
        "seconds": seconds,
        "sent": len(samples),
        "accepted": accepted,
        "achieved_per_s": round(accepted / last, 1),
        "error_rate": round(1 - accepted / len(samples), 4),
        "statuses": statuses,
        "not_sent": sum(1 for s in samples if not s.sent),
        "latency_ms": _percentiles(sorted(s.latency for s in samples)),
    }


def _percentiles(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "p50": round(percentile(values, 0.5) * 1000, 1),
        "p90": round(percentile(values, 0.9) * 1000, 1),
        "p99": round(percentile(values, 0.99) * 1000, 1),
        "max": round(values[-1] * 1000, 1),
    }


def _round(value: Any, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def parse_plain_wrk(out: str) -> dict[str, Any]:
    """The numbers of wrk's text report (run without a script, as the reference was)."""
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}

    def ms(label: str) -> float:
        found = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        assert found, out
        return round(float(found[1]) * units[found[2]], 2)

    total = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert total and rps, out
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return {
        "requests": int(total[1]),
        "requests_per_s": float(rps[1]),
        "non_2xx": int(bad[1]) if bad else 0,
        "socket_errors": sum(int(n) for n in sockets.groups()) if sockets else 0,
        "latency_ms": {"p50": ms("50"), "p90": ms("90"), "p99": ms("99")},
    }


def cpu_bound_estimate(max_phase: dict[str, Any]) -> dict[str, Any]:
    """What the machine could accept if the engine had every core: cores / CPU per payment.

    On a shared machine the measured rate depends on what the others run; the CPU each of
    our processes spends per accepted payment (API, fleet, PostgreSQL, Redis) does much less.
    """
    load = ("wrk", "bench (load generator)")
    per = {k: v for k, v in max_phase["cpu_ms_per_request"].items() if k not in load}
    total = sum(per.values())
    cores = os.cpu_count() or 1
    return {
        "cpu_ms_per_payment": per,
        "total_ms": round(total, 2),
        "payments_per_s_on_all_cores": round(cores * 1000 / total, 1) if total else None,
    }


def targets(results: dict[str, Any]) -> dict[str, Any]:
    at_target = [r for r in results["fixed_rate"] if r["rate"] == TARGET_RATE]
    p99 = at_target[0]["latency_ms"]["p99"] if at_target else None
    return {
        "accepted_per_s >= 800": results["pay_max"]["accepted_per_s"] >= TARGET_ACCEPTED,
        "p99 at 400/s <= 50 ms": p99 is not None and p99 <= TARGET_P99_MS,
        "ratio_to_ceiling >= 0.14": results["ratio_to_ceiling"] >= 0.14,
    }


def call(base: str, key: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - always 127.0.0.1
        base + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        data: dict[str, Any] = json.load(response)
        return data




def machine() -> dict[str, Any]:
    """procs.machine(), with the load when this bench started and wrk's version."""
    return {
        **procs.machine(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "wrk": subprocess.run(
            ["wrk", "-v"], capture_output=True, text=True, check=False
        ).stdout.splitlines()[0:1],
    }


def _clear_redis(config: Config) -> None:
    """Delete this bench's queue and rate-limit keys (and no other bench's)."""
    ns = config.redis_namespace
    client = redis.Redis.from_url(config.redis_url)
    for pattern in (f"{ns}-dramatiq*", f"LIMITS:LIMITER/{ns}-limits/*"):
        for key in client.scan_iter(pattern):
            client.delete(key)
    client.close()


def report(r: dict[str, Any]) -> str:
    """The table printed at the end."""
    c, m, d = r["ceiling"], r["pay_max"], r["drain_after_max"]
    s = r["settings"]
    lines = [
        "",
        f"POST /pay load bench - {r['machine']['date']} - commit {r['machine']['git_commit'][:10]}"
        f" - {r['machine']['nproc']} cores - {r['bench_seconds']} s",
        f"gunicorn {s['gunicorn']['workers']} x {s['gunicorn']['worker_class']} "
        f"(threads {s['gunicorn']['threads']}), dramatiq {s['dramatiq']['processes']} x "
        f"{s['dramatiq']['threads']} threads, wrk -t2 -c{s['wrk']['connections']}",
        "",
        f"{'measure':<44}{'value':>16}",
        f"{'ceiling: hello-world req/s':<44}{c['requests_per_s']:>16.0f}",
        f"{'/pay max accepted (202) req/s':<44}{m['accepted_per_s']:>16.1f}",
        f"{'  ratio to ceiling':<44}{r['ratio_to_ceiling']:>16.3f}",
        f"{'  error rate (non-202 share)':<44}{m['error_rate']:>16.4f}",
        f"{'  wrk latency p50 / p99 ms':<44}{_pair(m['latency_ms'])}",
        f"{'  statuses':<44}{json.dumps(m['statuses']):>16}",
    ]
    for f in r["fixed_rate"]:
        st = f["settle"]
        lines += [
            f"{'fixed ' + str(int(f['rate'])) + '/s: latency p50 / p99 ms':<44}"
            f"{_pair(f['latency_ms'])}",
            f"{'  achieved req/s / error rate':<44}{f['achieved_per_s']:>7.0f} /"
            f"{f['error_rate']:>7.3f}",
            f"{'  202 -> succeeded p50 / p99 ms':<44}{_pair(st.get('from_202_ms', {}))}",
        ]
    lines += [
        f"{'after max: backlog / drained in s':<44}{d['backlog_when_wrk_ended']:>7} /"
        f"{d['seconds_after_wrk']:>7.1f}",
        f"{'  fleet settled/s':<44}{d['fleet_settled_per_s']:>16.1f}",
        f"{'others on the machine during max, cores':<44}"
        f"{r['cpu_cores_used']['max (wrk on /pay)']['cores']['other processes']:>16.2f}",
        f"{'CPU ms per accepted payment (all of ours)':<44}"
        f"{r['cpu_bound_estimate']['total_ms']:>16.1f}",
        f"{'  => payments/s if the engine had all cores':<44}"
        f"{r['cpu_bound_estimate']['payments_per_s_on_all_cores'] or 0:>16.1f}",
        "",
        "targets: " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in r["targets"].items()),
        "",
        "CPU per phase: cores used (of 2), and CPU ms per request for ours:",
    ]
    for phase, usage in r["cpu_cores_used"].items():
        per = usage["cpu_ms_per_request"]
        parts = [
            f"{name} {cores}" + (f" ({per[name]} ms)" if name in per else "")
            for name, cores in usage["cores"].items()
        ]
        lines.append(f"  {phase}: " + ", ".join(parts))
    return "\n".join(lines + profile_report(r.get("profile_during_max", {})))


def profile_report(profiles: dict[str, Any]) -> list[str]:
    """Where the API's request time went, and the fleet's busiest frames, during max."""
    lines = []
    api = profiles.get("gunicorn", {}).get("pay_steps")
    if api:
        lines += ["", f"API profile during max (py-spy, {api['samples']} samples in requests):"]
        lines += [f"  {pct:5.1f}%  {label}" for label, pct in api["steps_pct"].items()]
        lines += [f"  {pct:5.1f}%  {label}" for label, pct in api["leaf_pct"].items()]
    fleet = profiles.get("dramatiq", {}).get("inclusive")
    if fleet:
        lines += ["", "fleet profile during max (py-spy, inclusive, app frames):"]
        lines += [f"  {pct:5.1f}%  {frame}" for frame, pct in fleet if "(app/" in frame][:10]
    return lines


def _pair(values: dict[str, Any]) -> str:
    if "p50" not in values:
        return f"{'-':>16}"
    return f"{values['p50']:>7.1f} /{values['p99']:>7.1f}"


if __name__ == "__main__":
    main()
