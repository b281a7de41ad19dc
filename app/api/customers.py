"""Customers and their payment methods."""

from __future__ import annotations

from flask import Blueprint

from app import render
from app.api import context, schemas
from app.api.responses import ViewResult, page
from app.api.routing import Api
from app.services import customers, queries

api = Api(Blueprint("customers", __name__), tag="Customers")


@api.route(
    "POST",
    "/customers",
    summary="Create a customer",
    body=schemas.CustomerRequest,
    response=schemas.Customer,
    status=201,
)
def create_customer(body: schemas.CustomerRequest) -> ViewResult:
    created = customers.create_customer(context.uow(), context.scope(), **body.model_dump())
    return render.customer(created), 201


@api.route("GET", "/customers/<customer_id>", summary="Get a customer", response=schemas.Customer)
def get_customer(customer_id: str) -> ViewResult:
    return queries.customer(context.reader(), context.scope(), customer_id), 200


@api.route(
    "GET",
    "/customers",
    summary="List customers",
    query=schemas.ListQuery,
    response=schemas.Customer,
    list_response=True,
)
def list_customers(query: schemas.ListQuery) -> ViewResult:
    return page(*queries.customers(context.reader(), context.scope(), limit=query.limit,
                                   starting_after=query.starting_after))


@api.route(
    "POST",
    "/customers/<customer_id>/payment-methods",
    summary="Attach a payment method (a provider token)",
    body=schemas.PaymentMethodRequest,
    response=schemas.PaymentMethod,
    status=201,
)
def attach_payment_method(customer_id: str, body: schemas.PaymentMethodRequest) -> ViewResult:
    method = customers.attach_payment_method(
        context.uow(),
        context.container().providers,
        context.scope(),
        customer_id,
        provider=body.provider,
        token=body.token,
    )
    return render.payment_method(method), 201
