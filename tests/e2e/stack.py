"""The engine's processes started as a user starts them, and an HTTP client of one tenant.

`Stack` runs `gunicorn wsgi:app`, `dramatiq app.jobs` and `python -m app.scheduler` for one
Config, each in its own process group so a test can SIGKILL a whole fleet at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import redis
import requests
from sqlalchemy import Engine, create_engine, text

from app.config import Config
from tests.conftest import child_env
from tests.servers import free_port
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HTTP_TIMEOUT = 10.0


@dataclass
class Process:
    """One command run in its own session (process group), its output in a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    stop_signal: int = signal.SIGTERM
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert not self.running, f"{self.name} is already running"
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self) -> None:
        """Fail with the end of its log when the process has exited."""
        if self.popen is not None and self.popen.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}"
            )

    def kill(self) -> None:
        """SIGKILL the whole process group: no handler runs, nothing is acknowledged."""
        self._signal_group(signal.SIGKILL)
        self._reap(timeout=10)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the process group to stop, SIGKILL it if it has not within `timeout`."""
        if self.popen is None:
            return
        self._signal_group(self.stop_signal)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
        self._reap(timeout=10)

    def tail(self, lines: int = 40) -> str:
        text_ = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text_.splitlines()[-lines:])

    def request_stop(self) -> None:
        """Send the stop signal to the process group without waiting."""
        if self.popen is not None:
            self._signal_group(self.stop_signal)

    def _signal_group(self, signum: int) -> None:
        assert self.popen is not None
        try:
            os.killpg(self.popen.pid, signum)
        except ProcessLookupError:
            pass

    def _reap(self, timeout: float) -> None:
        """Wait for the leader, then until no process of its group is alive.

        Orphans of a killed leader become zombies that init reaps when it gets round to
        it; a zombie runs nothing, so only live members count.
        """
        assert self.popen is not None
        self.popen.wait(timeout=timeout)
        pgid = self.popen.pid
        self.popen = None
        eventually(lambda: not live_members(pgid), timeout,
                   what=f"process group of {self.name} to exit")


def live_members(pgid: int) -> list[int]:
    """Pids of the processes of group `pgid` that are not zombies (Linux /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # the process exited while we looked
        if int(group) == pgid and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


@dataclass
class Client:
    """The API over HTTP as one tenant, with its test key."""

    base_url: str
    tenant_id: str
    test_key: str
    live_key: str
    http: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.http.headers["Authorization"] = f"Bearer {self.test_key}"

    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.base_url}{path}"

    def get(self, path: str) -> requests.Response:
        return self.http.get(self.url(path), timeout=HTTP_TIMEOUT)

    def post(self, path: str, body: Any, idempotency_key: str | None = None) -> requests.Response:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.http.post(self.url(path), json=body, headers=headers, timeout=HTTP_TIMEOUT)

    @staticmethod
    def ok(response: requests.Response, status: int) -> dict[str, Any]:
        assert response.status_code == status, f"{response.status_code}: {response.text}"
        data: dict[str, Any] = response.json()
        return data

    def customer_with_method(self, token: str = "tok_ok") -> tuple[str, str]:
        """A new customer and a sandbox payment method of `token`: (customer id, method id)."""
        customer = self.ok(self.post("/customers", {"email": "ada@example.com"}), 201)
        method = self.ok(
            self.post(f"/customers/{customer['id']}/payment-methods",
                      {"provider": "sandbox", "token": token}),
            201,
        )
        return customer["id"], method["id"]

    def pay(self, customer_id: str, method_id: str, amount: int = 1999) -> requests.Response:
        """POST /pay with a fresh idempotency key; the raw response."""
        body = {"amount": amount, "currency": "usd", "customer_id": customer_id,
                "payment_method_id": method_id}
        return self.post("/pay", body, idempotency_key=uuid.uuid4().hex)

    def charges(self, payment_id: str) -> list[dict[str, Any]]:
        """The sandbox ledger's charges of one payment."""
        data = self.ok(self.get(f"/sandbox/charges?payment_id={payment_id}"), 200)["data"]
        assert isinstance(data, list)
        return data


class Stack:
    """API, worker fleet, scheduler, outbox relay and webhook dispatcher of one Config, each
    startable and killable alone."""

    def __init__(self, config: Config, logs: Path, *, web_workers: int = 2) -> None:
        self.config = config
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = child_env(config)
        logs.mkdir(parents=True, exist_ok=True)
        commands = {
            "api": [str(BIN / "gunicorn"), "wsgi:app", "--bind", f"127.0.0.1:{self.port}",
                    "--workers", str(web_workers), "--no-control-socket"],
            "worker": [str(BIN / "dramatiq"), "app.jobs", "--processes", "1",
                       "--threads", "4"],
            "scheduler": [sys.executable, "-m", "app.scheduler"],
            "relay": [sys.executable, "-m", "app.events.relay"],  # these two need Kafka:
            "webhooks": [sys.executable, "-m", "app.webhooks"],  # kafka_bootstrap_servers
        }
        self.processes = {
            name: Process(name, argv, env, logs / f"{name}.log") for name, argv in commands.items()
        }
        self.processes["api"].stop_signal = signal.SIGINT  # gunicorn's quick shutdown

    def start(self, *names: str) -> None:
        for name in names:
            self.processes[name].start()

    @contextmanager
    def up(self, *names: str) -> Iterator[Stack]:
        """These processes started and the API ready; every process stopped afterwards."""
        try:
            self.start(*names)
            self.wait_ready()
            yield self
        finally:
            self.stop()

    def running(self) -> set[str]:
        return {name for name, process in self.processes.items() if process.running}

    def kill(self, name: str) -> None:
        self.processes[name].kill()

    def stop(self, grace: float = 2.0) -> None:
        """Stop every process (SIGKILL after `grace` seconds) and close connections.

        Teardown only: a short grace, as nothing here checks how gracefully they stop.
        """
        for process in self.processes.values():
            process.request_stop()
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            process.stop(timeout=max(0.1, deadline - time.monotonic()))
        if "db" in self.__dict__:
            self.db.dispose()

    def check_alive(self) -> None:
        for process in self.processes.values():
            process.check_alive()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll /readyz until the API answers 200, failing early if a process died."""
        def ready() -> bool:
            self.check_alive()
            try:
                response = requests.get(f"{self.base_url}/readyz", timeout=5)
            except (requests.ConnectionError, requests.Timeout):
                return False
            return response.status_code == 200

        eventually(ready, timeout, what=f"{self.base_url}/readyz")

    def tenant(self, name: str, rate_limit: str | None = None) -> Client:
        """A new tenant made with the operator CLI, as a client of its test key."""
        argv = ["tenants", "create", name, "--json"]
        if rate_limit:
            argv += ["--rate-limit", rate_limit]
        keys = json.loads(self.cli(*argv).strip().splitlines()[-1])
        return Client(self.base_url, keys["tenant_id"], keys["test_key"], keys["live_key"])

    def cli(self, *argv: str) -> str:
        """An operator command, `flask --app wsgi ARGV...`, on this stack's settings: its output."""
        done = subprocess.run(
            [str(BIN / "flask"), "--app", "wsgi", *argv], env=child_env(self.config), cwd=ROOT,
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    @cached_property
    def db(self) -> Engine:
        """A connection pool to this stack's database, to observe (never change) its state."""
        return create_engine(self.config.database_url, pool_size=2)

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.db.connect() as connection:
            return connection.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.db.connect() as connection:
            return list(connection.execute(text(sql), params).all())

    def flush_queues(self) -> int:
        """Drop every Dramatiq message of this stack from Redis (as a Redis restart would)."""
        client = redis.Redis.from_url(self.config.redis_url)
        keys = list(client.scan_iter(f"{self.config.redis_namespace}-dramatiq*"))
        if keys:
            client.delete(*keys)
        client.close()
        return len(keys)

    def queued_messages(self) -> int:
        """How many Dramatiq messages of this stack Redis holds."""
        client = redis.Redis.from_url(self.config.redis_url)
        count = sum(
            int(client.hlen(key))
            for key in client.scan_iter(f"{self.config.redis_namespace}-dramatiq:*.msgs")
        )
        client.close()
        return count
