"""Processes for the benches: start in their own group, wait until they answer, stop them all,
and account where the machine's CPU time went while a phase ran (ours and everyone else's)."""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import redis

ROOT = Path(__file__).resolve().parents[1]
#: Servers of the benches' own databases and Redis namespaces.
PG = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


_T0 = time.monotonic()


def say(message: str) -> None:
    """Progress on stderr, with seconds since the bench started."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def machine() -> dict[str, Any]:
    """What ran the bench: when, which commit (and whether the tree was dirty), which CPU."""

    def git(*argv: str) -> str:
        run = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=False)
        return run.stdout.strip()

    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "HEAD"),
        "git_worktree_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "loadavg_at_start": [round(v, 2) for v in os.getloadavg()],
    }


def wait_quiet(limit: float) -> float:
    """Wait (at most `limit` s) until the machine is at least 80% idle; the idle cores seen."""
    deadline = time.monotonic() + limit
    cores = os.cpu_count() or 1
    while True:
        before = cpu_snapshot()
        time.sleep(3)
        after = cpu_snapshot()
        idle = (after.idle - before.idle) / TICKS / (after.at - before.at)
        if idle >= 0.8 * cores or time.monotonic() > deadline:
            say(f"{idle:.2f} of {cores} cores idle")
            return round(idle, 2)
        say(f"waiting for a quieter machine: {idle:.2f} of {cores} cores idle")


class Poller:
    """Calls `read` every `interval` s on a thread while a phase runs: (seconds, value) pairs.

    For what the load generator cannot see, such as the backlog in the database.
    """

    def __init__(self, read: Callable[[], float], interval: float = 0.5) -> None:
        self.read, self.interval = read, interval
        self.points: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poller:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.points.append((time.monotonic() - self._started, self.read()))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.points.append((time.monotonic() - self._started, self.read()))
            self._stop.wait(self.interval)


TICKS = os.sysconf("SC_CLK_TCK")
OWN_DATABASE = "se_bench"


@dataclass
class Fleet:
    """The processes one bench started, by name; `stop_all` ends each group it started."""

    log_dir: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        log = (self.log_dir / f"{name}.log").open("wb")
        self._logs.append(log)
        self.running[name] = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self, name: str) -> None:
        """SIGTERM the process group, wait for a graceful exit, then SIGKILL it."""
        process = self.running.pop(name)
        for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            if process.poll() is not None:
                break
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
        _kill_leftovers(process.pid)

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)
        for log in self._logs:
            log.close()

    def check_alive(self) -> None:
        """Fail loudly with the log's tail when a process we started has died."""
        for name, process in self.running.items():
            if process.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")

    def pgids(self) -> dict[int, str]:
        return {process.pid: name for name, process in self.running.items()}


def _kill_leftovers(pgid: int) -> None:
    """A group whose leader exited may still hold children; end them too."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_http(url: str, fleet: Fleet, timeout: float = 30.0) -> None:
    """Poll `url` until it answers 200 (or fail with the reason)."""
    deadline = time.monotonic() + timeout
    while True:
        fleet.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - 127.0.0.1
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200 within {timeout}s")
        time.sleep(0.2)


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU ticks used so far: by every live process (pid -> (name, pgid, ticks)), and in total."""

    at: float
    busy: int
    idle: int
    processes: dict[int, tuple[str, int, int]]
    interrupts: int = 0  # irq + softirq (loopback networking is mostly here)
    steal: int = 0  # taken by the hypervisor from this VM


def cpu_snapshot() -> CpuSnapshot:
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]
    processes: dict[int, tuple[str, int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
            name = raw[raw.index("(") + 1 : raw.rindex(")")]
            if name.startswith("postgres"):
                name = _postgres_role(Path(entry.path, "cmdline").read_bytes())
        except OSError:
            continue
        rest = raw[raw.rindex(")") + 2 :].split()
        processes[int(entry.name)] = (name, int(rest[2]), int(rest[11]) + int(rest[12]))
    return CpuSnapshot(time.monotonic(), sum(ticks[:8]) - idle, idle, processes,
                       interrupts=ticks[5] + ticks[6], steal=ticks[7])


def _postgres_role(cmdline: bytes) -> str:
    """`postgres <database>` for a backend, `postgres` for the server's own processes."""
    words = cmdline.replace(b"\0", b" ").decode(errors="replace").split()
    # a backend's title: "postgres: 15/main: <user> <database> <client> <state>"
    if len(words) >= 4 and words[0] == "postgres:" and "(" in " ".join(words[4:5]):
        return f"postgres {words[3]}"
    return "postgres"


def cpu_usage(
    before: CpuSnapshot,
    after: CpuSnapshot,
    ours: dict[int, str],
    own_pids: dict[int, str],
    exited: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Cores used on average between two snapshots: ours by name, the rest summed up.

    `ours` maps process-group ids to names (gunicorn, fleet), `own_pids` single pids (wrk,
    this script), `exited` CPU seconds of our children that ended in between (wrk);
    backends of the bench database are told apart from other databases'. Other processes
    that lived only between the snapshots count under `other processes`; the kernel's
    interrupt time and the hypervisor's steal are shown apart.
    """
    seconds = after.at - before.at
    used: Counter[str] = Counter()
    for pid, (name, pgid, ticks) in after.processes.items():
        delta = ticks - before.processes.get(pid, (name, pgid, 0))[2]
        if delta > 0:
            used[_consumer(pid, name, pgid, ours, own_pids)] += delta
    total = after.busy - before.busy
    for name, cpu_seconds in (exited or {}).items():
        if cpu_seconds > 0:
            used[name] += round(cpu_seconds * TICKS)
    others = {k: v for k, v in used.items() if k.startswith("other: ")}
    mine = {k: v for k, v in used.items() if k not in others}
    interrupts = after.interrupts - before.interrupts
    steal = after.steal - before.steal
    rest = max(0, total - sum(mine.values()) - interrupts - steal)

    def cores(ticks: float) -> float:
        return round(ticks / TICKS / seconds, 2)

    return {
        "seconds": round(seconds, 1),
        "cores": {
            **{name: cores(t) for name, t in sorted(mine.items(), key=lambda kv: -kv[1])},
            "other processes": cores(rest),
            "kernel interrupts (irq, softirq)": cores(interrupts),
            "steal (hypervisor)": cores(steal),
            "idle": cores(after.idle - before.idle),
        },
        "top_others": {k[7:]: cores(v) for k, v in Counter(others).most_common(4)},
    }


def _consumer(
    pid: int, name: str, pgid: int, ours: dict[int, str], own_pids: dict[int, str]
) -> str:
    if pid in own_pids:
        return own_pids[pid]
    if pgid in ours:
        return ours[pgid]
    if name == f"postgres {OWN_DATABASE}":
        return "postgresql (bench db)"
    if name == "postgres":
        return "postgresql (server processes)"
    if name.startswith("redis"):
        return "redis (all clients)"
    return f"other: {name}"


def children(pid: int) -> list[int]:
    """Direct children of `pid` (e.g. the dramatiq master's worker processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def peak_rss_mb(pids: list[int]) -> dict[int, float]:
    """VmHWM (peak resident memory) in MB of each process still alive."""
    found = {}
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        hwm = next((ln for ln in status.splitlines() if ln.startswith("VmHWM:")), None)
        if hwm:
            found[pid] = round(int(hwm.split()[1]) / 1024, 1)
    return found


def cpu_ms_per(
    usage: dict[str, Any], items: int, *, skip: tuple[str, ...] = ()
) -> dict[str, float]:
    """CPU ms each consumer of `cpu_usage` spent per item done in the phase (request, renewal)."""
    return {name: round(cores * usage["seconds"] * 1000 / max(items, 1), 2)
            for name, cores in usage["cores"].items() if name not in ("idle", *skip)}


def wait_until(
    done: Callable[[], bool], timeout: float, fleet: Fleet | None = None
) -> float | None:
    """Poll `done()` every 0.1 s (bounded; failing if a process of `fleet` died): the seconds
    it took, or None when the time ran out."""
    started = time.monotonic()
    while not done():
        if fleet is not None:
            fleet.check_alive()
        if time.monotonic() - started > timeout:
            return None
        time.sleep(0.1)
    return time.monotonic() - started


def clear_redis(url: str, *patterns: str) -> None:
    """Delete the keys that match (a bench's own namespace: never anyone else's)."""
    client = redis.Redis.from_url(url)
    for pattern in patterns:
        for key in client.scan_iter(pattern):
            client.delete(key)
    client.close()
