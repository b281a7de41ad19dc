"""Subscriptions: create, read, update, cancel, pause, resume, change plan."""

from __future__ import annotations

from flask import Blueprint

from app import render
from app.api import context, schemas
from app.api.responses import ViewResult, page
from app.api.routing import Api
from app.services import queries, subscriptions

api = Api(Blueprint("subscriptions", __name__), tag="Subscriptions")


@api.route(
    "POST",
    "/subscriptions",
    summary="Subscribe a customer to a plan",
    body=schemas.SubscriptionRequest,
    response=schemas.Subscription,
    status=201,
)
def create_subscription(body: schemas.SubscriptionRequest) -> ViewResult:
    sub = subscriptions.create_subscription(
        context.uow(), context.scope(), **body.model_dump()
    )
    return render.subscription(sub), 201


@api.route(
    "GET", "/subscriptions/<sub_id>", summary="Get a subscription", response=schemas.Subscription
)
def get_subscription(sub_id: str) -> ViewResult:
    return queries.subscription(context.reader(), context.scope(), sub_id), 200


@api.route(
    "GET",
    "/subscriptions",
    summary="List subscriptions",
    query=schemas.SubscriptionListQuery,
    response=schemas.Subscription,
    list_response=True,
)
def list_subscriptions(query: schemas.SubscriptionListQuery) -> ViewResult:
    filters = query.model_dump(exclude_none=True, exclude={"limit", "starting_after"})
    return page(*queries.subscriptions(context.reader(), context.scope(), limit=query.limit,
                                       starting_after=query.starting_after, filters=filters))


@api.route(
    "POST",
    "/subscriptions/<sub_id>",
    summary="Update the payment method or metadata",
    body=schemas.SubscriptionUpdateRequest,
    response=schemas.Subscription,
)
def update_subscription(sub_id: str, body: schemas.SubscriptionUpdateRequest) -> ViewResult:
    sub = subscriptions.update(
        context.uow(), context.scope(), sub_id,
        payment_method_id=body.payment_method_id, metadata_changes=body.metadata,
    )
    return render.subscription(sub), 200


@api.route(
    "POST",
    "/subscriptions/<sub_id>/cancel",
    summary="Cancel now or at period end",
    body=schemas.CancelRequest,
    response=schemas.Subscription,
)
def cancel(sub_id: str, body: schemas.CancelRequest) -> ViewResult:
    sub = subscriptions.cancel(
        context.uow(), context.scope(), sub_id, at_period_end=body.at_period_end
    )
    return render.subscription(sub), 200


@api.route(
    "POST", "/subscriptions/<sub_id>/pause", summary="Pause charging", response=schemas.Subscription
)
def pause(sub_id: str) -> ViewResult:
    return render.subscription(subscriptions.pause(context.uow(), context.scope(), sub_id)), 200


@api.route(
    "POST",
    "/subscriptions/<sub_id>/resume",
    summary="Resume: a new period starts now and is charged at once",
    response=schemas.Subscription,
)
def resume(sub_id: str) -> ViewResult:
    sub = subscriptions.resume(context.uow(), context.scope(), sub_id)
    return render.subscription(sub), 200


@api.route(
    "POST",
    "/subscriptions/<sub_id>/change-plan",
    summary="Change plan at once",
    body=schemas.ChangePlanRequest,
    response=schemas.Subscription,
)
def change_plan(sub_id: str, body: schemas.ChangePlanRequest) -> ViewResult:
    sub = subscriptions.change_plan(
        context.uow(),
        context.scope(),
        sub_id,
        plan_id=body.plan_id,
        proration_behavior=body.proration,
    )
    return render.subscription(sub), 200
