"""Secrets in the settings: never in repr, and the development credentials key refused
outside ENGINE_ENV=development."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cryptography.fernet import Fernet

from app.bootstrap import build
from app.config import DEV_CREDENTIALS_KEY, Config
from tests.conftest import ROOT

KEY = Fernet.generate_key().decode()


def test_repr_shows_no_secret() -> None:
    config = Config(
        credentials_key=f"{KEY},{DEV_CREDENTIALS_KEY}", mail_password="hunter2-mail",
        database_url="postgresql+psycopg2://engine:pg-s3cret@db.internal:5432/se",
        redis_url="rediss://:redis-t0ken@cache.internal:6379/0",
    )
    shown = repr(config)
    for secret in (KEY, DEV_CREDENTIALS_KEY, "hunter2-mail", "pg-s3cret", "redis-t0ken"):
        assert secret not in shown
    assert "db.internal:5432/se" in shown and "mail_port=1025" in shown  # the rest is there
    assert str(config) == shown


def test_the_development_key_is_refused_outside_development() -> None:
    with pytest.raises(ValueError, match="ENGINE_ENV=development"):
        build(Config()).sealer  # noqa: B018
    assert build(Config(engine_env="development")).sealer is not None
    assert build(Config(credentials_key=KEY)).sealer is not None
    # Retiring the development key: it may still open, never seal.
    assert build(Config(credentials_key=f"{KEY},{DEV_CREDENTIALS_KEY}")).sealer is not None


@pytest.mark.parametrize("entry", ["import wsgi", "import app.jobs"])
def test_the_api_and_the_workers_refuse_to_start_with_the_development_key(entry: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "ENGINE_ENV": "production",
           "REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run([sys.executable, "-c", entry], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "ENGINE_ENV=development" in done.stderr
    assert DEV_CREDENTIALS_KEY not in done.stderr
