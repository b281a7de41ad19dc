"""Read replicas: which are up and caught up, how far each has replayed, whose writes wait.

A monitor thread per process asks every replica for `pg_last_wal_replay_lsn()` and the
primary for `pg_current_wal_lsn()` twice a second. A replica's lag is how old the newest
primary position it has replayed is (0 when it has replayed what the primary had just
before); one that does not answer, or lags more than REPLICA_MAX_LAG_SECONDS, or was not
heard from lately, is skipped until it recovers (a log line each way, and a metric).

Read-your-writes: after a request of an API key commits, the primary's WAL position is
kept in Redis for that key (`remember_write`); a read of that key may run on a replica
only once the replica has replayed up to there (app/services/queries.py decides). When
Redis has lost the marks (restarted, flushed), reads run on the primary until any mark
lost would have expired anyway.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import psycopg2
import psycopg2.extensions
import redis
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from app.telemetry import metrics

log = logging.getLogger(__name__)

#: How often the monitor asks the primary and every replica where they are.
PROBE_SECONDS = 0.5
#: A replica not heard from for this long is skipped (its probe hangs or fails).
SILENCE_SECONDS = 2.0
#: A WAL position later than any: "read this key's data on the primary" (position unknown).
ON_PRIMARY = 2**64 - 1


def parse_lsn(value: str | None) -> int:
    """'16/B374D848' as an integer; 0 for None (not a replica, or nothing replayed)."""
    if not value:
        return 0
    high, _, low = value.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


@dataclass
class Replica:
    """One replica and what the monitor last learned of it."""

    name: str  # host:port/database, never a password
    engine: Engine
    sessions: sessionmaker[Session]
    replayed: int = 0
    lag: float = float("inf")
    heard_at: float = float("-inf")  # time.monotonic() of the last answer
    usable: bool = False

    def ready(self) -> bool:
        """Up, caught up within the allowed lag and heard from lately."""
        return self.usable and time.monotonic() - self.heard_at < SILENCE_SECONDS

    def saw(self, replayed: int) -> None:
        """The replica said it has replayed up to `replayed`.

        Not a maximum: a replica restarted after a crash may come back behind the position
        it had reported (at its last restartpoint) and replay the rest again.
        """
        self.replayed = replayed


@dataclass
class Replicas:
    """The replicas of one process, their monitor, and the write marks in Redis."""

    primary: Engine
    replicas: list[Replica]
    redis: redis.Redis
    namespace: str
    max_lag: float
    _history: deque[tuple[float, int]] = field(default_factory=deque)
    _monitor: threading.Thread | None = None
    _next: int = 0

    def choose(self, needed: int) -> tuple[Replica, bool] | None:
        """A ready replica, round robin, and whether it has surely replayed `needed`.

        One that is ready but not known to have replayed that far may still have: the
        caller checks it in its own read. None: read on the primary.
        """
        self._start_monitor()
        ready = [r for r in self.replicas if r.ready()]
        if not ready or needed == ON_PRIMARY:
            return None
        self._next += 1
        caught_up = [r for r in ready if r.replayed >= needed]
        chosen = (caught_up or ready)[self._next % len(caught_up or ready)]
        return chosen, chosen.replayed >= needed

    def fell_back(self) -> None:
        metrics.count("ReplicaFallbacks")

    def failed(self, replica: Replica, exc: Exception) -> None:
        """A read on `replica` failed: skip it until the monitor hears from it again."""
        metrics.count("ReplicaFallbacks")
        replica.replayed = 0  # it may come back behind (see Replica.saw)
        replica.engine.dispose()  # its connections may all be dead or stuck
        if replica.usable:
            replica.usable = False
            log.warning("read replica failed; reading the primary",
                        extra={"replica": replica.name, "error": type(exc).__name__})

    def remember_write(self, key_id: str, primary: Session) -> None:
        """Reads of `key_id` must see what it just committed on `primary` (a session there).

        Kept for a while only: past twice the allowed lag every usable replica has it.
        """
        try:
            lsn = parse_lsn(primary.scalar(text("SELECT pg_current_wal_lsn()")))
        except DBAPIError:
            lsn = ON_PRIMARY
        try:
            self.redis.set(self._mark(key_id), str(lsn), ex=self._mark_seconds)
        except redis.RedisError as exc:
            log.error("could not remember a write position; reads may be served stale",
                      extra={"error": type(exc).__name__})

    def last_write(self, key_id: str | None) -> int:
        """The WAL position reads of `key_id` must see (0: none; ON_PRIMARY: not known).

        A Redis that restarted or was flushed has lost the marks of recent writes: for as
        long as a mark lives after that, a key without one reads on the primary.
        """
        if key_id is None:
            return 0
        try:
            found, started, young = self.redis.mget(
                self._mark(key_id), self._started, self._young)
            if started is None:  # marks lost, or never kept: a new epoch of marks
                with self.redis.pipeline() as pipe:
                    pipe.set(self._young, b"1", ex=self._mark_seconds, nx=True)
                    pipe.set(self._started, b"1", nx=True)
                    pipe.execute()
                return ON_PRIMARY
        except redis.RedisError:
            return ON_PRIMARY
        if isinstance(found, bytes):
            return int(found)
        return ON_PRIMARY if young is not None else 0

    @property
    def _mark_seconds(self) -> int:
        return max(10, int(self.max_lag * 2 + SILENCE_SECONDS + 1))

    def _mark(self, key_id: str) -> str:
        return f"{self.namespace}:replica-lsn:{key_id}"

    @property
    def _started(self) -> str:
        return f"{self.namespace}:replica-lsn"

    @property
    def _young(self) -> str:
        return f"{self.namespace}:replica-lsn-young"

    def _start_monitor(self) -> None:
        if self._monitor is None or not self._monitor.is_alive():
            self._monitor = threading.Thread(target=self._watch, name="replica-monitor",
                                             daemon=True)
            self._monitor.start()

    def _watch(self) -> None:
        while True:
            started = time.monotonic()
            self.probe()
            time.sleep(max(0.0, PROBE_SECONDS - (time.monotonic() - started)))

    def probe(self) -> None:
        """Ask the primary, then each replica, where they are (the monitor's one round)."""
        try:
            with self.primary.connect() as connection:
                current = parse_lsn(connection.scalar(text("SELECT pg_current_wal_lsn()")))
        except Exception:  # noqa: BLE001 - the primary's own errors are seen by requests
            return
        now = time.monotonic()
        self._history.append((now, current))
        while len(self._history) > 2 and now - self._history[1][0] > self.max_lag + 5:
            self._history.popleft()
        for replica in self.replicas:
            self._probe(replica, current)
        measured = [r.lag for r in self.replicas if r.lag != float("inf")]
        if measured:  # not yet known (a first probe) is not reported as a lag
            metrics.gauge("ReplicaLag", max(measured))

    def _probe(self, replica: Replica, current: int) -> None:
        try:
            with replica.engine.connect() as connection:
                replayed = parse_lsn(connection.scalar(text("SELECT pg_last_wal_replay_lsn()")))
        except Exception as exc:  # noqa: BLE001 - any failure means "down"
            self._set(replica, usable=False, why=f"down ({type(exc).__name__})")
            return
        replica.saw(replayed)
        replica.heard_at = time.monotonic()
        replica.lag = self._lag(replica.replayed, current)
        if replica.lag > self.max_lag:
            self._set(replica, usable=False, why=f"behind by {replica.lag:.1f}s")
        else:
            self._set(replica, usable=True, why="caught up")

    def _lag(self, replayed: int, current: int) -> float:
        """Seconds since the primary was at the newest position `replayed` has reached."""
        if replayed >= current:
            return 0.0
        reached = [at for at, lsn in self._history if lsn <= replayed]
        return time.monotonic() - reached[-1] if reached else float("inf")

    def _set(self, replica: Replica, *, usable: bool, why: str) -> None:
        if replica.usable != usable:
            (log.info if usable else log.warning)(
                "read replica " + ("back in use" if usable else "skipped"),
                extra={"replica": replica.name, "reason": why})
        replica.usable = usable


def bound_replica_waits(urls: list[str], seconds: float, connect_seconds: float) -> None:
    """Give up on a replica that has not answered for `seconds`, even a frozen one.

    A stopped (SIGSTOP) server still has its connections acknowledged by the kernel, so no
    socket timeout fires and the server's statement_timeout never runs: a read sent to it
    would wait until it thaws. psycopg2's wait callback (one per process) raises
    OperationalError instead, and the read is retried on the primary. Every other wait is
    as libpq's own: connecting within `connect_seconds` (libpq leaves connect_timeout to a
    wait callback), queries bounded by the server's statement_timeout.
    """
    bounded = {(make_url(u).host, make_url(u).port or 5432) for u in urls}
    connected = (psycopg2.extensions.STATUS_READY, psycopg2.extensions.STATUS_BEGIN)

    def wait(connection: psycopg2.extensions.connection) -> None:
        info = connection.info
        limit = (connect_seconds if connection.status not in connected
                 else seconds if (info.host, info.port) in bounded else None)
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            state = connection.poll()
            if state == psycopg2.extensions.POLL_OK:
                return
            reading = state == psycopg2.extensions.POLL_READ
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = select.select([connection] if reading else [],
                                  [] if reading else [connection], [], left)
            if deadline is not None and not any(ready):
                raise psycopg2.OperationalError(
                    f"{info.host}:{info.port} did not answer in {limit} s")

    psycopg2.extensions.set_wait_callback(wait)


def replica_name(url: str) -> str:
    """host:port/database of a URL, for logs and metrics (no user, no password)."""
    parsed = make_url(url)
    return f"{parsed.host}:{parsed.port or 5432}/{parsed.database}"
