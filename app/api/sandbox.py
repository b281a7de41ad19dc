"""The sandbox provider's ledger, for anyone to check that nothing was charged twice."""

from __future__ import annotations

from flask import Blueprint

from app.api import context, schemas
from app.api.responses import ViewResult, page
from app.api.routing import Api
from app.services import queries

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
    return page(queries.sandbox_charges(context.reader(), context.scope(), query.payment_id),
                False)
