"""Renewal throughput: N subscriptions due at once, renewed end to end by the scheduler and a
worker fleet, as a ratio to a renewal-shaped pgbench transaction (the database's ceiling), and
the scanner's claim rate against a bare SKIP LOCKED loop.

    .venv/bin/python bench/renewals.py [--n 30000] [--processes 2] [--threads 8] [--profile]

The default N (30,000) takes about two minutes on the 2-core machine; the results file holds
a run with --n 100000 (about seven minutes). The end-to-end phase is bounded by --timeout.

Runs on a database (`se_bench_renewals`, recreated, removed afterwards unless --keep) and a
Redis namespace (`renewals-bench`) of its own. Phases:
  1. seed with set-based SQL: a tenant, N customers with a sandbox `tok_ok` payment method,
     a monthly plan and N active subscriptions whose period ended in the last hour, anchored
     so that exactly one renewal is due for each;
  2. ceiling: `WITH c AS (SELECT ... FOR UPDATE SKIP LOCKED LIMIT b) UPDATE ... RETURNING`
     in a loop over a copy of the subscriptions table (same rows, same indexes), no enqueue;
  3. scanner: the scheduler's own renewal job (renewals.claim_due in batches, real enqueue to
     Redis) over all N, timed; then the claims are undone (queue emptied, next_event_at back);
     2 and 3 alternate --claim-runs times (3): the medians and their ratio are reported;
  4. pgbench ceiling (issue 11): what one renewal writes, as one pgbench transaction (an
     UPDATE of a subscription by id, an INSERT of its cycle payment and one of an outbox
     event), 8 clients for --pgbench-seconds, on copies of those tables (same indexes); once
     more after phase 6: the ratio is to the mean, a spread over 20% is flagged;
  5. end to end: W `dramatiq app.jobs` processes, then `python -m app.scheduler`; the database
     is polled every 0.5 s until N renewal payments have succeeded; CPU per process
     (bench/procs.py) and each worker child's peak RSS (VmHWM);
  6. checks: every subscription advanced one period with its succeeded payment; exactly N
     renewal payments, sandbox charges, attempts and 3N outbox events (payment.created,
     payment.succeeded, subscription.renewed), none twice.
Prints a table and writes bench/results/renewals.json. Targets: end-to-end renewals/s >= 0.4
of the pgbench TPS (issue 11), >= 20,000 claims/s, worker peak RSS <= 150 MB.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pgbench
import procs
import redis
import spy
from procs import PG, REDIS, ROOT, Fleet, cpu_snapshot, cpu_usage, machine, say, wait_quiet
from sqlalchemy import Engine, create_engine, text

from app.billing import periods
from app.bootstrap import build
from app.config import Config
from app.models.database import drop_database, ensure_database, migrate
from app.scheduler.runner import renewal_job
from app.services.tenants import create_tenant

RESULTS = ROOT / "bench" / "results" / "renewals.json"
BIN = Path(sys.executable).parent
DATABASE = "se_bench_renewals"
#: Steps of a renewal message in the workers' profile (frames, inside renewals.run_due).
RENEWAL_STEPS = {
    "round: lock, renew, create + claim payments, commit": "_round (app/services/renewals.py",
    "  apply_due (period, payment, payment.created)": "apply_due (",
    "  claim_held (attempts)": "claim_held (",
    "provider calls (sandbox ledger, a transaction each)": "_call (app/services/charge.py",
    "settle: lock, record outcomes + events, commit": "settle (app/services/charge.py",
    "ORM flush (all steps)": "Session._flush (",
    "outbox.record (render)": "record (app/events/outbox.py",
}
#: Where the stacks end: waiting on a server (or for the CPU) rather than running Python.
RENEWAL_LEAVES: dict[str, tuple[str, ...]] = {
    "in PostgreSQL calls (waiting or runnable)": ("do_execute (", "do_commit (", "execute_batch ("),
}
#: Not under "se-bench-": bench/pay.py clears "se-bench-*" when it starts and ends.
NAMESPACE = "renewals-bench"
PLAN_AMOUNT = 1999
TARGETS = {"ratio_to_pgbench": 0.4, "claims_per_s": 20_000.0, "worker_peak_rss_mb": 150.0}

procs.OWN_DATABASE = DATABASE  # CPU accounting: tell this bench's backends from the others'

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=30_000,
                        help="subscriptions due (the issue's figure is 100,000: about 2 min"
                        " on an idle 2-core machine)")
    parser.add_argument("--processes", type=int, default=2, help="dramatiq worker processes")
    parser.add_argument("--threads", type=int, default=8, help="dramatiq threads each")
    parser.add_argument("--batch", type=int, default=None, help="RENEWAL_BATCH_SIZE")
    parser.add_argument("--message-size", type=int, default=None, help="RENEWAL_MESSAGE_SIZE")
    parser.add_argument("--db-pool-size", type=int, default=None, help="DB_POOL_SIZE")
    parser.add_argument("--claim-runs", type=int, default=3, help="ceiling/scanner runs each")
    parser.add_argument("--pgbench-clients", type=int, default=8)
    parser.add_argument("--pgbench-seconds", type=int, default=10, help="each of two runs")
    parser.add_argument("--timeout", type=float, default=900.0, help="end-to-end limit, s")
    parser.add_argument("--profile", action="store_true", help="py-spy the workers meanwhile")
    parser.add_argument("--profile-seconds", type=int, default=15)
    parser.add_argument("--profile-gil", action="store_true",
                        help="sample only threads holding the GIL (where the CPU goes)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to this long for the machine to be >= 80%% idle")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--log-dir", type=Path, help="keep the processes' logs here")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


def bench_config(args: argparse.Namespace) -> Config:
    """The engine's defaults, on this bench's database and namespace, with the options given."""
    base = Config.from_env(
        {}, database_url=f"{PG}/{DATABASE}", redis_url=REDIS, redis_namespace=NAMESPACE,
        engine_env="development",
    )
    overrides = {
        "renewal_batch_size": args.batch,
        "renewal_message_size": args.message_size,
        "db_pool_size": args.db_pool_size,
    }
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def main() -> None:
    args = parse_args()
    config = bench_config(args)
    idle_at_start = wait_quiet(args.wait_quiet)
    started = time.monotonic()
    load_at_start = os.getloadavg()
    say(f"recreating database {DATABASE}; load average {load_at_start[0]:.2f}")
    drop_database(config.database_url)
    clear(config)
    ensure_database(config.database_url)
    migrate(config.database_url)
    engine = create_engine(config.database_url, pool_size=2)
    results: dict[str, Any] = {"machine": machine(), "settings": settings(args, config)}
    try:
        with tempfile.TemporaryDirectory(prefix="se-bench-renewals-") as tmp:
            logs = args.log_dir or Path(tmp)
            logs.mkdir(parents=True, exist_ok=True)
            results.update(Bench(args, config, engine, logs).run())
    finally:
        engine.dispose()
        clear(config)
        if not args.keep:
            drop_database(config.database_url)
    results["machine"]["idle_cores_at_start"] = idle_at_start
    results["machine"]["loadavg_at_start"] = [round(v, 2) for v in load_at_start]
    results["machine"]["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    results["bench_seconds"] = round(time.monotonic() - started, 1)
    results["targets"] = targets(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    print(f"\nwritten to {args.out}")


def settings(args: argparse.Namespace, config: Config) -> dict[str, Any]:
    return {
        "n": args.n,
        "dramatiq": {
            "processes": args.processes,
            "threads": args.threads,
            "worker_timeout_ms": 100,
        },
        "renewal_batch_size": config.renewal_batch_size,
        "renewal_message_size": config.renewal_message_size,
        "renewal_interval_seconds": config.renewal_interval_seconds,
        "db_pool_size": config.db_pool_size,
        "provider": "sandbox tok_ok (its ledger row in its own transaction per charge)",
        "not_running": "API, outbox relay, Kafka",
    }


class Bench:
    """One run of every phase; each method is one phase and returns what it measured."""

    def __init__(self, args: argparse.Namespace, config: Config, engine: Engine, tmp: Path):
        self.args, self.config, self.engine, self.tmp = args, config, engine, tmp
        self.n = args.n
        self.fleet = Fleet(tmp)
        self.loads: list[float] = []  # 1-minute load average while the end-to-end phase ran

    def run(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seed": self.seed(), **self.claims()}
        first = self.pgbench("first")
        try:
            out["end_to_end"] = self.end_to_end()
        finally:
            say("stopping processes")
            self.fleet.stop_all()
        out["checks"] = self.checks()
        out["pgbench"] = both_pgbench(first, self.pgbench("last"))
        renewals = out["end_to_end"]["renewals_per_s"]
        out["ratio_to_pgbench"] = round(renewals / out["pgbench"]["tps"], 3)
        return out

    # -- phase 1 ------------------------------------------------------------------------

    def seed(self) -> dict[str, Any]:
        """Tenant, customers, methods, plan and N subscriptions due, in a few statements."""
        say(f"seeding {self.n} subscriptions")
        started = time.monotonic()
        with build(self.config).uow() as uow:
            tenant_id = create_tenant(uow, "bench-renewals").tenant_id
            uow.commit()
        now = datetime.now(UTC)
        # Periods end 2 min .. 62 min ago (spread like a real book of subscriptions), anchored
        # a month before; the next boundary is a month ahead: exactly one renewal due each.
        with self.engine.begin() as c:
            c.execute(text("SET LOCAL TimeZone = 'UTC'"))  # month arithmetic in UTC, as ours
            params = {"t": tenant_id, "n": self.n, "now": now, "amount": PLAN_AMOUNT}
            for sql in SEED_SQL:
                c.execute(text(sql), params)
            c.execute(text("ANALYZE"))
        self.vacuum("subscriptions", "customers", "payment_methods")
        self.check_one_due(now)
        return {"seconds": round(time.monotonic() - started, 1), "tenant_id": tenant_id}

    def check_one_due(self, now: datetime) -> None:
        """Every (anchor, period end) seeded: the end is what our calendar says, in the past,
        and the period after it ends in the future (one renewal, not two)."""
        with self.engine.connect() as c:
            rows = c.execute(
                text(
                    "SELECT DISTINCT billing_anchor, current_period_start, current_period_end, "
                    "next_event_at FROM subscriptions"
                )
            ).all()
            due = c.scalar(text("SELECT count(*) FROM subscriptions WHERE next_event_at <= now()"))
        for anchor, start, end, next_at in rows:
            assert start == anchor and next_at == end, (anchor, start, end, next_at)
            assert periods.add_intervals(anchor, "month", 1, 1) == end < now, (anchor, end)
            assert periods.add_intervals(anchor, "month", 1, 2) > now + timedelta(days=20)
        assert due == self.n, f"{due} of {self.n} subscriptions are due"

    # -- phase 2 ------------------------------------------------------------------------

    def claims(self) -> dict[str, Any]:
        """Ceiling and scanner in turn, `--claim-runs` times each (the machine's load varies
        from second to second); the medians and their ratio are reported."""
        with self.engine.begin() as c:
            c.execute(text("CREATE TABLE claim_ceiling (LIKE subscriptions INCLUDING ALL)"))
            c.execute(text("INSERT INTO claim_ceiling SELECT * FROM subscriptions"))
        self.vacuum("claim_ceiling")
        runs = [(self.ceiling(), self.scanner()) for _ in range(self.args.claim_runs)]
        with self.engine.begin() as c:
            c.execute(text("DROP TABLE claim_ceiling"))
        ceiling = median_run([c for c, _ in runs])
        scanner = median_run([s for _, s in runs])
        return {
            "ceiling": ceiling,
            "scanner": scanner,
            "ratio_to_ceiling": round(scanner["claims_per_s"] / ceiling["claims_per_s"], 3),
        }

    def ceiling(self) -> dict[str, Any]:
        """A bare claim-and-update loop, same batch size and lease, on a copy of the rows."""
        say("ceiling: bare SKIP LOCKED claim-and-update loop")
        batch, claimed, rounds = self.config.renewal_batch_size, 0, 0
        lease = self.config.subscription_lease_seconds
        before, started = cpu_snapshot(), time.monotonic()
        with self.engine.connect() as c:
            while True:
                with c.begin():
                    got = len(c.execute(text(CEILING_SQL), {"b": batch, "lease": lease}).all())
                claimed, rounds = claimed + got, rounds + 1
                if got < batch:
                    break
        seconds = time.monotonic() - started
        cpu = cpu_usage(before, cpu_snapshot(), {}, {os.getpid(): "bench (claim loop)"})
        assert claimed == self.n, f"ceiling claimed {claimed} of {self.n}"
        self.unclaim("claim_ceiling")
        return {
            "claimed": claimed,
            "batches": rounds,
            "seconds": round(seconds, 3),
            "claims_per_s": round(claimed / seconds),
            "cpu": cpu,
        }

    # -- phase 3 ------------------------------------------------------------------------

    def scanner(self) -> dict[str, Any]:
        """The scheduler's renewal job itself, in process: claim_due batches, real enqueue."""
        container = build(self.config)
        container.broker  # noqa: B018 - connect before the clock starts
        client = redis.Redis.from_url(self.config.redis_url)
        queue = f"{self.config.redis_namespace}-dramatiq:default"
        say("scanner: renewals.claim_due over every due subscription")
        before, started = cpu_snapshot(), time.monotonic()
        renewal_job(container)
        seconds = time.monotonic() - started
        cpu = cpu_usage(before, cpu_snapshot(), {}, {os.getpid(): "bench (scheduler job)"})
        messages = client.llen(queue)
        due = self.scalar("SELECT count(*) FROM subscriptions WHERE next_event_at <= now()")
        expected = math.ceil(self.n / self.config.renewal_message_size)
        assert due == 0 and messages == expected, (due, messages, expected)
        # Undo the claims: the next run, and the end-to-end phase, start from the same state.
        clear(self.config)
        self.unclaim("subscriptions")
        container.engine.dispose()
        client.close()
        return {
            "claimed": self.n,
            "messages_enqueued": messages,
            "seconds": round(seconds, 3),
            "claims_per_s": round(self.n / seconds),
            "cpu": cpu,
        }

    def unclaim(self, table: str) -> None:
        """Every row due again, as seeded, without the dead tuples the claims left."""
        with self.engine.begin() as c:
            c.execute(text(f"UPDATE {table} SET next_event_at = current_period_end"))  # noqa: S608
        self.vacuum(table)

    # -- phase 4 ------------------------------------------------------------------------

    def pgbench(self, which: str) -> dict[str, Any]:
        """The renewal-shaped transaction under pgbench, on copies of the tables it writes."""
        with self.engine.begin() as c:
            for table, source, copy_rows in PGBENCH_TABLES:
                c.execute(text(f"CREATE TABLE {table} (LIKE {source} INCLUDING ALL)"))
                if copy_rows:
                    c.execute(text(f"INSERT INTO {table} SELECT * FROM {source}"))  # noqa: S608
            tenant = c.scalar(text("SELECT tenant_id FROM plans WHERE id = 'plan_bench'"))
        self.vacuum(*(table for table, _, _ in PGBENCH_TABLES))
        clients, seconds = self.args.pgbench_clients, self.args.pgbench_seconds
        say(f"{which} pgbench ceiling: UPDATE + 2 INSERTs, {clients} clients, {seconds} s")
        script = PGBENCH_SCRIPT.format(n=self.n, tenant=tenant, amount=PLAN_AMOUNT)
        result = pgbench.run(self.config.database_url, script, clients=clients, seconds=seconds)
        with self.engine.begin() as c:
            c.execute(text("DROP TABLE " + ", ".join(t for t, _, _ in PGBENCH_TABLES)))
        say(f"pgbench {result['tps']:.0f} TPS")
        return result

    # -- phase 5 ------------------------------------------------------------------------

    def end_to_end(self) -> dict[str, Any]:
        """Workers up first, then the scheduler; poll until every subscription is renewed."""
        env = {**os.environ, **self.config.to_env(), "dramatiq_worker_timeout": "100"}
        self.fleet.start(
            "dramatiq",
            [
                str(BIN / "dramatiq"),
                "app.jobs",
                "--processes",
                str(self.args.processes),
                "--threads",
                str(self.args.threads),
            ],
            env,
            ROOT,
        )
        self.wait_workers_ready()
        say(f"end to end: scheduler started; {self.n} renewals to go")
        before, started = cpu_snapshot(), time.monotonic()
        self.fleet.start("scheduler", [sys.executable, "-m", "app.scheduler"], env, ROOT)
        progress, peaks, spied = self.poll(started)
        seconds = time.monotonic() - started
        cpu = cpu_usage(before, cpu_snapshot(), self.fleet.pgids(), {os.getpid(): "bench (poll)"})
        peaks = merge_peaks(peaks, self.worker_memory())
        # After the clock stopped: py-spy's wrap-up took seconds more under load.
        self.profile_result = self.finish_profile(spied)
        renewed = progress[-1][1]
        return {
            "renewed": renewed,
            "complete": renewed == self.n,
            "seconds": round(seconds, 2),
            "renewals_per_s": round(renewed / seconds, 1),
            "steady_renewals_per_s": steady_rate(progress),
            "first_renewal_after_s": next((t for t, k in progress if k), None),
            "longest_stall_s": longest_stall(progress),
            "loadavg_1m_during": {"mean": round(sum(self.loads) / len(self.loads), 2),
                                  "max": round(max(self.loads), 2)},
            "worker_log_errors": self.log_errors("dramatiq"),
            "worker_peak_rss_mb": {str(pid): mb for pid, mb in peaks.items()},
            "worker_peak_rss_mb_max": max(peaks.values(), default=None),
            "cpu": cpu,
            "cpu_ms_per_renewal": procs.cpu_ms_per(cpu, renewed, skip=("steal (hypervisor)",)),
            "progress": [(round(t, 1), k) for t, k in progress[:: max(1, len(progress) // 60)]],
            **({"profile": self.profile_result} if self.args.profile else {}),
        }

    def log_errors(self, name: str) -> int:
        """ERROR lines (unhandled exceptions, given-up retries) in a process's log."""
        log = (self.tmp / f"{name}.log").read_text(errors="replace")
        return sum('"level": "ERROR"' in line for line in log.splitlines())

    def wait_workers_ready(self, timeout: float = 90.0) -> None:
        log = self.tmp / "dramatiq.log"
        deadline = time.monotonic() + timeout
        while log.read_text(errors="replace").count("ready for action") < self.args.processes:
            self.fleet.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready in {timeout}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def poll(self, started: float) -> tuple[list[tuple[float, int]], dict[int, float],
                                            tuple[subprocess.Popen[bytes], Path] | None]:
        """(seconds, renewed so far) every 0.5 s until all N are renewed or the time is up;
        the workers' peak RSS, and the profiler if one was started."""
        progress: list[tuple[float, int]] = []
        peaks: dict[int, float] = {}
        spied: tuple[subprocess.Popen[bytes], Path] | None = None
        while True:
            renewed = self.renewed()
            elapsed = time.monotonic() - started
            progress.append((elapsed, renewed))
            self.loads.append(os.getloadavg()[0])
            peaks = merge_peaks(peaks, self.worker_memory())
            if renewed >= self.n or elapsed > self.args.timeout:
                break
            if self.args.profile and spied is None and renewed > self.n // 20:
                spied = self.start_profile()
            if len(progress) % 20 == 0:
                say(f"  {renewed} renewed after {elapsed:.0f} s")
            self.fleet.check_alive()
            time.sleep(0.5)
        return progress, peaks, spied

    def renewed(self) -> int:
        """Renewal payments that succeeded (cheap to poll; `checks` joins the subscriptions)."""
        return self.scalar(
            "SELECT count(*) FROM payments WHERE purpose = 'cycle' AND status = 'succeeded'"
        )

    def worker_memory(self) -> dict[int, float]:
        """VmHWM (peak RSS) in MB of each worker child of the dramatiq master."""
        master = self.fleet.running.get("dramatiq")
        return {} if master is None else procs.peak_rss_mb(procs.children(master.pid))

    def start_profile(self) -> tuple[subprocess.Popen[bytes], Path]:
        master = self.fleet.running["dramatiq"]
        out = self.args.out.parent / "renewals-profile-workers.txt"
        say(f"  py-spy on the workers for {self.args.profile_seconds} s")
        return spy.record(master.pid, self.args.profile_seconds, out,
                          gil=self.args.profile_gil), out

    def finish_profile(self, spied: tuple[subprocess.Popen[bytes], Path] | None) -> Any:
        if spied is None:
            return None
        process, out = spied
        process.wait(timeout=self.args.profile_seconds + 60)
        if not out.exists():
            return None
        summary = spy.summarize(out, top=60)
        app_frames = [f for f in summary["inclusive"] if "(app/" in f[0]]
        return {
            "raw": str(out),
            "renewal_steps": spy.steps(out, "run_due (", RENEWAL_STEPS, RENEWAL_LEAVES),
            "by_package_self_pct": spy.by_package(out)[:15],
            "app_inclusive_pct": app_frames[:20],
            "self_pct": summary["self"][:20],
        }

    # -- phase 6 ------------------------------------------------------------------------

    def checks(self) -> dict[str, Any]:
        """Everything written once per subscription, nothing twice."""
        counts = {name: self.scalar(sql) for name, sql in CHECKS.items()}
        n = self.n
        expected = {name: (0 if name.startswith("duplicate") else n) for name in CHECKS}
        expected["subscriptions_not_active"] = 0
        expected["events_other_types"] = 0
        return {
            "counts": counts,
            "all_as_expected": counts == expected,
            "unexpected": {k: (v, expected[k]) for k, v in counts.items() if v != expected[k]},
        }

    # -- helpers ------------------------------------------------------------------------

    def vacuum(self, *tables: str) -> None:
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text(f"VACUUM ANALYZE {', '.join(tables)}"))

    def scalar(self, sql: str, **params: Any) -> int:
        with self.engine.connect() as c:
            return int(c.scalar(text(sql), params) or 0)


SEED_SQL = (
    """INSERT INTO customers (id, tenant_id, livemode, email, name, metadata, created_at)
       SELECT 'cus_bench' || lpad(i::text, 17, '0'), :t, false,
              'c' || i || '@example.com', 'Customer ' || i, '{}', :now
       FROM generate_series(1, :n) i""",
    """INSERT INTO payment_methods (id, tenant_id, livemode, customer_id, provider, token,
                                    brand, last4, created_at)
       SELECT 'pm_bench' || lpad(i::text, 18, '0'), :t, false,
              'cus_bench' || lpad(i::text, 17, '0'), 'sandbox', 'tok_ok', 'visa', '4242', :now
       FROM generate_series(1, :n) i""",
    """INSERT INTO plans (id, tenant_id, livemode, code, name, amount, currency, interval,
                          interval_count, trial_days, created_at)
       VALUES ('plan_bench', :t, false, 'bench-monthly', 'Bench monthly', :amount, 'usd',
               'month', 1, 0, :now)""",
    """INSERT INTO subscriptions (id, tenant_id, livemode, customer_id, plan_id,
           payment_method_id, status, billing_anchor, current_period_start, current_period_end,
           trial_will_end_sent, cancel_at_period_end, credit_balance, next_event_at, metadata,
           created_at, updated_at)
       SELECT 'sub_bench' || lpad(i::text, 17, '0'), :t, false,
              'cus_bench' || lpad(i::text, 17, '0'), 'plan_bench',
              'pm_bench' || lpad(i::text, 18, '0'), 'active', a, a, a + interval '1 month',
              false, false, 0, a + interval '1 month', '{}', a, a
       FROM generate_series(1, :n) i,
            LATERAL (SELECT date_trunc('second', CAST(:now AS timestamptz))
                            - interval '1 month' - interval '2 minutes'
                            - (i % 3600) * interval '1 second' AS a) anchor""",
)

CEILING_SQL = """
WITH c AS (
    SELECT id FROM claim_ceiling
    WHERE test_clock_id IS NULL AND next_event_at <= now()
    ORDER BY next_event_at LIMIT :b FOR UPDATE SKIP LOCKED
)
UPDATE claim_ceiling t SET next_event_at = now() + make_interval(secs => :lease)
FROM c WHERE t.id = c.id RETURNING t.id"""

#: (copy, table, with its rows) for the pgbench ceiling.
PGBENCH_TABLES = (
    ("pgb_subscriptions", "subscriptions", True),
    ("pgb_payments", "payments", False),
    ("pgb_outbox_events", "outbox_events", False),
)
#: One renewal's writes as a pgbench transaction: the subscription moves one period on, its
#: cycle payment and an event are inserted (a payload the size of payment.created's).
PGBENCH_SCRIPT = """\\set i random(1, {n})
BEGIN;
UPDATE pgb_subscriptions SET current_period_start = current_period_end,
  current_period_end = current_period_end + interval '1 month',
  next_event_at = current_period_end + interval '1 month', updated_at = now()
  WHERE id = 'sub_bench' || lpad(CAST(:i AS text), 17, '0');
INSERT INTO pgb_payments (id, tenant_id, livemode, customer_id, payment_method_id,
  subscription_id, purpose, period_start, amount, currency, status, amount_refunded, metadata,
  created_at, updated_at)
  VALUES ('pay_' || md5(random()::text), '{tenant}', false,
  'cus_bench' || lpad(CAST(:i AS text), 17, '0'), 'pm_bench' || lpad(CAST(:i AS text), 18, '0'),
  'sub_bench' || lpad(CAST(:i AS text), 17, '0'), 'cycle', now(), {amount}, 'usd', 'pending', 0,
  '{{}}', now(), now());
INSERT INTO pgb_outbox_events (event_id, topic, key, type, payload)
  VALUES ('evt_' || md5(random()::text), 'payments', 'sub_bench' || CAST(:i AS text),
  'payment.created', '{{"id": "pay_0123456789abcdef0123456789abcdef", "object": "payment",
  "amount": {amount}, "currency": "usd", "status": "pending", "purpose": "cycle",
  "customer_id": "cus_bench00000000000000001", "subscription_id": "sub_bench00000000000000001",
  "livemode": false, "created_at": "2026-01-01T00:00:00Z"}}');
END;
"""

CHECKS = {
    "renewed": "SELECT count(*) FROM subscriptions s JOIN payments p ON p.id = s.latest_payment_id"
    " WHERE p.status = 'succeeded' AND p.period_start = s.current_period_start"
    " AND s.current_period_start > s.billing_anchor",
    "subscriptions_not_active": "SELECT count(*) FROM subscriptions WHERE status <> 'active'",
    "cycle_payments": "SELECT count(*) FROM payments WHERE purpose = 'cycle'",
    "cycle_payments_succeeded": "SELECT count(*) FROM payments WHERE purpose = 'cycle'"
    " AND status = 'succeeded'",
    "sandbox_charges": "SELECT count(*) FROM sandbox_charges",
    "attempts": "SELECT count(*) FROM payment_attempts",
    "events payment.created": "SELECT count(*) FROM outbox_events WHERE type = 'payment.created'",
    "events payment.succeeded": "SELECT count(*) FROM outbox_events"
    " WHERE type = 'payment.succeeded'",
    "events subscription.renewed": "SELECT count(*) FROM outbox_events"
    " WHERE type = 'subscription.renewed'",
    "events_other_types": "SELECT count(*) FROM outbox_events WHERE type NOT IN"
    " ('payment.created', 'payment.succeeded', 'subscription.renewed')",
    "duplicate payments per subscription": "SELECT count(*) FROM (SELECT subscription_id FROM"
    " payments GROUP BY 1 HAVING count(*) > 1) d",
    "duplicate charges per payment": "SELECT count(*) FROM (SELECT payment_id FROM"
    " sandbox_charges GROUP BY 1 HAVING count(*) > 1) d",
    "duplicate attempts per payment": "SELECT count(*) FROM (SELECT payment_id FROM"
    " payment_attempts GROUP BY 1 HAVING count(*) > 1) d",
    "duplicate events per object and type": "SELECT count(*) FROM (SELECT key, type FROM"
    " outbox_events GROUP BY 1, 2 HAVING count(*) > 1) d",
}


def both_pgbench(first: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    """The TPS the ratio uses: the mean of the first and last run, with their spread."""
    rates = [first["tps"], last["tps"]]
    mean = sum(rates) / 2
    spread = (max(rates) - min(rates)) / mean
    return {"tps": round(mean, 1), "spread": round(spread, 3), "steady": spread <= 0.2,
            "clients": first["clients"], "seconds": first["seconds"],
            "script": PGBENCH_SCRIPT, "first": first, "last": last}


def merge_peaks(a: dict[int, float], b: dict[int, float]) -> dict[int, float]:
    return {pid: max(a.get(pid, 0.0), b.get(pid, 0.0)) for pid in a.keys() | b.keys()}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median claims/s, with every run's rate beside it."""
    ordered = sorted(runs, key=lambda r: r["claims_per_s"])
    rates = [r["claims_per_s"] for r in runs]
    return {**ordered[(len(ordered) - 1) // 2], "runs_claims_per_s": rates}


def longest_stall(progress: list[tuple[float, int]]) -> float:
    """The longest time without a renewal once they began (a lost message waits for its lease)."""
    longest, since, last = 0.0, None, 0
    for t, k in progress:
        if k and k != last:
            since, last = t, k
        elif since is not None:
            longest = max(longest, t - since)
    return round(longest, 1)


def steady_rate(progress: list[tuple[float, int]]) -> float | None:
    """Renewals/s between 10% and 90% done (without start-up and the tail)."""
    if not progress:
        return None
    total = progress[-1][1]
    low = next(((t, k) for t, k in progress if k >= total * 0.1), None)
    high = next(((t, k) for t, k in progress if k >= total * 0.9), None)
    if low is None or high is None or high[0] <= low[0]:
        return None
    return round((high[1] - low[1]) / (high[0] - low[0]), 1)


def targets(r: dict[str, Any]) -> dict[str, bool]:
    e2e = r.get("end_to_end", {})
    rss = e2e.get("worker_peak_rss_mb_max")
    ratio = r.get("ratio_to_pgbench", 0)
    return {
        "renewals/s >= 0.4 of pgbench TPS": ratio >= TARGETS["ratio_to_pgbench"],
        "claims_per_s >= 20000": r["scanner"]["claims_per_s"] >= TARGETS["claims_per_s"],
        "worker peak RSS <= 150 MB": rss is not None and rss <= TARGETS["worker_peak_rss_mb"],
        "checks": r["checks"]["all_as_expected"],
    }


def clear(config: Config) -> None:
    procs.clear_redis(config.redis_url, f"{config.redis_namespace}-*")


def report(r: dict[str, Any]) -> str:
    """The table printed at the end."""
    m, s, c, sc, p = r["machine"], r["settings"], r["ceiling"], r["scanner"], r["pgbench"]
    e = r.get("end_to_end", {})
    lines = [
        "",
        f"renewals bench - {m['date']} - commit {m['git_commit'][:10]} - {m['nproc']} cores - "
        f"load {' '.join(map(str, m['loadavg_at_start']))} at start, "
        f"{' '.join(map(str, m['loadavg_at_end']))} at end - {r['bench_seconds']} s",
        f"N={s['n']}, dramatiq {s['dramatiq']['processes']} x {s['dramatiq']['threads']} threads,"
        f" batch {s['renewal_batch_size']}, message {s['renewal_message_size']}, "
        f"pool {s['db_pool_size']}",
        "",
        f"{'ceiling: bare SKIP LOCKED claim+update /s':<46}{c['claims_per_s']:>12}"
        f"   runs {c['runs_claims_per_s']}",
        f"{'scanner: renewals.claim_due (+enqueue) /s':<46}{sc['claims_per_s']:>12}"
        f"   runs {sc['runs_claims_per_s']}",
        f"{'  ratio to ceiling':<46}{r['ratio_to_ceiling']:>12.3f}",
        f"{'pgbench: UPDATE + 2 INSERTs, TPS (mean)':<46}{p['tps']:>12.0f}"
        f"   first {p['first']['tps']:.0f}, last {p['last']['tps']:.0f}; {p['clients']} clients,"
        f" {p['seconds']} s" + ("" if p["steady"] else
                                f"  UNSTEADY: {p['spread']:.0%} apart, ratio unreliable"),
        "  cores, first: " + ", ".join(
            f"{k} {v}" for k, v in p["first"]["cpu"]["cores"].items() if v),
        f"{'end to end: renewals/s (scheduler start..all)':<46}{e.get('renewals_per_s', 0):>12}",
        f"{'  ratio to pgbench TPS (target >= 0.4)':<46}{r.get('ratio_to_pgbench', 0):>12.3f}",
        f"{'  steady (10%..90%) renewals/s':<46}{e.get('steady_renewals_per_s') or 0:>12}",
        f"{'  renewed / seconds':<46}{e.get('renewed', 0):>6} /{e.get('seconds', 0):>5}",
        f"{'  worker peak RSS MB (max of children)':<46}{e.get('worker_peak_rss_mb_max') or 0:>12}",
        f"{'  load average (1 min) meanwhile, mean / max':<46}"
        f"{e['loadavg_1m_during']['mean']:>6} /{e['loadavg_1m_during']['max']:>5}" if e else "",
        "",
        "checks: "
        + (
            "all as expected"
            if r["checks"]["all_as_expected"]
            else f"UNEXPECTED {r['checks']['unexpected']}"
        ),
        "targets: " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in r["targets"].items()),
    ]
    if e:
        lines += ["", "CPU during end to end (cores of 2; ms per renewal):"]
        per = e["cpu_ms_per_renewal"]
        lines += [
            f"  {name:<32}{cores:>6}  ({per.get(name, 0)} ms)"
            for name, cores in e["cpu"]["cores"].items()
        ]
    profile = e.get("profile")
    if profile and profile.get("renewal_steps"):
        steps = profile["renewal_steps"]
        lines += ["", f"worker profile (py-spy, {steps['samples']} samples in run_due):"]
        lines += [f"  {pct:5.1f}%  {label}" for label, pct in steps["steps_pct"].items()]
        lines += [f"  {pct:5.1f}%  {label}" for label, pct in steps["leaf_pct"].items()]
    if profile:
        lines += ["", "worker profile (py-spy, inclusive, app frames):"]
        lines += [f"  {pct:5.1f}%  {frame}" for frame, pct in profile["app_inclusive_pct"][:15]]
        lines += ["", "by package (self):"]
        lines += [f"  {pct:5.1f}%  {name}" for name, pct in profile["by_package_self_pct"][:10]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
