"""The sandbox provider's ledger, for anyone to check that nothing was charged twice."""

from __future__ import annotations

from flask import Blueprint

from app import render
from app.api import context, schemas
from app.api.responses import ViewResult, page
from app.api.routing import Api
from app.providers.sandbox import SandboxProvider
from app.services.errors import Forbidden

api = Api(Blueprint("sandbox", __name__), tag="Sandbox")


@api.route(
    "GET",
    "/sandbox/charges",
    summary="List the charges the sandbox accepted",
    query=schemas.SandboxChargesQuery,
    response=schemas.SandboxCharge,
    list_response=True,
)
def sandbox_charges(query: schemas.SandboxChargesQuery) -> ViewResult:
    scope = context.scope()
    if scope.livemode:
        raise Forbidden("The sandbox is available in test mode only.")
    sandbox = context.container().providers.get("sandbox")
    assert isinstance(sandbox, SandboxProvider)
    charges = sandbox.charges_for(scope.tenant_id, query.payment_id)
    return page(
        [
            {
                "id": c.id,
                "payment_id": c.payment_id,
                "idempotency_key": c.idempotency_key,
                "amount": c.amount,
                "currency": c.currency,
                "created_at": render.timestamp(c.created_at),
            }
            for c in charges
        ],
        False,
    )
