"""`make run`: the whole engine on one machine, in the foreground, stopped by Ctrl-C.

Prepares the database, makes sure a demo tenant exists and prints its test key, then runs
the API (gunicorn), the worker fleet (dramatiq) and the scheduler, restarting any that
exits (the dramatiq master stops its whole fleet when one worker dies).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from app.bootstrap import build
from app.config import Config
from app.models.database import ensure_database, migrate
from app.services.tenants import authenticate, create_tenant

VAR = Path("var")
DEMO_FILE = VAR / "demo-tenant.json"
SINK_PORT = 1025
METRICS_DIR = VAR / "prometheus"
#: Where `make run`'s processes serve Prometheus metrics (the API serves them on /metrics).
METRICS_PORTS = {"worker": 9191, "scheduler": 9192, "relay": 9193, "webhooks": 9194}


def commands(config: Config, port: str) -> dict[str, list[str]]:
    """The processes of the engine, as production runs them, plus local stand-ins.

    With KAFKA_BOOTSTRAP_SERVERS unset the embedded Kafka broker runs too, and with the
    default mail settings an SMTP sink that saves each mail under var/mail/ (test-mode mail
    goes there too: TEST_MAIL_SERVER). They start first, so the relay and the mail actor
    find them.
    """
    bin_dir = Path(sys.executable).parent
    specs: dict[str, list[str]] = {}
    if not config.kafka_bootstrap_servers:
        specs["kafka"] = [sys.executable, "-m", "app.events.embedded_broker"]
    sink = {f"{host}:{SINK_PORT}" for host in ("127.0.0.1", "localhost")}
    if f"{config.mail_server}:{config.mail_port}" in sink or config.test_mail_server in sink:
        specs["mail-sink"] = [sys.executable, "-m", "app.mail.sink", "--port", str(SINK_PORT),
                              "--dir", str(VAR / "mail")]
    return specs | {
        "api": [str(bin_dir / "gunicorn"), "wsgi:app", "--bind", f"127.0.0.1:{port}",
                "--workers", os.environ.get("WEB_CONCURRENCY", "4"), "--access-logfile", "-",
                "--no-control-socket"],
        "worker": [str(bin_dir / "dramatiq"), "app.jobs", "--processes", "2", "--threads", "4"],
        "scheduler": [sys.executable, "-m", "app.scheduler"],
        "relay": [sys.executable, "-m", "app.events.relay"],
        "webhooks": [sys.executable, "-m", "app.webhooks"],
    }


def demo_key() -> str:
    """The demo tenant's test key, created on the first run and kept in var/."""
    container = build()
    if DEMO_FILE.exists():
        saved = json.loads(DEMO_FILE.read_text())
        with container.uow() as uow:
            if authenticate(uow.session, container.cache, saved["test_key"]) is not None:
                return str(saved["test_key"])
    with container.uow() as uow:
        created = create_tenant(uow, "Demo merchant")
        uow.commit()
    DEMO_FILE.write_text(json.dumps({"tenant_id": created.tenant_id,
                                     "test_key": created.test_key}))
    DEMO_FILE.chmod(0o600)
    return created.test_key


def banner(port: str, key: str) -> str:
    base = f"http://127.0.0.1:{port}"
    auth = f'-H "Authorization: Bearer {key}" -H "Content-Type: application/json"'
    return f"""
Subscription Engine is starting on {base}  (Ctrl-C stops everything)
Demo tenant test key: {key}

  CUS=$(curl -s {auth} -d '{{"email":"ada@example.com"}}' {base}/customers | jq -r .id)
  PM=$(curl -s {auth} -d '{{"provider":"sandbox","token":"tok_ok"}}' \\
       {base}/customers/$CUS/payment-methods | jq -r .id)
  PAY=$(curl -s {auth} -H "Idempotency-Key: $(python3 -c 'import uuid; print(uuid.uuid4())')" \\
       -d '{{"amount":1999,"currency":"usd","customer_id":"'$CUS'","payment_method_id":"'$PM'"}}' \\
       {base}/pay | jq -r .id)
  curl -s {auth} {base}/payments/$PAY | jq .status     # "succeeded"
"""


def main() -> None:
    VAR.mkdir(exist_ok=True)
    shutil.rmtree(METRICS_DIR, ignore_errors=True)
    os.environ.setdefault("METRICS_EMF", "off")  # the console shows logs; Prometheus has these
    os.environ.setdefault("ENGINE_ENV", "development")  # allows the development CREDENTIALS_KEY
    os.environ.setdefault("TEST_MAIL_SERVER", f"127.0.0.1:{SINK_PORT}")  # test-mode mail: the sink
    # Development: webhook endpoints on this machine (127.0.0.1 receivers) are allowed.
    os.environ.setdefault("WEBHOOKS_ALLOW_PRIVATE_NETWORKS", "true")
    port = os.environ.get("PORT", "8000")
    config = build().config
    ensure_database(config.database_url)
    migrate(config.database_url)
    print(banner(port, demo_key()), flush=True)
    supervise(commands(config, port))


def process_env(name: str) -> dict[str, str]:
    """A process's environment: its own Prometheus directory (shared by its fleet only) and,
    for the worker fleet, scheduler and relay, its metrics port."""
    metrics_dir = METRICS_DIR / name
    metrics_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir.resolve())}
    if name in METRICS_PORTS:
        env["METRICS_PORT"] = str(METRICS_PORTS[name])
    return env


def supervise(specs: dict[str, list[str]]) -> None:
    """Run every process; restart one that exits; stop all on SIGINT or SIGTERM."""
    # An idle Dramatiq consumer polls every second by default; poll every 100 ms so a
    # payment settles well under a second after its 202.
    os.environ.setdefault("dramatiq_worker_timeout", "100")
    running = {name: subprocess.Popen(cmd, env=process_env(name)) for name, cmd in specs.items()}
    stopping = False

    def _stop(_: int, __: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stopping:
        for name, process in running.items():
            if process.poll() is not None and not stopping:
                print(f"{name} exited with {process.returncode}; restarting", flush=True)
                running[name] = subprocess.Popen(specs[name], env=process_env(name))
        time.sleep(0.5)
    for process in reversed(running.values()):  # dependants first: the broker and sink stop last
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


if __name__ == "__main__":
    main()
