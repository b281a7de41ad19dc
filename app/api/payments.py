"""Payments: the /pay front door, reading payments, dunning retries, refunds."""

from __future__ import annotations

from flask import Blueprint

from app import render
from app.api import context, schemas
from app.api.responses import ViewResult, page
from app.api.routing import Api
from app.services import payments, queries, subscriptions

api = Api(Blueprint("payments", __name__), tag="Payments")


@api.route(
    "POST",
    "/pay",
    summary="Take a one-time payment",
    body=schemas.PayRequest,
    response=schemas.Payment,
    status=202,
    idempotency="required",
)
def pay(body: schemas.PayRequest) -> ViewResult:
    payment = payments.create_payment(context.uow(), context.scope(), **body.model_dump())
    return render.payment(payment), 202, {"Location": f"/payments/{payment.id}"}


@api.route("GET", "/payments/<payment_id>", summary="Get a payment", response=schemas.Payment)
def get_payment(payment_id: str) -> ViewResult:
    return queries.payment(context.reader(), context.scope(), payment_id), 200


@api.route(
    "GET",
    "/payments",
    summary="List payments",
    query=schemas.PaymentListQuery,
    response=schemas.Payment,
    list_response=True,
)
def list_payments(query: schemas.PaymentListQuery) -> ViewResult:
    filters = query.model_dump(exclude_none=True, exclude={"limit", "starting_after"})
    return page(*queries.payments(context.reader(), context.scope(), limit=query.limit,
                                  starting_after=query.starting_after, filters=filters))


@api.route(
    "POST",
    "/payments/<payment_id>/refunds",
    summary="Refund a payment",
    body=schemas.RefundRequest,
    response=schemas.Refund,
    status=201,
)
def refund(payment_id: str, body: schemas.RefundRequest) -> ViewResult:
    created = payments.create_refund(context.uow(), context.scope(), payment_id, body.amount)
    return render.refund(created), 201


@api.route(
    "POST",
    "/payments/<payment_id>/retry",
    summary="Retry a payment in dunning now (counts as one of its retries)",
    response=schemas.Payment,
    status=202,
)
def retry(payment_id: str) -> ViewResult:
    payment = subscriptions.retry_payment(context.uow(), context.scope(), payment_id)
    return render.payment(payment), 202, {"Location": f"/payments/{payment.id}"}


@api.route("GET", "/refunds/<refund_id>", summary="Get a refund", response=schemas.Refund)
def get_refund(refund_id: str) -> ViewResult:
    return queries.refund(context.reader(), context.scope(), refund_id), 200


@api.route(
    "GET",
    "/payments/<payment_id>/refunds",
    summary="List a payment's refunds",
    query=schemas.ListQuery,
    response=schemas.Refund,
    list_response=True,
)
def list_refunds(payment_id: str, query: schemas.ListQuery) -> ViewResult:
    return page(*queries.refunds(context.reader(), context.scope(), payment_id,
                                 limit=query.limit, starting_after=query.starting_after))
