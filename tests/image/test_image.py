"""The container image, run: `make image-test` builds it and runs this (skipped otherwise).

The api, worker, scheduler and relay run as containers of the image (`--network host`, so
they reach 127.0.0.1 and nothing else), as non-root with a read-only root filesystem and
tmpfs where they write, against the machine's PostgreSQL and Redis (a database and a Redis
namespace of this test's own) and an embedded Kafka broker on a free port. The image's own
CLI migrates the database and creates the tenant; a `/pay` must succeed and its
`payment.succeeded` event reach Kafka.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import redis

from app.config import Config
from app.models.database import drop_database
from tests.e2e.stack import Client, free_port
from tests.eventing import Collector, broker, kafka_config
from tests.support import eventually

__all__ = ["broker"]  # the module's Kafka broker fixture

IMAGE = os.environ.get("SE_IMAGE", "")
UID = "10001"
#: Where the processes write: nothing else is writable (`--read-only`).
TMPFS = ["/tmp:mode=1777,size=64m", f"/tmp/prometheus:uid={UID},gid={UID},size=16m"]
COMMANDS = {
    "worker": ["dramatiq", "app.jobs", "--processes", "1", "--threads", "2"],
    "scheduler": ["python", "-m", "app.scheduler"],
    "relay": ["python", "-m", "app.events.relay"],
}

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not IMAGE, reason="needs the image: `make image-test` runs this"),
    pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client"),
]


@dataclass
class Containers:
    """Containers of the image started by this test, named after it, removed at the end."""

    prefix: str
    env_file: Path
    started: list[str]

    def argv(self, name: str, *, detach: bool) -> list[str]:
        mode = ["-d", "--name", f"{self.prefix}-{name}"] if detach else ["--rm"]
        tmpfs = [arg for path in TMPFS for arg in ("--tmpfs", path)]
        return ["docker", "run", *mode, "--network", "host", "--read-only", *tmpfs,
                "--no-healthcheck", "--env-file", str(self.env_file), IMAGE]

    def run(self, *command: str) -> str:
        """A one-off command in a new container (the operator CLI); its stdout."""
        done = subprocess.run([*self.argv("cli", detach=False), *command], capture_output=True,
                              text=True, timeout=180, check=False)
        assert done.returncode == 0, f"{command}: {done.stderr[-3000:]}"
        return done.stdout

    def start(self, name: str, *command: str) -> None:
        subprocess.run([*self.argv(name, detach=True), *command], check=True,
                       capture_output=True, timeout=60)
        self.started.append(f"{self.prefix}-{name}")

    def inspect(self, name: str, template: str) -> str:
        return subprocess.run(["docker", "inspect", "-f", template, f"{self.prefix}-{name}"],
                              capture_output=True, text=True, check=True).stdout.strip()

    def exec(self, name: str, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", "exec", f"{self.prefix}-{name}", *command],
                              capture_output=True, text=True, timeout=30, check=False)

    def logs(self) -> str:
        out = []
        for name in self.started:
            done = subprocess.run(["docker", "logs", "--tail", "30", name], capture_output=True,
                                  text=True, check=False)
            out.append(f"--- {name}\n{done.stdout}{done.stderr}")
        return "\n".join(out)

    def remove(self) -> None:
        if self.started:
            subprocess.run(["docker", "rm", "-f", *self.started], capture_output=True,
                           check=False, timeout=60)


@pytest.fixture()
def settings(config: Config, broker: object) -> Iterator[Config]:
    """The session's settings on a database (not yet created) and namespace of our own."""
    suffix = uuid.uuid4().hex[:8]
    own = replace(kafka_config(config, broker), database_url=f"{config.database_url}_img{suffix}",
                  redis_namespace=f"{config.redis_namespace}-img{suffix}",
                  mail_port=free_port(),  # nothing listens: no mail leaves this test
                  db_pool_size=2)  # the machine's PostgreSQL is shared (100 connections)
    yield own
    client = redis.Redis.from_url(own.redis_url)
    for key in client.scan_iter(f"{own.redis_namespace}*"):
        client.delete(key)
    client.close()
    drop_database(own.database_url)


@pytest.fixture()
def containers(settings: Config, tmp_path: Path) -> Iterator[Containers]:
    env_file = tmp_path / "engine.env"
    env = {**settings.to_env(), "ENGINE_ENV": "development", "LOG_LEVEL": "WARNING"}
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    started = Containers(f"se-image-test-{os.getpid()}", env_file, [])
    yield started
    started.remove()


def test_image_serves_a_payment_and_publishes_its_event(
    settings: Config, containers: Containers
) -> None:
    containers.run("flask", "--app", "wsgi", "db", "upgrade")
    keys = json.loads(containers.run("flask", "--app", "wsgi", "tenants", "create", "image-test",
                                     "--json").strip().splitlines()[-1])
    port = free_port()
    containers.start("api", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{port}",
                     "--workers", "2")
    for name, command in COMMANDS.items():
        containers.start(name, *command)
    client = Client(f"http://127.0.0.1:{port}", keys["tenant_id"], keys["test_key"],
                    keys["live_key"])
    collector = Collector(settings)
    try:
        try:
            eventually(lambda: _answers(client), 60, what="the api container's /readyz")
            customer_id, method_id = client.customer_with_method("tok_ok")
            payment = client.ok(client.pay(customer_id, method_id), 202)
            eventually(lambda: client.ok(client.get(f"/payments/{payment['id']}"), 200)
                       ["status"] == "succeeded", 60, what="the payment to succeed")
            eventually(lambda: [m for m in collector.snapshot() if m.key == payment["id"]
                                and m.event["type"] == "payment.succeeded"], 60,
                       what="payment.succeeded in Kafka")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{containers.logs()}") from None
    finally:
        collector.close()
    for name in ("api", *COMMANDS):
        assert containers.inspect(name, "{{.State.Running}}") == "true", containers.logs()
        assert containers.inspect(name, "{{.HostConfig.ReadonlyRootfs}}") == "true"
        assert containers.exec(name, "id", "-u").stdout.strip() == UID
    assert containers.exec("api", "touch", "/app/written").returncode != 0, "root fs writable"


def _answers(client: Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except OSError:
        return False
