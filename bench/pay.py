"""POST /pay and GET /payments/{id} against the issue-11 targets, every throughput as a ratio to
a hello-world ceiling measured in the same run under the same gunicorn settings.

    .venv/bin/python bench/pay.py [--profile]    (about 4 minutes; needs wrk: apt-get install wrk)

On a database (`se_bench`, recreated and removed) and a redis-server of its own (tests/servers.py):
  1. ceiling: bench/hello.py under the same gunicorn settings, wrk with 32 connections; once
     more at the end (9.): the ratios are to the mean of the two, and a spread of more than
     20% between them is flagged (the machine's load changed: ratios unreliable); then the
     I/O floor, hello.py's `/io`: the round trips of one /pay with the bare drivers (no target:
     it shows how much of /pay's cost is the round trips themselves);
  2. API alone (no worker fleet): wrk on POST /pay, a new Idempotency-Key each (bench/wrk.lua);
     only 202 counts as accepted;
  3. GET /payments/{id} of one payment, wrk; only 200 counts;
  4. the fleet (`dramatiq app.jobs`) starts and settles phase 2's backlog: its rate with a
     full queue;
  5. search, open loop (bench/openloop.py): --probe-seconds at an offered rate, starting from
     what phases 2 and 4 predict, up or down, then bisecting, for the highest rate that is
     *flat*: at least 99% answered 202, accepted at >= 97% of the offered rate, settled at
     >= 95% of the accepted rate, the backlog (accepted, not yet settled, polled from the
     database) growing by less than 5% of the offered rate per second, and the latency by
     less than 20 ms per second (the API is not queueing up);
  6. sustained: the best flat rate for --sustain-seconds (60); if it is not flat, once more
     15% lower. CPU per settled payment (API + fleet + PostgreSQL) is measured here;
  7. latency: half the sustained rate, p99 measured from each request's scheduled time, and
     202 -> settled;
  8. package floors (no target): bench/floors.py, the same work as POST /pay and GET
     /payments/{id} (the same requests, wrk as in 2. and 3.) done by the packages the design
     fixes alone (Flask, Flask-Limiter, pydantic, SQLAlchemy, Dramatiq, redis-py) with none of
     our request code: how far below them our own Python keeps /pay and GET (its docstring
     lists their round trips). Last, with the fleet stopped: their payments stay pending;
     then bench/floor_fleet.py, Dramatiq alone, consumes their charge messages (full queue):
     its CPU per message, added to the /pay floor's, is the least a settled payment can cost
     with these packages on this machine (no target: a lower bound for the CPU target).
Prints a table and writes bench/results/pay.json, with the CPU each process used per phase (the
2 cores are shared by the server, the fleet, PostgreSQL, Redis, the load generator and whatever
else runs on the machine) and, with --profile, where the API's, the fleet's and the package
floors' time went.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import procs
import redis
import spy
import wrk
from openloop import percentiles_ms, request_bytes, run_fixed_rate, slope, summary
from procs import (
    PG,
    ROOT,
    Fleet,
    Poller,
    cpu_ms_per,
    cpu_snapshot,
    cpu_usage,
    free_port,
    say,
    wait_http,
    wait_quiet,
)
from sqlalchemy import Engine, create_engine, text
from wrk import Wrk

sys.path.insert(0, str(ROOT))  # tests/servers.py: the servers a test or bench starts

from app.bootstrap import build
from app.config import Config
from app.models.database import drop_database, ensure_database, migrate
from app.services.tenants import create_tenant
from tests.servers import RedisServer

BENCH = ROOT / "bench"
RESULTS = BENCH / "results" / "pay.json"
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
#: Issue 11, item 5: ratios to the ceiling (at least), p99 and CPU (at most).
TARGETS = {"api_alone": 0.15, "sustained": 0.08, "get_payment": 0.4, "p99_ms": 50.0,
           "cpu_ms_per_settled": 6.0}
#: What "flat" allows (see the module's docstring).
FLAT = {"answered_202": 0.99, "accepted_of_offered": 0.97, "settled_of_accepted": 0.95,
        "backlog_growth_of_offered": 0.05, "latency_growth_ms_per_s": 20.0}
TENANT_RATE_LIMIT = "100000/second"  # the bench's tenant is never rate limited
CEILING_SPREAD = 0.2  # first and last ceiling further apart than this: the load changed
#: Whose CPU a settled payment costs (the target's sum); Redis and the load are shown apart.
PIPELINE = ("gunicorn", "dramatiq", "postgresql (bench db)")
NOT_OURS = ("other processes", "postgresql (server processes)", "redis (all clients)",
            "steal (hypervisor)")
UNSETTLED = "status IN ('pending', 'processing', 'unknown')"  # ix_payments_unsettled
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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--workers", type=int, default=4, help="gunicorn workers (both apps)")
    add("--worker-class", default="sync", help="gunicorn worker class")
    add("--threads", type=int, default=1, help="gunicorn threads per worker")
    add("--fleet-processes", type=int, default=2, help="dramatiq processes")
    add("--fleet-threads", type=int, default=4, help="dramatiq threads each")
    add("--connections", type=int, default=32, help="wrk connections")
    add("--max-seconds", type=int, default=10, help="each wrk run")
    add("--probe-seconds", type=float, default=8.0, help="each rate tried in the search")
    add("--probes", type=int, default=5, help="rates tried at most")
    add("--rate", type=float, default=0.0,
        help="skip the search and sustain this rate (the same rate before and after a change)")
    add("--sustain-seconds", type=float, default=60.0, help="the sustained run")
    add("--latency-seconds", type=float, default=15.0, help="the run at half that rate")
    add("--drain-seconds", type=float, default=60.0, help="wait for the fleet at most")
    add("--db-pool-size", type=int, default=5)
    add("--charge-linger-ms", type=int, default=Config.charge_linger_ms,
        help="the fleet's CHARGE_LINGER_MS (batch size against time to settle)")
    add("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
        help="first wait up to this long for the machine to be >= 80%% idle (shared machines)")
    add("--keep", action="store_true", help="keep the database afterwards")
    add("--profile", action="store_true",
        help="py-spy the API alone (phase 2) and API + fleet sustained (phase 6)")
    add("--out", type=Path, default=RESULTS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    wrk = Wrk.find(args.connections)
    idle_at_start = wait_quiet(args.wait_quiet)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="se-bench-") as tmp:
        # A redis-server of the bench's own: its CPU is ours alone, and its keys go with it.
        own_redis = RedisServer(Path(tmp))
        own_redis.start()
        assert own_redis.process is not None
        config = Config.from_env(
            {}, database_url=f"{PG}/se_bench", redis_url=own_redis.url,
            redis_namespace="se-bench-pay", engine_env="development",
            db_pool_size=args.db_pool_size, charge_linger_ms=args.charge_linger_ms,
        )
        say(f"recreating database se_bench; load average {os.getloadavg()[0]:.2f}")
        drop_database(config.database_url)
        ensure_database(config.database_url)
        migrate(config.database_url)
        fleet = Fleet(Path(tmp))
        try:
            results = Bench(args, config, fleet, Path(tmp), wrk,
                            own_redis.process.pid).run()
        finally:
            say("stopping processes")
            fleet.stop_all()
            own_redis.stop()
            if not args.keep:
                drop_database(config.database_url)
    results["bench_seconds"] = round(time.monotonic() - started, 1)
    results["machine"]["idle_cores_at_start"] = idle_at_start
    results["machine"]["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    print(f"\nwritten to {args.out}")


class Bench:
    """One run of every phase; each method is one phase and returns what it measured."""

    def __init__(self, args: argparse.Namespace, config: Config, fleet: Fleet, tmp: Path,
                 wrk: Wrk, redis_pid: int) -> None:
        self.args, self.config, self.fleet, self.wrk = args, config, fleet, wrk
        self.redis_pid = redis_pid
        self.run_id = uuid.uuid4().hex[:8]
        metrics = tmp / "prometheus"
        metrics.mkdir()
        self.env = {**os.environ, **config.to_env(), "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
        self.engine: Engine = create_engine(config.database_url, pool_size=2)
        self.cpu: dict[str, dict[str, Any]] = {}
        self.profiles: dict[str, Any] = {}

    def run(self) -> dict[str, Any]:
        r: dict[str, Any] = {"machine": {**procs.machine(), "wrk": self.wrk.version()},
                             "settings": self.settings()}
        first = self.ceiling("first")
        r["io_floor"] = self.io_floor()
        port = free_port()
        self.gunicorn("gunicorn", "wsgi:app", port)
        wait_http(f"http://{HOST}:{port}/readyz", self.fleet, timeout=90)
        key, body = self.prepare(f"http://{HOST}:{port}")
        self.offer(port, key, body, 50.0, 3.0, "warm-up")  # not reported
        r["api_alone"] = self.api_alone(port, key, body)
        r["get_payment"] = self.get_payment(port, key)
        r["fleet_drain"] = self.start_fleet()
        r["search"] = (self.search(port, key, body, r["api_alone"], r["fleet_drain"])
                       if not self.args.rate else
                       {"predicted_per_s": None, "best_flat_per_s": self.args.rate, "probes": []})
        r["sustained"] = self.sustained(port, key, body, r["search"]["best_flat_per_s"])
        chosen = chosen_run(r["sustained"])
        r["half_rate"] = self.offer(port, key, body, round(chosen["offered_per_s"] / 2),
                                    self.args.latency_seconds, "half the sustained rate",
                                    settle_times=True)
        self.fleet.stop("dramatiq")
        self.fleet.stop("gunicorn")
        r["floor_pay"], r["floor_get"] = self.package_floors(key, body)
        r["floor_fleet"] = self.fleet_floor()
        r["ceiling"] = both_ceilings(first, self.ceiling("last"))
        r["ratios"] = ratios(r)
        r["cpu_floor_ms_per_settled"] = cpu_floor(r)
        r["targets"] = targets(r)
        r["cpu_cores_used"] = self.cpu
        if self.profiles:
            r["profiles"] = self.profiles
        self.engine.dispose()
        return r

    def settings(self) -> dict[str, Any]:
        a = self.args
        return {
            "gunicorn": {"workers": a.workers, "worker_class": a.worker_class,
                         "threads": a.threads, "access_log": False, "log_level": "warning"},
            "dramatiq": {"processes": a.fleet_processes, "threads": a.fleet_threads,
                         "charge_linger_ms": a.charge_linger_ms},
            "wrk": {"threads": 2, "connections": a.connections, "seconds": a.max_seconds},
            "open_loop": {"probe_seconds": a.probe_seconds, "probes": a.probes,
                          "sustain_seconds": a.sustain_seconds,
                          "latency_seconds": a.latency_seconds, "flat": FLAT,
                          "generator": "bench/openloop.py (asyncio, latency from schedule)"},
            "db_pool_size": a.db_pool_size,
            "tenant_rate_limit": TENANT_RATE_LIMIT,
            "prometheus_multiproc": True,
            "redis": "a redis-server of the bench's own (no persistence)",
            "not_running": "scheduler, outbox relay, Kafka",
        }

    def gunicorn(self, name: str, app: str, port: int, *extra: str) -> None:
        a = self.args
        argv = [str(BIN / "gunicorn"), app, "--bind", f"{HOST}:{port}", "--workers",
                str(a.workers), "--worker-class", a.worker_class, "--threads", str(a.threads),
                "--log-level", "warning",
                "--no-control-socket",  # else every gunicorn on the machine shares one socket
                *extra]
        self.fleet.start(name, argv, self.env, ROOT)

    def ceiling(self, which: str) -> dict[str, Any]:
        """Phases 1 and 9: hello-world under the same gunicorn settings (plain wrk)."""
        say(f"{which} ceiling: hello-world under gunicorn, wrk")
        result = self.on_hello("/", f"{which} ceiling (wrk on hello)")
        say(f"ceiling {result['requests_per_s']:.0f} req/s")
        return result

    def io_floor(self) -> dict[str, Any]:
        """Phase 1b: bench/hello.py's `/io`, the round trips of one /pay with bare drivers."""
        say("I/O floor: /pay's round trips with bare drivers, wrk")
        with self.engine.begin() as connection:
            connection.execute(text("CREATE TABLE bench_io (k text PRIMARY KEY, v text)"))
        result = self.on_hello("/io", "I/O floor (wrk on hello /io)")
        say(f"I/O floor {result['requests_per_s']:.0f} req/s")
        return result

    def package_floors(self, key: str, body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
        """Phase 8: bench/floors.py's POST /pay and GET /payments/{id}, wrk as in 2. and 3."""
        say("package floors: /pay and GET by the fixed packages alone, wrk")
        pay = self.on_hello("/pay", "package floor: POST /pay (wrk)", app="floors:app",
                            request=("POST", key, body.decode()), ok="202", profile="floor-pay")
        get = self.on_hello(f"/payments/{self.latest_payment()}", "package floor: GET (wrk)",
                            app="floors:app", request=("GET", key), profile="floor-get")
        say(f"package floors: POST /pay {pay['ok_per_s']:.0f}/s, GET {get['ok_per_s']:.0f}/s")
        return pay, get

    def fleet_floor(self) -> dict[str, Any]:
        """Phase 8b: bench/floor_fleet.py, Dramatiq alone, consumes the charge messages the
        package floor's /pay left queued (full queue, the fleet's settings): its CPU per
        message, which any fleet pays per payment above its own work."""
        backlog = self.queued()
        say(f"fleet floor: Dramatiq alone consumes {backlog} charge messages")
        a, phase, before = self.args, "fleet floor: Dramatiq alone (full queue)", cpu_snapshot()
        self.fleet.start("floor fleet", [str(BIN / "dramatiq"), "floor_fleet", "--processes",
                                         str(a.fleet_processes), "--threads",
                                         str(a.fleet_threads)], self.env, BENCH)
        started = time.monotonic()
        self.wait_until(self.consumed(), a.drain_seconds)
        seconds = time.monotonic() - started
        self.record_cpu(phase, before, backlog)
        self.fleet.stop("floor fleet")
        per = self.cpu[phase]["cpu_ms_per_request"]
        say(f"fleet floor: {backlog} in {seconds:.1f} s, {per}")
        return {"messages": backlog, "seconds": round(seconds, 1), "cpu_ms_per_message": per}

    def on_hello(self, path: str, phase: str, *, app: str = "hello:app",
                 request: tuple[str, ...] = (), ok: str = "200",
                 profile: str = "") -> dict[str, Any]:
        """wrk on a path of bench/hello.py (or of `app`, e.g. bench/floors.py), served under
        the engine's gunicorn settings; its CPU recorded as `phase`. Plain wrk, or with
        `request` (METHOD, API key[, body]) bench/wrk.lua, a new Idempotency-Key each when
        there is a body, and only `ok` answers counted."""
        name = app.split(":")[0]
        port = free_port()
        self.gunicorn(name, app, port, "--pythonpath", str(BENCH))
        base = f"http://{HOST}:{port}"
        wait_http(f"{base}/", self.fleet)

        def measure(seconds: int, label: str) -> dict[str, Any]:
            if not request:
                return self.wrk.plain(base + path, seconds)
            method, key, *body = request
            keys = [*body, f"{self.run_id}-{label}"] if body else []
            return wrk.summary(self.wrk.scripted(base, seconds, method, path, key, *keys), ok)

        measure(2, f"{name}-warm")
        recording = self.start_profiles(profile, self.args.max_seconds) if profile else None
        before = cpu_snapshot()
        result = measure(self.args.max_seconds, name)
        self.record_cpu(phase, before, result.get("ok", result["requests"]))
        self.finish_profiles(profile, recording)
        self.fleet.stop(name)
        result["cpu_ms_per_request"] = self.cpu[phase]["cpu_ms_per_request"]
        return result

    def prepare(self, base: str) -> tuple[str, bytes]:
        """A tenant that is never rate limited, one customer and its `tok_ok` payment method."""
        with build(self.config).uow() as uow:
            tenant = create_tenant(uow, "bench", rate_limit=TENANT_RATE_LIMIT)
            uow.commit()
        # bench/floors.py takes the caller as given
        self.env.update(BENCH_TENANT_ID=tenant.tenant_id, BENCH_TENANT_RATE_LIMIT=TENANT_RATE_LIMIT)
        key = tenant.test_key
        customer = call(base, key, "/customers", {"email": "bench@example.com", "name": "Bench"})
        method = call(base, key, f"/customers/{customer['id']}/payment-methods",
                      {"provider": "sandbox", "token": "tok_ok"})
        body = {"amount": 1999, "currency": "usd", "customer_id": customer["id"],
                "payment_method_id": method["id"], "description": "bench", "metadata": {}}
        return key, json.dumps(body, separators=(",", ":")).encode()

    def api_alone(self, port: int, key: str, body: bytes) -> dict[str, Any]:
        """Phase 2: wrk on POST /pay with no fleet running; only 202 counts as accepted."""
        say("API alone: wrk on POST /pay, fleet stopped")
        seconds = self.args.max_seconds
        recording = self.start_profiles("api-alone", seconds)
        started, before = time.time(), cpu_snapshot()
        data = self.wrk.scripted(f"http://{HOST}:{port}", seconds, "POST", "/pay", key,
                                 body.decode(), f"{self.run_id}-max")
        self.record_cpu("API alone (wrk on /pay)", before, self.created(started, time.time()))
        self.finish_profiles("api-alone", recording)
        result = wrk.summary(data, "202")
        result["created_in_db"] = self.cpu["API alone (wrk on /pay)"]["requests"]
        say(f"API alone: {result['ok_per_s']:.0f} accepted/s")
        return result

    def get_payment(self, port: int, key: str) -> dict[str, Any]:
        """Phase 3: wrk on GET /payments/{id} of one payment; only 200 counts."""
        payment = self.latest_payment()
        say(f"GET /payments/{payment}: wrk")
        before = cpu_snapshot()
        data = self.wrk.scripted(f"http://{HOST}:{port}", self.args.max_seconds, "GET",
                                 f"/payments/{payment}", key)
        self.record_cpu("GET /payments/{id} (wrk)", before, data["requests"])
        return wrk.summary(data, "200")

    def start_fleet(self) -> dict[str, Any]:
        """Phase 4: the fleet starts and settles the API-alone backlog; its rate when full."""
        backlog = self.unsettled()
        say(f"starting the fleet; {backlog} payments to settle")
        a = self.args
        before, started = cpu_snapshot(), time.monotonic()
        self.fleet.start("dramatiq", [str(BIN / "dramatiq"), "app.jobs", "--processes",
                                      str(a.fleet_processes), "--threads", str(a.fleet_threads)],
                         self.env, ROOT)
        first = self.wait_until(lambda: self.unsettled() < backlog, a.drain_seconds)
        drained = self.wait_until(lambda: self.unsettled() == 0, a.drain_seconds)
        seconds = time.monotonic() - started
        settled = backlog - self.unsettled()
        # Mates settle most payments before their own messages are taken: those messages
        # are still queued, and each is a claim that finds nothing. Consumed before phase 5,
        # so that the steady flow starts with an empty queue rather than behind them.
        emptied = self.wait_until(self.consumed(), a.drain_seconds)
        consumed_s = time.monotonic() - started
        self.record_cpu("fleet drains the backlog", before, settled)
        busy = seconds - (first or 0.0)
        say(f"fleet settled {settled} in {seconds:.1f} s, its messages consumed in"
            f" {consumed_s:.1f} s")
        return {"backlog": backlog, "drained": drained is not None, "seconds": round(seconds, 1),
                "first_settle_after_s": None if first is None else round(first, 1),
                "settled_per_s": round(settled / busy, 1) if settled and busy > 0 else None,
                "messages_consumed_s": None if emptied is None else round(consumed_s, 1)}

    def search(self, port: int, key: str, body: bytes, api: dict[str, Any],
               drain: dict[str, Any]) -> dict[str, Any]:
        """Phase 5: the highest flat rate, from the prediction up or down, then bisecting."""
        api_rate = max(api["ok_per_s"], 1.0)
        fleet_rate = max(drain["settled_per_s"] or api_rate, 1.0)
        # Between what their costs add up to when both use the same cores fully (an idle
        # machine) and the slower of the two alone (a machine others keep busy).
        shared = 1 / (1 / api_rate + 1 / fleet_rate)
        predicted = math.sqrt(shared * min(api_rate, fleet_rate))
        rate, flat, steep, probes = max(5.0, round(predicted)), 0.0, math.inf, []
        for _ in range(self.args.probes):
            probe = self.offer(port, key, body, rate, self.args.probe_seconds, "probe")
            probes.append(probe)
            if probe["flat"]:
                flat = rate
            else:
                steep = rate
            if steep / max(flat, 1) < 1.1:
                break
            rate = round(rate * 1.4 if steep == math.inf else
                         rate * 0.6 if flat == 0 else math.sqrt(flat * steep))
        best = flat or round(min(p["offered_per_s"] for p in probes) * 0.6)
        return {"predicted_per_s": round(predicted, 1), "best_flat_per_s": best,
                "probes": probes}

    def sustained(self, port: int, key: str, body: bytes, rate: float) -> list[dict[str, Any]]:
        """Phase 6: the best flat rate for --sustain-seconds; once more 15% lower if not flat."""
        runs = [self.offer(port, key, body, rate, self.args.sustain_seconds, "sustained",
                           profile="sustained")]
        if not runs[0]["flat"]:
            runs.append(self.offer(port, key, body, round(rate * 0.85),
                                   self.args.sustain_seconds, "sustained"))
        return runs

    def offer(self, port: int, key: str, body: bytes, rate: float, seconds: float, label: str,
              *, profile: str = "", settle_times: bool = False) -> dict[str, Any]:
        """POST /pay at `rate` for `seconds`, open loop, the backlog polled meanwhile."""
        drained = self.wait_until(lambda: self.unsettled() == 0, self.args.drain_seconds)
        self.fleet.check_alive()
        say(f"{label}: POST /pay at {rate:.0f}/s for {seconds:.0f} s")
        prefix = f"{self.run_id}-{label[:4]}{int(rate)}-{time.monotonic():.0f}-"
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

        def factory(number: int) -> bytes:
            return request_bytes("POST", "/pay", f"{HOST}:{port}",
                                 {**headers, "Idempotency-Key": f"{prefix}{number}"}, body)

        recording = self.start_profiles(profile, int(seconds * 0.8)) if profile else None
        before, started = cpu_snapshot(), time.time()
        with Poller(self.unsettled, 0.5) as backlog:
            samples = asyncio.run(run_fixed_rate(HOST, port, rate, seconds, factory))
        ended = time.time()
        settled = self.settled(started, ended)
        phase = f"{label} {rate:.0f}/s"
        if label != "warm-up":
            self.record_cpu(phase, before, settled)
        self.finish_profiles(profile, recording)
        result = summary(samples, rate, seconds, ok=202)
        growth = slope([p for p in backlog.points if p[0] >= seconds * 0.3])
        later = [(s.due, s.latency) for s in samples if s.due >= seconds * 0.3]
        result.update({
            "started_drained": drained is not None,
            "settled_per_s": round(settled / (ended - started), 1),
            "backlog": {"at_end": int(backlog.points[-1][1]),
                        "max": int(max(v for _, v in backlog.points)),
                        "growth_per_s": round(growth, 1)},
            "latency_growth_ms_per_s": round(slope(later) * 1000, 1),
        })
        result["flat"] = is_flat(result)
        if label != "warm-up":
            result["cpu_ms_per_settled"] = self.cpu[phase]["cpu_ms_per_request"]
        if settle_times:
            result["settle"] = self.settle_times(samples)
        say(f"  {result['ok_per_s']:.0f} accepted/s, {result['settled_per_s']:.0f} settled/s, "
            f"backlog {growth:+.1f}/s, p99 {result['latency_ms'].get('p99')} ms: "
            f"{'flat' if result['flat'] else 'NOT flat'}")
        return result

    def settle_times(self, samples: list[Any]) -> dict[str, Any]:
        """Seconds from each 202 to the worker's settle (payments.updated_at), once settled."""
        answered = {json.loads(s.body)["id"]: s.answered_at for s in samples if s.status == 202}
        self.wait_until(lambda: self.unsettled() == 0, self.args.drain_seconds)
        with self.engine.connect() as connection:
            rows = connection.execute(
                text("SELECT id, status, extract(epoch FROM updated_at) FROM payments "
                     "WHERE id = ANY(:ids)"), {"ids": list(answered)}).all()
        done = [r for r in rows if r[1] == "succeeded"]
        return {"payments": len(answered), "succeeded": len(done),
                "from_202_ms": percentiles_ms([float(r[2]) - answered[r[0]] for r in done])}

    def start_profiles(self, phase: str, seconds: int) -> spy.Phase | None:
        if not self.args.profile:
            return None
        return spy.Phase(self.fleet.pgids(), seconds,
                         lambda name: self.args.out.parent / f"pay-profile-{phase}-{name}.txt")

    def finish_profiles(self, phase: str, recording: spy.Phase | None) -> None:
        for name, raw in (recording.finish() if recording else {}).items():
            self.profiles[f"{phase} {name}"] = {
                "raw": str(raw),
                "pay_steps": spy.steps(raw, "Flask.wsgi_app (", PAY_STEPS, PAY_LEAVES),
                "by_package_self_pct": spy.by_package(raw)[:15],
                **spy.summarize(raw, top=25),
            }

    def record_cpu(self, phase: str, before: procs.CpuSnapshot, requests: int) -> None:
        """Cores used per consumer during a phase, and CPU ms each of ours spent per request
        (`requests`: what the server completed in the phase, e.g. payments settled)."""
        own = {os.getpid(): "bench (load generator)", self.redis_pid: "redis (own server)"}
        exited = {"wrk": self.wrk.cpu_seconds}
        self.wrk.cpu_seconds = 0.0
        usage = cpu_usage(before, cpu_snapshot(), self.fleet.pgids(), own, exited)
        per_request = cpu_ms_per(usage, requests, skip=NOT_OURS)
        self.cpu[phase] = {**usage, "requests": requests, "cpu_ms_per_request": per_request}

    def created(self, start: float, end: float) -> int:
        """Payments the API created between two wall-clock times."""
        return self.scalar("SELECT count(*) FROM payments WHERE created_at BETWEEN "
                           "to_timestamp(:a) AND to_timestamp(:b)", a=start, b=end)

    def settled(self, start: float, end: float) -> int:
        """Payments the fleet settled between two wall-clock times."""
        sql = f"SELECT count(*) FROM payments WHERE NOT ({UNSETTLED}) AND "  # noqa: S608
        sql += "updated_at BETWEEN to_timestamp(:a) AND to_timestamp(:b)"
        return self.scalar(sql, a=start, b=end)

    def queued(self) -> int:
        """Charge messages not yet acknowledged (queued, delayed or in a worker's hands)."""
        with redis.Redis.from_url(self.config.redis_url) as queue:
            return int(queue.hlen(f"{self.config.redis_namespace}-dramatiq:default.msgs"))

    def consumed(self) -> Callable[[], bool]:
        """For one wait: whether the fleet has taken every charge message it will: none
        left, or the same number left for a second (those a stopped fleet had taken and not
        acknowledged, which Dramatiq gives back only after its heartbeat timeout)."""
        last, since = -1, time.monotonic()

        def done() -> bool:
            nonlocal last, since
            left, now = self.queued(), time.monotonic()
            if left != last:
                last, since = left, now
            return left == 0 or now - since >= 1.0

        return done

    def unsettled(self) -> int:
        return self.scalar(f"SELECT count(*) FROM payments WHERE {UNSETTLED}")  # noqa: S608

    def wait_until(self, done: Callable[[], bool], timeout: float) -> float | None:
        return procs.wait_until(done, timeout, self.fleet)

    def scalar(self, sql: str, **params: Any) -> int:
        with self.engine.connect() as connection:
            return int(connection.scalar(text(sql), params) or 0)

    def latest_payment(self) -> str:
        """The id of the payment created last (pending while the fleet is stopped)."""
        with self.engine.connect() as connection:
            return str(connection.scalar(
                text("SELECT id FROM payments ORDER BY created_at DESC LIMIT 1")))


def is_flat(run: dict[str, Any]) -> bool:
    """Every payment accepted on time and settled as fast: the pipeline keeps up."""
    rate = run["offered_per_s"]
    return bool(
        1 - run["error_rate"] >= FLAT["answered_202"]
        and run["ok_per_s"] >= FLAT["accepted_of_offered"] * rate
        and run["settled_per_s"] >= FLAT["settled_of_accepted"] * run["ok_per_s"]
        and run["backlog"]["growth_per_s"] <= FLAT["backlog_growth_of_offered"] * rate
        and run["latency_growth_ms_per_s"] <= FLAT["latency_growth_ms_per_s"]
    )


def chosen_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The sustained run reported: the flat one, else the one that settled the most."""
    flat = [run for run in runs if run["flat"]]
    return flat[0] if flat else max(runs, key=lambda run: run["settled_per_s"])


def both_ceilings(first: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    """The ceiling the ratios use: the mean of the first and last run, with their spread."""
    rates = [first["requests_per_s"], last["requests_per_s"]]
    mean = sum(rates) / 2
    spread = (max(rates) - min(rates)) / mean
    return {"requests_per_s": round(mean, 1), "spread": round(spread, 3),
            "steady": spread <= CEILING_SPREAD, "first": first, "last": last}


def ratios(r: dict[str, Any]) -> dict[str, Any]:
    ceiling = r["ceiling"]["requests_per_s"]
    chosen = chosen_run(r["sustained"])
    cpu = chosen["cpu_ms_per_settled"]
    # Not flat: what it did achieve (the target is then not met whatever the figure).
    sustained = chosen["offered_per_s"] if chosen["flat"] else chosen["settled_per_s"]
    return {
        "io_floor": round(r["io_floor"]["requests_per_s"] / ceiling, 4),
        "floor_pay": round(r["floor_pay"]["ok_per_s"] / ceiling, 4),
        "floor_get": round(r["floor_get"]["ok_per_s"] / ceiling, 4),
        "api_alone": round(r["api_alone"]["ok_per_s"] / ceiling, 4),
        "sustained": round(sustained / ceiling, 4),
        "sustained_flat": chosen["flat"],
        "get_payment": round(r["get_payment"]["ok_per_s"] / ceiling, 4),
        "p99_ms_at_half": r["half_rate"]["latency_ms"].get("p99"),
        "cpu_ms_per_settled": round(sum(cpu.get(name, 0.0) for name in PIPELINE), 2),
    }


def cpu_floor(r: dict[str, Any]) -> dict[str, float]:
    """The least CPU a settled payment can cost with the design's packages, on this machine:
    the package floor's POST /pay (its Python and PostgreSQL) plus Dramatiq alone per charge
    message, with no claim, provider call or settle (a lower bound for the target's sum)."""
    pay, fleet = r["floor_pay"]["cpu_ms_per_request"], r["floor_fleet"]["cpu_ms_per_message"]
    parts = {"floors (POST /pay)": pay.get("floors", 0.0),
             "postgresql (POST /pay)": pay.get("postgresql (bench db)", 0.0),
             "Dramatiq alone (per message)": fleet.get("floor fleet", 0.0)}
    return {**parts, "sum": round(sum(parts.values()), 2)}


def targets(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each figure against its target; ratios and rates are at least, p99 and CPU at most."""
    out = {}
    for name, value in r["ratios"].items():
        if name in ("sustained_flat", "io_floor", "floor_pay", "floor_get"):
            continue
        target = TARGETS["p99_ms" if name == "p99_ms_at_half" else name]
        at_most = name in ("p99_ms_at_half", "cpu_ms_per_settled")
        met = value is not None and (value <= target if at_most else value >= target)
        met = met and (name != "sustained" or r["ratios"]["sustained_flat"])
        out[name] = {"value": value, "target": f"{'<=' if at_most else '>='} {target}",
                     "met": met}
    return out


def call(base: str, key: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - always 127.0.0.1
        base + path, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        data: dict[str, Any] = json.load(response)
        return data


def report(r: dict[str, Any]) -> str:
    """The table printed at the end."""
    m, s, c = r["machine"], r["settings"], r["ceiling"]
    api, get, drain, half = r["api_alone"], r["get_payment"], r["fleet_drain"], r["half_rate"]
    chosen = chosen_run(r["sustained"])
    ceiling = c["requests_per_s"]
    lines = [
        "",
        f"POST /pay bench - {m['date']} - commit {m['git_commit'][:10]}"
        f"{' (dirty)' if m['git_worktree_dirty'] else ''} - {m['nproc']} cores - "
        f"load {' '.join(map(str, m['loadavg_at_start']))} at start, "
        f"{' '.join(map(str, m['loadavg_at_end']))} at end - {r['bench_seconds']} s",
        f"gunicorn {s['gunicorn']['workers']} x {s['gunicorn']['worker_class']} "
        f"(threads {s['gunicorn']['threads']}), dramatiq {s['dramatiq']['processes']} x "
        f"{s['dramatiq']['threads']} threads (CHARGE_LINGER_MS "
        f"{s['dramatiq'].get('charge_linger_ms')}), wrk -t2 -c{s['wrk']['connections']}",
        "",
        f"{'measure':<50}{'value':>10}{'ratio':>9}{'target':>11}",
        f"{'ceiling: hello-world req/s (mean of first, last)':<50}{ceiling:>10.0f}"
        f"   {c['first']['requests_per_s']:.0f}, {c['last']['requests_per_s']:.0f}"
        + ("" if c["steady"] else f"  UNSTEADY: {c['spread']:.0%} apart, ratios unreliable"),
    ]
    t, floor_cpu = r["targets"], r["cpu_floor_ms_per_settled"]

    def row(label: str, value: float | None, name: str, ratio: bool = True) -> str:
        shown = "-" if value is None else f"{value:.1f}"
        mark = "ok" if t[name]["met"] else "NO"
        ratio_text = f"{t[name]['value']:.3f}" if ratio else ""
        return f"{label:<50}{shown:>10}{ratio_text:>9}{t[name]['target']:>9} {mark}"

    def floor(label: str, value: float, name: str) -> str:
        return f"{label:<50}{value:>10.0f}{r['ratios'][name]:>9.3f}"

    lines += [
        floor("I/O floor: /pay round trips, bare drivers req/s", r["io_floor"]["requests_per_s"],
              "io_floor"),
        floor("package floor: POST /pay, fixed packages 202/s", r["floor_pay"]["ok_per_s"],
              "floor_pay"),
        floor("package floor: GET, fixed packages 200/s", r["floor_get"]["ok_per_s"],
              "floor_get"),
        row("API alone: POST /pay accepted/s (wrk)", api["ok_per_s"], "api_alone"),
        f"{'  error rate / latency p50, p99 ms':<50}{api['error_rate']:>10.4f}"
        f"{api['latency_ms']['p50']:>9.1f}{api['latency_ms']['p99']:>9.1f}",
        row("GET /payments/{id} 200/s (wrk)", get["ok_per_s"], "get_payment"),
        f"{'fleet alone: backlog settled/s (full queue)':<50}"
        f"{drain['settled_per_s'] or 0:>10.1f}   {drain['backlog']} in {drain['seconds']} s"
        f" (messages consumed {drain['messages_consumed_s']} s)",
        f"{'search: predicted / best flat offered /s':<50}"
        f"{r['search']['predicted_per_s'] or 0:>10.1f}{r['search']['best_flat_per_s']:>9.0f}",
    ]
    for p in r["search"]["probes"]:
        lines.append(f"  probe {p['offered_per_s']:>5.0f}/s: {_run_line(p)}")
    for run in r["sustained"]:
        lines.append(f"  sustained {run['offered_per_s']:>5.0f}/s: {_run_line(run)}")
    lines += [
        row(f"sustained {s['open_loop']['sustain_seconds']:.0f} s, "
            f"{'flat' if chosen['flat'] else 'NOT flat: settled'} /s",
            chosen["offered_per_s"] if chosen["flat"] else chosen["settled_per_s"], "sustained"),
        row(f"p99 ms at half ({half['offered_per_s']:.0f}/s), from schedule",
            half["latency_ms"].get("p99"), "p99_ms_at_half", ratio=False),
        f"{'  p50 ms / 202 -> settled p50, p99 ms':<50}{half['latency_ms'].get('p50', 0):>10.1f}"
        f"{half['settle']['from_202_ms'].get('p50', 0):>9.1f}"
        f"{half['settle']['from_202_ms'].get('p99', 0):>9.1f}",
        row("CPU ms per settled (API + fleet + PostgreSQL)", r["ratios"]["cpu_ms_per_settled"],
            "cpu_ms_per_settled", ratio=False),
        "   " + ", ".join(f"{k} {v} ms" for k, v in chosen["cpu_ms_per_settled"].items()),
        f"{'  its package floor (ms, a lower bound)':<50}{floor_cpu['sum']:>10.2f}",
        "   " + ", ".join(f"{k} {v} ms" for k, v in floor_cpu.items() if k != "sum"),
        "",
        "CPU per phase: cores used (of 2), and CPU ms per request for ours:",
    ]
    for phase, usage in r["cpu_cores_used"].items():
        per = usage["cpu_ms_per_request"]
        parts = [f"{name} {cores}" + (f" ({per[name]} ms)" if name in per else "")
                 for name, cores in usage["cores"].items() if cores]
        lines.append(f"  {phase} [{usage['requests']}]: " + ", ".join(parts))
    return "\n".join(lines + profile_report(r.get("profiles", {})))


def _run_line(run: dict[str, Any]) -> str:
    return (f"{run['ok_per_s']:.0f} accepted/s, {run['settled_per_s']:.0f} settled/s, "
            f"errors {run['error_rate']:.3f}, backlog {run['backlog']['growth_per_s']:+.1f}/s "
            f"(end {run['backlog']['at_end']}), p99 {run['latency_ms'].get('p99')} ms "
            f"({run['latency_growth_ms_per_s']:+.0f} ms/s)"
            f" - {'flat' if run['flat'] else 'NOT flat'}")


def profile_report(profiles: dict[str, Any]) -> list[str]:
    """Where the API's request time went, and the fleet's busiest frames."""
    lines = []
    for name, profile in profiles.items():
        steps = profile.get("pay_steps")
        if name.endswith(("gunicorn", "floors")) and steps:  # the API and the package floors
            lines += ["", f"{name} profile (py-spy, {steps['samples']} samples in requests):"]
            if name.endswith("gunicorn"):
                lines += [f"  {pct:5.1f}%  {label}" for label, pct in steps["steps_pct"].items()]
            lines += [f"  {pct:5.1f}%  {label}" for label, pct in steps["leaf_pct"].items()]
            lines += ["  by package (self samples; a driver's waits on its server count as its):"]
            lines += [f"  {pct:5.1f}%  {package}"
                      for package, pct in profile["by_package_self_pct"][:10]]
        elif name.endswith("dramatiq"):
            lines += ["", f"{name} profile (py-spy, inclusive, app frames):"]
            lines += [f"  {pct:5.1f}%  {frame}" for frame, pct in profile["inclusive"]
                      if "(app/" in frame][:10]
    return lines


if __name__ == "__main__":
    main()
