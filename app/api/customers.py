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


@api.route(
    "POST",
    "/customers/<customer_id>",
    summary="Update a customer (metadata merged)",
    body=schemas.CustomerUpdateRequest,
    response=schemas.Customer,
)
def update_customer(customer_id: str, body: schemas.CustomerUpdateRequest) -> ViewResult:
    changes = body.model_dump(include=body.model_fields_set)
    updated = customers.update_customer(context.uow(), context.scope(), customer_id, changes)
    return render.customer(updated), 200


@api.route(
    "DELETE",
    "/customers/<customer_id>",
    summary="Delete a customer: payment methods detached, email and name erased",
    response=schemas.Deleted,
)
def delete_customer(customer_id: str) -> ViewResult:
    container = context.container()
    deleted = customers.delete_customer(
        context.uow(), container.providers, context.scope(), customer_id
    )
    return render.deleted(deleted), 200


@api.route(
    "GET",
    "/customers/<customer_id>/payment-methods",
    summary="List a customer's payment methods",
    query=schemas.ListQuery,
    response=schemas.PaymentMethod,
    list_response=True,
)
def list_payment_methods(customer_id: str, query: schemas.ListQuery) -> ViewResult:
    return page(*queries.payment_methods(context.reader(), context.scope(), customer_id,
                                         limit=query.limit, starting_after=query.starting_after))


@api.route(
    "DELETE",
    "/customers/<customer_id>/payment-methods/<method_id>",
    summary="Detach a payment method (at the provider too)",
    response=schemas.Deleted,
)
def detach_payment_method(customer_id: str, method_id: str) -> ViewResult:
    container = context.container()
    detached = customers.detach_payment_method(
        context.uow(), container.providers, context.scope(), customer_id, method_id
    )
    return render.deleted(detached), 200

