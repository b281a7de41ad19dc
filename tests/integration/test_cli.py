"""The operator CLI: `flask --app wsgi tenants create NAME --json`, and keys kept only as hashes."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

from flask import Flask
from sqlalchemy import select

from app.bootstrap import Container
from app.config import Config
from app.models import ApiKey, Tenant
from tests.conftest import ROOT, child_env
from tests.integration.checks import stored_text
from tests.support import Api

FLASK = str(Path(sys.executable).parent / "flask")


def test_tenants_create_prints_working_keys_that_are_stored_only_as_hashes(
    app: Flask, config: Config, container: Container
) -> None:
    done = subprocess.run(
        [FLASK, "--app", "wsgi", "tenants", "create", "Acme Inc", "--json"],
        env=child_env(config), cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert done.stdout.strip() == json.dumps(printed)
    assert list(printed) == ["tenant_id", "test_key", "live_key"]
    assert re.fullmatch(r"ten_[0-9a-z]{26}", printed["tenant_id"])
    assert re.fullmatch(r"sk_test_[\w-]{20,}", printed["test_key"])
    assert re.fullmatch(r"sk_live_[\w-]{20,}", printed["live_key"])
    for key in ("test_key", "live_key"):
        assert printed[key] not in done.stderr

    api = Api(app.test_client(), printed["tenant_id"], printed["test_key"], printed["live_key"])
    test_customer = api.customer()
    live_customer = api.customer(key=api.live_key)
    assert (test_customer["livemode"], live_customer["livemode"]) == (False, True)

    with container.session_factory() as session:
        tenant = session.get_one(Tenant, printed["tenant_id"])
        assert tenant.name == "Acme Inc"
        hashes = set(session.scalars(
            select(ApiKey.key_hash).where(ApiKey.tenant_id == printed["tenant_id"])))
    expected = {hashlib.sha256(printed[k].encode()).hexdigest() for k in ("test_key", "live_key")}
    assert hashes == expected
    everything = stored_text(container)
    for key in ("test_key", "live_key"):
        secret = printed[key].split("_", 2)[2]
        assert secret not in everything

