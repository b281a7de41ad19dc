"""The operator CLI: `flask --app wsgi tenants create NAME --json`, and keys kept only as hashes."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from flask import Flask
from sqlalchemy import select

from app.bootstrap import Container, build
from app.config import DEV_CREDENTIALS_KEY, Config
from app.models import ApiKey, Tenant, WebhookEndpoint
from app.models.database import drop_database, ensure_database, migrate
from app.providers.credentials import Sealer
from app.providers.errors import ProviderNotConfigured
from app.services.scope import Scope
from app.services.tenants import create_tenant
from app.services.webhook_endpoints import create_endpoint
from tests.conftest import ROOT, child_env
from tests.integration.checks import stored_text
from tests.support import Api

FLASK = str(Path(sys.executable).parent / "flask")


def test_operators_create_tenants_without_engine_env_but_never_seal_with_the_dev_key(
    config: Config,
) -> None:
    """The contract's first step works in a plain shell beside `make run` (development key,
    no ENGINE_ENV); a command that would seal a secret with that public key still refuses."""
    env = {**child_env(config), "CREDENTIALS_KEY": DEV_CREDENTIALS_KEY}
    env.pop("ENGINE_ENV")
    done = subprocess.run([FLASK, "--app", "wsgi", "tenants", "create", "Plain", "--json"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    tenant_id = json.loads(done.stdout)["tenant_id"]
    sealing = subprocess.run(
        [FLASK, "--app", "wsgi", "providers", "set", tenant_id, "stripe", "--mode", "test"],
        input='{"secret_key": "sk_test_x"}', env=env, cwd=ROOT, capture_output=True,
        text=True, timeout=60, check=False)
    assert sealing.returncode != 0
    assert "ENGINE_ENV=development" in sealing.stderr
    assert "sk_test_x" not in sealing.stderr + sealing.stdout


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



def _cli(app: Flask, *args: str) -> str:
    """Run `flask --app wsgi <args>` in-process; its output, which must be a success."""
    result = app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return str(result.output)


def test_keys_create_list_revoke_as_the_contract_prints_them(app: Flask) -> None:
    api = Api.for_new_tenant(app)
    output = _cli(app, "keys", "create", api.tenant_id, "--mode", "test", "--json")
    created = json.loads(output)
    assert output.strip() == json.dumps(created)
    assert list(created) == ["id", "tenant_id", "livemode", "key", "created_at"]
    assert (created["tenant_id"], created["livemode"]) == (api.tenant_id, False)
    assert re.fullmatch(r"key_[0-9a-z]{26}", created["id"])
    assert re.fullmatch(r"sk_test_[\w-]{20,}", created["key"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created["created_at"])
    live = json.loads(_cli(app, "keys", "create", api.tenant_id, "--mode", "live", "--json"))
    assert live["key"].startswith("sk_live_") and live["livemode"] is True

    # Several keys per mode, each working in its own mode.
    old, new = api.test_key, created["key"]
    customer = api.customer()
    assert api.ok(api.get(f"/customers/{customer['id']}", key=new), 200) == customer
    assert api.customer(key=live["key"])["livemode"] is True

    listed = json.loads(_cli(app, "keys", "list", api.tenant_id, "--json"))
    assert [list(k) for k in listed] == [["id", "livemode", "prefix", "created_at",
                                          "revoked_at"]] * 4
    mine = {k["id"]: k for k in listed}
    assert mine[created["id"]]["prefix"] == new[:12]
    assert mine[live["id"]]["prefix"] == live["key"][:12]
    assert all(k["revoked_at"] is None for k in listed)
    shown = _cli(app, "keys", "list", api.tenant_id)
    for raw in (old, new, live["key"]):
        assert raw[12:] not in shown and raw[12:] not in json.dumps(listed)

    # Rotation: the new key deployed, the old one revoked.
    [old_id] = [k["id"] for k in listed if not k["livemode"] and k["id"] != created["id"]]
    assert _cli(app, "keys", "revoke", old_id).startswith(f"{old_id} revoked at ")
    response = api.get(f"/customers/{customer['id']}", key=old)
    assert response.status_code == 401, response.get_data(as_text=True)
    assert api.ok(api.get(f"/customers/{customer['id']}", key=new), 200) == customer
    first = {k["id"]: k for k in json.loads(_cli(app, "keys", "list", api.tenant_id,
                                                 "--json"))}[old_id]["revoked_at"]
    assert first is not None
    _cli(app, "keys", "revoke", old_id)  # again: nothing changes
    again = {k["id"]: k for k in json.loads(_cli(app, "keys", "list", api.tenant_id,
                                                 "--json"))}[old_id]["revoked_at"]
    assert again == first


def test_keys_commands_refuse_unknown_tenants_and_keys(app: Flask) -> None:
    runner = app.test_cli_runner()
    for args in (["keys", "create", "ten_missing", "--mode", "test"],
                 ["keys", "list", "ten_missing"], ["keys", "revoke", "key_missing"],
                 ["keys", "create", "ten_missing", "--mode", "staging"]):
        result = runner.invoke(args=args)
        assert result.exit_code == 2, (args, result.output)


def test_credentials_rotate_reseals_every_stored_secret_under_the_newest_key(
    config: Config,
) -> None:
    """NEW,OLD in CREDENTIALS_KEY, `credentials rotate`, then NEW alone opens everything."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    own = replace(config, database_url=f"{config.database_url}_{uuid.uuid4().hex[:8]}",
                  credentials_key=old)
    ensure_database(own.database_url)
    try:
        migrate(own.database_url)
        before = build(own)
        with before.uow() as uow:
            tenant_id = create_tenant(uow, "Rotating").tenant_id
            uow.commit()
        before.credentials.save(tenant_id, "stripe", livemode=False,
                                values={"secret_key": "sk_test_rotating"})
        with before.uow() as uow:
            endpoint, secret = create_endpoint(
                uow, Scope(tenant_id, livemode=False), before.sealer,
                url="http://example.com/hook", event_types=["*"], description=None,
                allow_private=True,
            )
            uow.commit()
        before.engine.dispose()
        done = subprocess.run(
            [FLASK, "--app", "wsgi", "credentials", "rotate"],
            env=child_env(own, CREDENTIALS_KEY=f"{new},{old}"), cwd=ROOT,
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"resealed": 2}
        assert new not in done.stdout + done.stderr and old not in done.stdout + done.stderr

        after = build(replace(own, credentials_key=new))  # the old key retired
        stored = after.credentials.load(tenant_id, "stripe")
        assert stored is not None and stored.by_mode[False] == {"secret_key": "sk_test_rotating"}
        with after.session_factory() as session:
            sealed = session.get_one(WebhookEndpoint, endpoint.id).secret_sealed
        assert after.sealer.open(sealed)["secret"] == secret
        with pytest.raises(ProviderNotConfigured):
            Sealer(old).open(sealed)
        after.engine.dispose()
    finally:
        drop_database(own.database_url)
