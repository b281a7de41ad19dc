"""The one description of the engine's ECS tasks: what each process runs and with which settings.

The CDK stacks (infra/services.py) build their task definitions from it, and
`python -m infra.processes` writes ecs-task-defs/*.json from it for operators who register
task definitions without CDK; tests/unit/test_deploy_files.py fails when those files differ
from what this module renders. Pure Python (no aws-cdk import), so `make test` checks it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TASK_DEF_DIR = ROOT / "ecs-task-defs"
NAME = "subscription-engine"
LOG_GROUP = f"/ecs/{NAME}"
API_PORT = 8000
#: awslogs' buffer in non-blocking mode: log lines beyond it are dropped, the task never blocks.
MAX_BUFFER_BYTES = 25 * 1024 * 1024
#: The task-private volume every task mounts at /tmp, the one writable place (gunicorn's
#: heartbeat files, Prometheus' multiprocess files): the root filesystem is read-only.
SCRATCH = ("scratch", "/tmp")  # noqa: S108
HEALTH_CHECK = {
    "command": ["CMD", "python", "-c",
                "import urllib.request; "
                f"urllib.request.urlopen('http://127.0.0.1:{API_PORT}/healthz', timeout=4)"],
    "interval": 30, "timeout": 5, "retries": 3, "startPeriod": 20,
}


@dataclass(frozen=True)
class Process:
    """One process of the engine, run as its own ECS task (one container per task).

    `environment` holds plain settings; `deployed` names settings whose value the deployment
    supplies (Kafka's brokers, the SMTP host); `secrets` come from Secrets Manager. `uses`
    names the backends it talks to (postgres, redis, kafka-publish, kafka-consume, smtp),
    which decide its security-group flows and IAM grants; every task may reach HTTPS
    (payment providers, merchants' webhook endpoints, AWS APIs).
    `desired` is the default task count of its ECS service (None: a one-off task, no service).
    """

    name: str
    command: tuple[str, ...]
    cpu: int
    memory: int
    stop_timeout: int
    desired: int | None
    uses: frozenset[str]
    environment: Mapping[str, str] = field(default_factory=dict)
    deployed: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ("DATABASE_URL", "REDIS_URL")
    port: int | None = None

    @property
    def kafka(self) -> bool:
        """Whether the process connects to Kafka (to publish or to consume)."""
        return bool({"kafka-publish", "kafka-consume"} & self.uses)

    @property
    def family(self) -> str:
        return f"{NAME}-{self.name}"


BASE_ENV = {"LOG_LEVEL": "INFO", "REDIS_NAMESPACE": "se"}
#: Amazon MSK: TLS with IAM authentication (SASL OAUTHBEARER, app/events/kafka.py).
KAFKA_ENV = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
KAFKA_DEPLOYED = ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_AWS_REGION")

PROCESSES: tuple[Process, ...] = (
    Process(
        "api", ("gunicorn", "wsgi:app", "--bind", f"0.0.0.0:{API_PORT}", "--workers", "4"),
        cpu=1024, memory=2048, stop_timeout=40, desired=2,
        uses=frozenset({"postgres", "redis"}),
        environment={**BASE_ENV, "DB_POOL_SIZE": "2"},
        # GETs read from the replica once it has replayed the caller's last write.
        secrets=("DATABASE_URL", "DATABASE_REPLICA_URLS", "REDIS_URL", "CREDENTIALS_KEY"),
        port=API_PORT,
    ),
    Process(
        "worker", ("dramatiq", "app.jobs", "--processes", "2", "--threads", "8",
                   "--worker-shutdown-timeout", "110000"),
        cpu=1024, memory=2048, stop_timeout=120, desired=2,
        uses=frozenset({"postgres", "redis", "smtp"}),
        environment={**BASE_ENV, "DB_POOL_SIZE": "8", "MAIL_PORT": "587",
                     "MAIL_SECURITY": "starttls"},
        deployed=("MAIL_SERVER", "MAIL_DEFAULT_SENDER"),
        secrets=("DATABASE_URL", "REDIS_URL", "CREDENTIALS_KEY", "MAIL_USERNAME",
                 "MAIL_PASSWORD"),
    ),
    Process(
        # Two or more: claims are SELECT ... FOR UPDATE SKIP LOCKED, so schedulers share work.
        "scheduler", ("python", "-m", "app.scheduler"),
        cpu=256, memory=512, stop_timeout=30, desired=2,
        uses=frozenset({"postgres", "redis"}),
        environment={**BASE_ENV, "DB_POOL_SIZE": "2"},
    ),
    Process(
        # Two: one is active per outbox shard, the other takes over when it dies.
        "relay", ("python", "-m", "app.events.relay"),
        cpu=512, memory=1024, stop_timeout=30, desired=2,
        uses=frozenset({"postgres", "redis", "kafka-publish"}),
        environment={**BASE_ENV, "DB_POOL_SIZE": "2", **KAFKA_ENV,
                     "KAFKA_TOPIC_PARTITIONS": "3", "KAFKA_REPLICATION_FACTOR": "3"},
        deployed=KAFKA_DEPLOYED,
    ),
    Process(
        # The webhook dispatcher: one Kafka consumer group; Kafka shares the partitions out.
        "webhooks", ("python", "-m", "app.webhooks"),
        cpu=256, memory=512, stop_timeout=30, desired=2,
        uses=frozenset({"postgres", "redis", "kafka-consume"}),
        environment={**BASE_ENV, "DB_POOL_SIZE": "2", **KAFKA_ENV},
        deployed=KAFKA_DEPLOYED,
    ),
    Process(
        "migrate", ("flask", "--app", "wsgi", "db", "upgrade"),
        cpu=256, memory=512, stop_timeout=120, desired=None,
        uses=frozenset({"postgres"}),
        environment={**BASE_ENV, "DB_POOL_SIZE": "1"},
        secrets=("DATABASE_URL", "REDIS_URL", "CREDENTIALS_KEY"),
    ),
)
BY_NAME: Mapping[str, Process] = {process.name: process for process in PROCESSES}
SERVICES = tuple(process for process in PROCESSES if process.desired is not None)


def secret_name(setting: str) -> str:
    """Where Secrets Manager holds a setting: DATABASE_URL -> subscription-engine/database-url."""
    return f"{NAME}/{setting.lower().replace('_', '-')}"


def container_definition(process: Process, image: Any, environment: Mapping[str, Any],
                         secret: Callable[[str], Any], region: Any) -> dict[str, Any]:
    """The task's one container in RegisterTaskDefinition's shape; values are whatever the
    renderer passes (strings for the JSON files, CDK tokens for the stacks)."""
    body: dict[str, Any] = {
        "name": process.name,
        "image": image,
        "essential": True,
        "command": list(process.command),
        "environment": [{"name": k, "value": v} for k, v in environment.items()],
        "secrets": [{"name": name, "valueFrom": secret(name)} for name in process.secrets],
        "readonlyRootFilesystem": True,
        "mountPoints": [{"sourceVolume": SCRATCH[0], "containerPath": SCRATCH[1],
                         "readOnly": False}],
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": LOG_GROUP,
                "awslogs-region": region,
                "awslogs-stream-prefix": process.name,
                "mode": "non-blocking",
                "max-buffer-size": f"{MAX_BUFFER_BYTES}b",
            },
        },
        "stopTimeout": process.stop_timeout,
    }
    if process.port is not None:
        body["portMappings"] = [{"name": "http", "containerPort": process.port,
                                 "protocol": "tcp", "appProtocol": "http"}]
        body["healthCheck"] = HEALTH_CHECK
    return body


# --- ecs-task-defs/*.json: the same tasks in an example account --------------------------

EXAMPLE_ACCOUNT = "123456789012"
EXAMPLE_REGION = "eu-west-1"
EXAMPLE_DEPLOYED = {
    "KAFKA_BOOTSTRAP_SERVERS": ",".join(
        f"b-{n}.{NAME}.abc123.c2.kafka.{EXAMPLE_REGION}.amazonaws.com:9098" for n in (1, 2, 3)),
    "KAFKA_AWS_REGION": EXAMPLE_REGION,
    "MAIL_SERVER": f"email-smtp.{EXAMPLE_REGION}.amazonaws.com",
    "MAIL_DEFAULT_SENDER": "Billing <billing@example.com>",
}


def example_task_definition(process: Process) -> dict[str, Any]:
    """RegisterTaskDefinition input for `process` in the example account (ecs-task-defs/)."""
    environment = {**process.environment,
                   **{name: EXAMPLE_DEPLOYED[name] for name in process.deployed}}
    prefix = f"arn:aws:secretsmanager:{EXAMPLE_REGION}:{EXAMPLE_ACCOUNT}:secret:"
    image = f"{EXAMPLE_ACCOUNT}.dkr.ecr.{EXAMPLE_REGION}.amazonaws.com/{NAME}:0.1.0"
    role = f"arn:aws:iam::{EXAMPLE_ACCOUNT}:role/{NAME}"
    return {
        "family": process.family,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "runtimePlatform": {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"},
        "cpu": str(process.cpu),
        "memory": str(process.memory),
        "executionRoleArn": f"{role}-execution",
        "taskRoleArn": f"{role}-{process.name}",
        "volumes": [{"name": SCRATCH[0]}],
        "containerDefinitions": [container_definition(
            process, image, environment,
            lambda name: f"{prefix}{secret_name(name)}-AbCdEf", EXAMPLE_REGION)],
        "tags": [{"key": "app", "value": NAME}, {"key": "process", "value": process.name}],
    }


def render(process: Process) -> str:
    return json.dumps(example_task_definition(process), indent=2) + "\n"


def main() -> None:
    """Write ecs-task-defs/*.json (`make task-defs`), removing files of processes gone."""
    for path in TASK_DEF_DIR.glob("*.json"):
        if path.stem not in BY_NAME:
            path.unlink()
    for process in PROCESSES:
        (TASK_DEF_DIR / f"{process.name}.json").write_text(render(process))
    print(f"wrote {len(PROCESSES)} task definitions to {TASK_DEF_DIR}", file=sys.stderr)


if __name__ == "__main__":
    main()
