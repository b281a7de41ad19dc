"""At most once under faults: the whole engine, load on it, and crashes and outages meanwhile.

    .venv/bin/python bench/faults.py [--payments 300] [--subscriptions 40] [--months 3]

Everything runs on servers of the bench's own, because it restarts them: a PostgreSQL
cluster (initdb in a temporary directory, pg_ctl on a free port, as user postgres), a
redis-server on a free port, the embedded Kafka broker and the SMTP sink on free ports, and
`python -m app.run` (what `make run` starts: API, worker fleet, scheduler and relay, each
restarted when it exits) with PAYMENT_LEASE_SECONDS=2. The machine's PostgreSQL and Redis
are never touched.

  1. setup: a tenant (the operator CLI), a monthly plan, a test clock with S customers on
     it, each subscribed (first payment settled) - part of them on the slow sandbox token;
  2. load, while faults are injected in turn every --fault-every seconds (SIGKILL of a
     worker process, of the whole worker fleet, of the scheduler; Redis killed and started
     again empty; PostgreSQL stopped and started): N one-time POST /pay (part of them on
     the slow token, whose answer comes seconds after the charge), and the test clock
     advanced month by month, M = S x months renewals. Requests that meet an outage are
     sent again with the same Idempotency-Key until answered;
  3. settle: no more faults; wait until no payment is pending, processing or unknown;
  4. check the sandbox ledger against the payments: double charges (a payment charged more
     than once), lost payments (accepted but never settled, or a ledger charge of no
     payment), charged-but-failed payments (`failed` with a charge in the ledger). All
     three must be 0, and every renewal done; the bench exits 1 otherwise.
Prints a summary and writes bench/results/faults.json. Bounded by --timeout (seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from procs import ROOT, Fleet, free_port, machine, wait_http
from sqlalchemy import Engine, create_engine, text

sys.path.insert(0, str(ROOT))  # tests/servers.py: the servers a test or bench may restart

from app.billing.periods import add_intervals
from app.events.embedded_broker import EmbeddedBroker
from tests.servers import Cluster, RedisServer, remove

RESULTS = ROOT / "bench" / "results" / "faults.json"
BIN = Path(sys.executable).parent
DATABASE = "subscription_engine"
CLOCK_START = datetime(2024, 1, 31, tzinfo=UTC)
UNSETTLED = ("pending", "processing", "unknown")
#: Answers that mean "not now": an outage (503), a key still in flight (409), rate limits.
RETRY_STATUSES = {409, 429, 500, 502, 503, 504}
FAULTS = ("worker process SIGKILL", "scheduler SIGKILL", "Redis restart (empty)",
          "worker fleet SIGKILL", "PostgreSQL restart")

_T0 = time.monotonic()


def say(message: str) -> None:
    """Progress on stderr, with seconds since the start."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payments", type=int, default=300, help="one-time payments (N)")
    parser.add_argument("--subscriptions", type=int, default=40, help="on the test clock")
    parser.add_argument("--months", type=int, default=3, help="clock advances, one month each")
    parser.add_argument("--slow-token", default="tok_slow_5", help="the slow sandbox token")
    parser.add_argument("--slow-share", type=float, default=0.2,
                        help="share of payments and subscriptions on the slow token")
    parser.add_argument("--lease", type=int, default=2, help="PAYMENT_LEASE_SECONDS")
    parser.add_argument("--load-seconds", type=float, default=60.0,
                        help="spread the one-time payments over this long")
    parser.add_argument("--fault-every", type=float, default=5.0, help="seconds between faults")
    parser.add_argument("--outage-seconds", type=float, default=3.0,
                        help="how long Redis and PostgreSQL stay down")
    parser.add_argument("--settle-seconds", type=float, default=240.0)
    parser.add_argument("--timeout", type=float, default=900.0, help="the whole run, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-dir", type=Path, help="keep the processes' logs here")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    random.seed(args.seed)
    deadline = time.monotonic() + args.timeout
    with tempfile.TemporaryDirectory(prefix="se-bench-faults-") as tmp:
        logs = args.log_dir or Path(tmp) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        servers = Servers(Path(tmp), logs)
        try:
            servers.start()
            results = Bench(args, servers, deadline).run()
        finally:
            say("stopping the engine and the bench's servers")
            servers.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    print(f"\nwritten to {args.out}")
    sys.exit(0 if results["zero_as_required"] and not results["renewals_missing"] else 1)


class Servers:
    """The bench's own PostgreSQL, Redis, Kafka broker and SMTP sink, and the engine on them."""

    def __init__(self, tmp: Path, logs: Path) -> None:
        self.tmp, self.logs = tmp, logs
        self.redis = RedisServer(tmp)
        self.kafka = EmbeddedBroker(port=free_port(), log=logs / "kafka.log")
        self.fleet = Fleet(logs)
        self.api_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.pg = Cluster.primary()  # initdb and start: last, so that `stop` always follows

    def env(self, lease: int) -> dict[str, str]:
        """`make run`'s environment, pointed at the bench's servers and ports."""
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),  # wsgi.py, for gunicorn run from the temporary directory
            "ENGINE_ENV": "development",
            "PORT": str(self.api_port),
            "DATABASE_URL": self.pg.url(DATABASE),
            "REDIS_URL": self.redis.url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap,
            "MAIL_PORT": str(self.sink_port),
            "PAYMENT_LEASE_SECONDS": str(lease),
            # A killed worker's messages come back after this (Dramatiq's default is 60 s).
            "DRAMATIQ_HEARTBEAT_TIMEOUT_MS": "15000",
        }

    def start(self) -> None:
        say(f"own PostgreSQL on :{self.pg.port}, Redis on :{self.redis.port}, "
            f"Kafka on :{self.kafka.port}")
        self.redis.start()
        self.kafka.start()
        self.sink_port = free_port()
        self.fleet.start("mail-sink", [sys.executable, "-m", "app.mail.sink", "--port",
                                       str(self.sink_port), "--dir", str(self.tmp / "mail")],
                         dict(os.environ), ROOT)

    def start_engine(self, lease: int) -> None:
        say(f"starting `python -m app.run` (API on :{self.api_port})")
        self.fleet.start("engine", [sys.executable, "-m", "app.run"], self.env(lease), self.tmp)
        wait_http(f"{self.base_url}/readyz", self.fleet, timeout=180)

    def stop(self) -> None:
        self.fleet.stop_all()
        self.kafka.stop()
        self.redis.stop()
        remove(self.pg)

    def engine_child(self, word: str) -> int | None:
        """The pid of the engine's child process whose command line has `word`."""
        engine = self.fleet.running["engine"].pid
        return next((pid for pid, argv in children(engine) if word in argv), None)


def children(parent: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live children of `parent` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
            argv = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if int(ppid) == parent and state not in ("Z", "X"):
            found.append((int(stat.parent.name), argv))
    return found


class Api:
    """HTTP calls of one tenant that ride out outages: 503s, 409s and refused connections
    are sent again, with the same Idempotency-Key, until answered or the deadline."""

    def __init__(self, base_url: str, key: str, deadline: float) -> None:
        self.base_url, self.deadline = base_url, deadline
        self.local = threading.local()
        self.key = key
        self.retried: Counter[str] = Counter()

    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
            self.local.session.headers["Authorization"] = f"Bearer {self.key}"
        session: requests.Session = self.local.session
        return session

    def call(self, method: str, path: str, body: Any = None, ok: int = 200,
             idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex} if body else {}
        while True:
            try:
                response = self.session().request(method, self.base_url + path, json=body,
                                                  headers=headers, timeout=15)
            except requests.RequestException as exc:
                self.retried[type(exc).__name__] += 1
            else:
                if response.status_code == ok:
                    data: dict[str, Any] = response.json()
                    return data
                if response.status_code not in RETRY_STATUSES:
                    raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
                self.retried[str(response.status_code)] += 1
            if time.monotonic() > self.deadline:
                raise TimeoutError(f"{method} {path}: no answer before the deadline")
            time.sleep(0.5)


class Bench:
    """One run: setup, load under faults, settle, checks."""

    def __init__(self, args: argparse.Namespace, servers: Servers, deadline: float) -> None:
        self.args, self.servers, self.deadline = args, servers, deadline
        self.load_deadline = deadline - args.settle_seconds  # settling keeps its own time
        self.faults: list[dict[str, Any]] = []
        self.accepted: list[str] = []
        self.load_done = threading.Event()
        self.slow_available = True
        self.advance_seconds: list[float] = []

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.servers.start_engine(self.args.lease)
        self.db: Engine = create_engine(self.servers.pg.url(DATABASE), pool_pre_ping=True)
        self.api = Api(self.servers.base_url, self.tenant(), self.load_deadline)
        subscriptions = self.setup()
        load_started = time.monotonic()
        injector = threading.Thread(target=self.inject_faults, name="faults")
        injector.start()
        load_errors = []
        with ThreadPoolExecutor(2) as pool:
            pays = pool.submit(self.pay_all)
            advances = pool.submit(self.advance_clock)
            for part in (pays, advances):
                try:
                    part.result()
                except (TimeoutError, RuntimeError) as exc:  # reported; the checks still run
                    load_errors.append(repr(exc))
                    say(f"load: {exc!r}")
        self.load_done.set()
        injector.join()
        load_seconds = time.monotonic() - load_started
        say(f"load done in {load_seconds:.0f} s with {len(self.faults)} faults; settling")
        settle_seconds = self.settle()
        results = {
            "machine": {**machine(),
                        "loadavg_at_end": [round(v, 2) for v in os.getloadavg()]},
            "settings": {k: str(v) if isinstance(v, Path) else v
                         for k, v in vars(self.args).items()},
            "slow_token_available": self.slow_available,
            "load_seconds": round(load_seconds, 1),
            "clock_advance_seconds": self.advance_seconds,
            "load_errors": load_errors,
            "settle_seconds": settle_seconds,
            "faults_injected": dict(Counter(f["fault"] for f in self.faults)),
            "faults_total": len(self.faults),
            "fault_log": self.faults,
            "requests_sent_again": dict(self.api.retried),
            **self.check(subscriptions),
        }
        results["bench_seconds"] = round(time.monotonic() - started, 1)
        self.db.dispose()
        return results

    # --- setup -------------------------------------------------------------------------

    def tenant(self) -> str:
        """A tenant made with the operator CLI, as an operator does; its test key."""
        done = subprocess.run(
            [str(BIN / "flask"), "--app", "wsgi", "tenants", "create", "faults-bench",
             "--rate-limit", "100000/second", "--json"],
            env=self.servers.env(self.args.lease), cwd=ROOT, capture_output=True, text=True,
            timeout=120, check=True,
        )
        created = json.loads(done.stdout.strip().splitlines()[-1])
        self.tenant_id: str = created["tenant_id"]
        return str(created["test_key"])

    def customer(self, token: str, clock_id: str | None = None) -> tuple[str, str]:
        body: dict[str, Any] = {"email": "faults@example.com"}
        if clock_id:
            body["test_clock_id"] = clock_id
        customer = self.api.call("POST", "/customers", body, ok=201)["id"]
        method = self.api.call("POST", f"/customers/{customer}/payment-methods",
                               {"provider": "sandbox", "token": token}, ok=201)["id"]
        return customer, method

    def slow_token(self) -> str:
        """The slow token, or tok_ok when this sandbox does not know it yet (said in results)."""
        try:
            self.customer(self.args.slow_token)
        except RuntimeError as exc:
            say(f"the sandbox refuses {self.args.slow_token}; running all on tok_ok"
                f" ({str(exc)[:120]})")
            self.slow_available = False
            return "tok_ok"
        return str(self.args.slow_token)

    def setup(self) -> list[str]:
        """Plan, clock, S subscribed customers (each first payment settled); their ids."""
        slow = self.slow_token()
        self.methods = {"tok_ok": self.customer("tok_ok"), slow: self.customer(slow)}
        plan = self.api.call("POST", "/plans", {
            "code": "monthly", "name": "Monthly", "amount": 1000, "currency": "usd",
            "interval": "month", "interval_count": 1, "trial_days": 0}, ok=201)["id"]
        self.clock_id = self.api.call("POST", "/test-clocks",
                                      {"frozen_time": CLOCK_START.isoformat()}, ok=201)["id"]
        subscriptions = []
        for i in range(self.args.subscriptions):
            token = slow if i < self.args.subscriptions * self.args.slow_share else "tok_ok"
            customer, method = self.customer(token, self.clock_id)
            subscriptions.append(self.api.call("POST", "/subscriptions", {
                "customer_id": customer, "plan_id": plan, "payment_method_id": method},
                ok=201)["id"])
        say(f"{len(subscriptions)} subscriptions on clock {self.clock_id}; waiting for them")
        self.wait("every subscription active", lambda: self.scalar(
            "SELECT count(*) FROM subscriptions WHERE tenant_id = :t AND status = 'active'"
        ) == len(subscriptions), 180)
        return subscriptions

    # --- load ----------------------------------------------------------------------------

    def pay_all(self) -> None:
        """N one-time payments, evenly spread over --load-seconds, the slow share among them."""
        tokens = list(self.methods)
        pace = self.args.load_seconds / max(self.args.payments, 1)
        start = time.monotonic()

        def pay(i: int) -> None:
            time.sleep(max(0.0, start + i * pace - time.monotonic()))
            slow = i % round(1 / self.args.slow_share) == 0 if self.args.slow_share else False
            customer, method = self.methods[tokens[-1] if slow else tokens[0]]
            body = {"amount": 1999, "currency": "usd", "customer_id": customer,
                    "payment_method_id": method}
            payment = self.api.call("POST", "/pay", body, ok=202, idempotency_key=uuid.uuid4().hex)
            self.accepted.append(payment["id"])

        with ThreadPoolExecutor(4) as pool:
            for done in [pool.submit(pay, i) for i in range(self.args.payments)]:
                done.result()
        say(f"{len(self.accepted)} payments accepted")

    def advance_clock(self) -> None:
        """Advance the test clock one month at a time, spread over the load like the
        payments, each once the clock is ready again."""
        seconds = self.advance_seconds
        pace = self.args.load_seconds / (self.args.months + 1)
        start = time.monotonic()
        for month in range(1, self.args.months + 1):
            time.sleep(max(0.0, start + month * pace - time.monotonic()))
            started = time.monotonic()
            until = add_intervals(CLOCK_START, "month", 1, month)
            self.api.call("POST", f"/test-clocks/{self.clock_id}/advance",
                          {"frozen_time": until.isoformat()}, ok=202)
            self.wait(f"clock advanced to month {month}", lambda: self.api.call(
                "GET", f"/test-clocks/{self.clock_id}")["status"] == "ready",
                self.load_deadline - time.monotonic())
            seconds.append(round(time.monotonic() - started, 1))
        say(f"clock advanced {self.args.months} months ({seconds} s each)")

    # --- faults --------------------------------------------------------------------------

    def inject_faults(self) -> None:
        """One fault every --fault-every seconds, in turn, until the load is done."""
        turn = 0
        while not self.load_done.wait(self.args.fault_every):
            fault = FAULTS[turn % len(FAULTS)]
            turn += 1
            at = round(time.monotonic() - _T0, 1)
            try:
                if self.inject(fault):
                    self.faults.append({"at_s": at, "fault": fault})
                    say(f"fault: {fault}")
            except Exception as exc:  # noqa: BLE001 - a failed injection is reported, not fatal
                self.faults.append({"at_s": at, "fault": fault, "error": repr(exc)})
                say(f"fault {fault} failed: {exc!r}")

    def inject(self, fault: str) -> bool:
        """Inject one fault; False when its target was not running (being restarted)."""
        servers, outage = self.servers, self.args.outage_seconds
        if fault == "Redis restart (empty)":
            servers.redis.stop()
            time.sleep(outage)
            servers.redis.start()
            return True
        if fault == "PostgreSQL restart":
            servers.pg.stop(mode="immediate" if len(self.faults) % 2 else "fast")
            time.sleep(outage)
            servers.pg.start()
            return True
        word = "app.scheduler" if fault == "scheduler SIGKILL" else "dramatiq"
        target = servers.engine_child(word)
        if target is None:
            return False
        victims = [pid for pid, _ in children(target)]
        if fault == "worker process SIGKILL":
            if not victims:
                return False
            victims = [random.choice(victims)]
        elif fault == "worker fleet SIGKILL":
            victims.append(target)
        else:
            victims = [target]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return True

    # --- settle and check ----------------------------------------------------------------

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.db.connect() as connection:
            return connection.execute(text(sql), {"t": self.tenant_id, **params}).scalar()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.db.connect() as connection:
            return list(connection.execute(text(sql), {"t": self.tenant_id, **params}).all())

    def wait(self, what: str, done: Callable[[], bool], limit: float) -> None:
        deadline = min(self.deadline, time.monotonic() + limit)
        while not done():
            self.servers.fleet.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {limit:.0f} s")
            time.sleep(0.5)

    def settle(self) -> float:
        """Wait until no payment is unsettled (or the settle limit); the seconds it took."""
        started = time.monotonic()
        try:
            self.wait("every payment settled", lambda: self.scalar(
                "SELECT count(*) FROM payments WHERE tenant_id = :t AND status = ANY(:s)",
                s=list(UNSETTLED)) == 0, self.args.settle_seconds)
        except TimeoutError as exc:
            say(str(exc))
        return round(time.monotonic() - started, 1)

    def check(self, subscriptions: list[str]) -> dict[str, Any]:
        """Payments against the sandbox ledger: what was done, and what went wrong."""
        payments = {r.id: r for r in self.rows(
            "SELECT p.id, p.status, p.subscription_id, count(c.id) AS charges"
            " FROM payments p LEFT JOIN sandbox_charges c ON c.payment_id = p.id"
            " WHERE p.tenant_id = :t GROUP BY p.id")}
        orphan_charges = [r.id for r in self.rows(
            "SELECT c.id FROM sandbox_charges c LEFT JOIN payments p ON p.id = c.payment_id"
            " WHERE c.tenant_id = :t AND p.id IS NULL")]
        one_time = [payments[i] for i in self.accepted if i in payments]
        renewal = [p for p in payments.values() if p.subscription_id is not None]
        expected_renewals = len(subscriptions) * self.args.months
        renewals_done = sum(p.status == "succeeded" for p in renewal) - len(subscriptions)
        double = sorted(p.id for p in payments.values() if p.charges > 1)
        charged_failed = sorted(p.id for p in payments.values()
                                if p.status == "failed" and p.charges > 0)
        lost = sorted({*(i for i in self.accepted if i not in payments),
                       *(p.id for p in payments.values() if p.status in UNSETTLED)})
        lost_count = len(lost) + len(orphan_charges)
        # The API's view of the ledger for every payment found wrong: it must agree.
        ledger = {i: len(self.api.call("GET", f"/sandbox/charges?payment_id={i}")["data"])
                  for i in sorted({*double, *charged_failed})}
        ends = Counter(row.current_period_end.isoformat() for row in self.rows(
            "SELECT current_period_end FROM subscriptions WHERE tenant_id = :t"
            " AND id = ANY(:ids)", ids=subscriptions))
        return {
            "payments_accepted": len(self.accepted),
            "payments_statuses": dict(Counter(p.status for p in one_time)),
            "payments_succeeded": sum(p.status == "succeeded" for p in one_time),
            "renewals_expected": expected_renewals,
            "renewals_done": renewals_done,
            # A clock left `advancing` (its advance message lost, nothing drives it again)
            # charges no later period: missing renewals, not lost payments.
            "renewals_missing": max(0, expected_renewals - renewals_done),
            "clock_status": self.scalar("SELECT status FROM test_clocks WHERE id = :c",
                                        c=self.clock_id),
            "http_500_answers": self.api.retried["500"],
            "renewal_statuses": dict(Counter(p.status for p in renewal)),
            "subscription_statuses": dict(Counter(r.status for r in self.rows(
                "SELECT status FROM subscriptions WHERE tenant_id = :t"))),
            "subscription_period_ends": dict(ends),
            "succeeded_without_charge": sum(p.status == "succeeded" and p.charges == 0
                                            for p in payments.values()),
            "double_charges": len(double),
            "lost_payments": lost_count,
            "charged_but_failed": len(charged_failed),
            "examples": {"double_charges": double[:10], "charged_but_failed": charged_failed[:10],
                         "lost": lost[:10], "ledger_charges_of_no_payment": orphan_charges[:10]},
            "sandbox_api_charges_of_those": ledger,
            "zero_as_required": not (double or charged_failed or lost_count),
        }


def report(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "",
        f"faults bench - {m['date']} - commit {m['git_commit'][:10]} - {r['bench_seconds']} s"
        f" - load {' '.join(map(str, m['loadavg_at_end']))} at end",
        f"slow token {r['settings']['slow_token']}: "
        f"{'used' if r['slow_token_available'] else 'NOT AVAILABLE (tok_ok instead)'}; "
        f"lease {r['settings']['lease']} s",
        f"payments accepted / succeeded        {r['payments_accepted']:>6} / "
        f"{r['payments_succeeded']}   {r['payments_statuses']}",
        f"renewals done / expected             {r['renewals_done']:>6} / "
        f"{r['renewals_expected']}   {r['renewal_statuses']}, clock {r['clock_status']}",
        f"load errors                          {r['load_errors']}",
        f"faults injected                      {r['faults_total']:>6}   {r['faults_injected']}",
        f"requests sent again                  {r['requests_sent_again']}",
        f"double charges                       {r['double_charges']:>6}",
        f"lost payments                        {r['lost_payments']:>6}",
        f"charged-but-failed payments          {r['charged_but_failed']:>6}",
        f"succeeded without a charge           {r['succeeded_without_charge']:>6}",
        "verdict: " + ("0 / 0 / 0 as required" if r["zero_as_required"]
                       else f"NOT ZERO, e.g. {r['examples']}"),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
