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
