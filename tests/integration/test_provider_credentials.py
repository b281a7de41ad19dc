"""Per-tenant provider credentials: set with the operator CLI, sealed at rest with Fernet,
never logged or shown, resolved per tenant and mode, re-read when they change."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from flask import Flask
from sqlalchemy import select

from app.api import create_app
from app.bootstrap import Container
from app.config import Config
from app.models import ProviderCredential
from app.providers.credentials import Sealer
from app.providers.errors import ProviderNotConfigured
from tests.conftest import ROOT, child_env
from tests.integration.checks import assert_problem, stored_text
from tests.sim.fixtures import TOKENS, Merchant, Sims
from tests.support import Api

FLASK = str(Path(sys.executable).parent / "flask")


def secrets_of(merchant: Merchant) -> list[str]:
    return [merchant.stripe_key, merchant.stripe_webhook_secret, merchant.paypal_client[1]]


def test_credentials_are_sealed_at_rest_and_never_shown(
    merchant: Merchant, sim_app: Flask, sim_container: Container
) -> None:
    with sim_container.session_factory() as session:
        rows = session.scalars(select(ProviderCredential).where(
            ProviderCredential.tenant_id == merchant.tenant_id)).all()
    assert {(r.provider, r.livemode) for r in rows} == {("stripe", False), ("paypal", False)}
    stored = stored_text(sim_container)
    for secret in secrets_of(merchant):
        assert secret not in stored and secret.encode().hex() not in stored
    opened = Sealer(sim_container.config.credentials_key).open(
        next(r.sealed for r in rows if r.provider == "stripe"))
    assert opened["secret_key"] == merchant.stripe_key

    listed = sim_app.test_cli_runner().invoke(args=["providers", "list", merchant.tenant_id])
    assert listed.output.split("\n")[:2] == ["paypal test", "stripe test"]
    for secret in secrets_of(merchant):
        assert secret not in listed.output
    assert merchant.stripe_key not in repr(sim_container.providers.get("stripe",
                                                                      merchant.tenant_id))


def test_secrets_never_reach_the_logs(
    merchant: Merchant, sims: Sims, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        payment = merchant.charge(merchant.pay("stripe", TOKENS["stripe"]["ok"])["id"])
        merchant.charge(merchant.pay("paypal", TOKENS["paypal"]["ok"])["id"])
        sims.paypal.inject("500", "/v2/checkout/orders/*/capture")
        merchant.charge(merchant.pay("paypal", TOKENS["paypal"]["ok"])["id"])
    assert payment["status"] == "succeeded"
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert logged
    for secret in secrets_of(merchant):
        assert secret not in logged


@pytest.mark.parametrize(("stdin", "why"), [
    ('{"webhook_secret": "whsec_x"}', "missing"),
    ('{"secret_key": "sk_test_x", "password": "x"}', "unknown"),
    ("not json", "JSON object"),
    ('["sk_test_x"]', "JSON object"),
])
def test_incomplete_credentials_are_refused_and_nothing_is_saved(
    sim_app: Flask, sim_container: Container, stdin: str, why: str
) -> None:
    api = Api.for_new_tenant(sim_app)
    result = sim_app.test_cli_runner().invoke(
        args=["providers", "set", api.tenant_id, "stripe"], input=stdin)
    assert result.exit_code != 0 and why in result.output
    assert sim_container.credentials.configured(api.tenant_id) == []


def test_a_tenant_without_credentials_cannot_attach_and_an_unknown_tenant_is_refused(
    sim_app: Flask, merchant: Merchant
) -> None:
    api = Api.for_new_tenant(sim_app)
    customer = api.customer()
    for provider, token in (("stripe", "pm_card_visa"), ("paypal", "vault_ok")):
        response = api.post(f"/customers/{customer['id']}/payment-methods",
                            {"provider": provider, "token": token})
        problem = assert_problem(response, 422, "provider_not_configured")
        assert problem["errors"][0]["field"] == "provider"
    # Test credentials do not serve live keys.
    live_customer = merchant.api.customer(key=merchant.api.live_key)
    response = merchant.api.post(f"/customers/{live_customer['id']}/payment-methods",
                                 {"provider": "stripe", "token": "pm_card_visa"},
                                 key=merchant.api.live_key)
    assert_problem(response, 422, "provider_not_configured")
    result = sim_app.test_cli_runner().invoke(
        args=["providers", "set", "ten_nobody", "stripe"], input='{"secret_key": "sk_x"}')
    assert result.exit_code != 0 and "no tenant" in result.output


def test_live_credentials_serve_live_keys(
    merchant: Merchant, sims: Sims, sim_app: Flask
) -> None:
    live_key = sims.stripe.new_key(livemode=True)
    result = sim_app.test_cli_runner().invoke(
        args=["providers", "set", merchant.tenant_id, "stripe", "--mode", "live"],
        input=json.dumps({"secret_key": live_key}))
    assert result.exit_code == 0, result.output
    customer = merchant.api.customer(key=merchant.api.live_key)
    response = merchant.api.post(f"/customers/{customer['id']}/payment-methods",
                                 {"provider": "stripe", "token": "pm_card_visa"},
                                 key=merchant.api.live_key)
    assert response.status_code == 201, response.get_data(as_text=True)
    used = sims.stripe.requests_to("/v1/payment_methods/*")[-1]
    assert used.headers["authorization"] == f"Bearer {live_key}"


def test_new_credentials_take_effect_at_once(
    merchant: Merchant, sims: Sims, sim_app: Flask
) -> None:
    assert merchant.method("stripe", "pm_card_visa")
    rotated = sims.stripe.new_key()
    result = sim_app.test_cli_runner().invoke(
        args=["providers", "set", merchant.tenant_id, "stripe"],
        input=json.dumps({"secret_key": rotated}))
    assert result.exit_code == 0, result.output
    assert merchant.method("stripe", "pm_card_visa")
    used = sims.stripe.requests_to("/v1/payment_methods/*")[-1]
    assert used.headers["authorization"] == f"Bearer {rotated}"


def test_the_encryption_key_rotates_and_a_wrong_key_opens_nothing(
    merchant: Merchant, sim_config: Config
) -> None:
    old = sim_config.credentials_key
    new = Fernet.generate_key().decode()
    rotating = create_app(dataclasses.replace(sim_config, credentials_key=f"{new},{old}"))
    container: Container = rotating.extensions["container"]
    assert container.providers.get("stripe", merchant.tenant_id)  # old rows still open
    container.credentials.save(merchant.tenant_id, "stripe", livemode=False,
                               values={"secret_key": merchant.stripe_key})
    stranger = create_app(dataclasses.replace(sim_config,
                                              credentials_key=Fernet.generate_key().decode()))
    with pytest.raises(ProviderNotConfigured, match="cannot be decrypted"):
        stranger.extensions["container"].providers.get("stripe", merchant.tenant_id)
    only_new = create_app(dataclasses.replace(sim_config, credentials_key=new))
    assert only_new.extensions["container"].providers.get("stripe", merchant.tenant_id)


def test_the_real_cli_reads_credentials_from_stdin(
    sim_app: Flask, sim_config: Config, sims: Sims
) -> None:
    api = Api.for_new_tenant(sim_app)
    key = sims.stripe.new_key()
    done = subprocess.run(
        [FLASK, "--app", "wsgi", "providers", "set", api.tenant_id, "stripe"],
        input=json.dumps({"secret_key": key, "webhook_secret": "whsec_cli"}),
        env=child_env(sim_config), cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert key not in done.stdout + done.stderr
    customer = api.customer()
    response = api.post(f"/customers/{customer['id']}/payment-methods",
                        {"provider": "stripe", "token": "pm_card_visa"})
    assert api.ok(response, 201)["brand"] == "visa"
