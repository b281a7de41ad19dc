"""`make run` gives each process fleet its own Prometheus directory and metrics port."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import run


def test_each_process_has_its_own_prometheus_directory_and_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    names = ("api", "worker", "scheduler", "relay", "webhooks")
    envs = {name: run.process_env(name) for name in names}
    directories = {env["PROMETHEUS_MULTIPROC_DIR"] for env in envs.values()}
    assert len(directories) == len(names)
    assert all(Path(d).is_dir() and Path(d).is_relative_to(tmp_path) for d in directories)
    ports = {name: envs[name]["METRICS_PORT"] for name in run.METRICS_PORTS}
    assert set(ports) == set(names) - {"api"}  # the API serves /metrics on its own port
    assert len(set(ports.values())) == len(ports)
