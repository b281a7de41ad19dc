"""Webhooks out: merchants' endpoints and their deliveries."""

from __future__ import annotations

from flask import Blueprint

from app import render
from app.api import context, schemas
from app.api.responses import ViewResult, page
from app.api.routing import Api
from app.services import queries, webhook_endpoints

api = Api(Blueprint("webhook_endpoints", __name__), tag="Webhooks out")


@api.route(
    "POST",
    "/webhook-endpoints",
    summary="Create a webhook endpoint (its secret is shown only in this answer)",
    body=schemas.WebhookEndpointRequest,
    response=schemas.WebhookEndpointCreated,
    status=201,
)
def create_endpoint(body: schemas.WebhookEndpointRequest) -> ViewResult:
    c = context.container()
    endpoint, secret = webhook_endpoints.create_endpoint(
        context.uow(), context.scope(), c.sealer, url=body.url, event_types=body.event_types,
        description=body.description, allow_private=c.config.webhooks_allow_private_networks)
    return {**render.webhook_endpoint(endpoint), "secret": secret}, 201


@api.route(
    "GET",
    "/webhook-endpoints",
    summary="List webhook endpoints",
    query=schemas.ListQuery,
    response=schemas.WebhookEndpoint,
    list_response=True,
)
def list_endpoints(query: schemas.ListQuery) -> ViewResult:
    return page(*queries.webhook_endpoints(context.reader(), context.scope(), limit=query.limit,
                                           starting_after=query.starting_after))


@api.route("GET", "/webhook-endpoints/<endpoint_id>", summary="Get a webhook endpoint",
           response=schemas.WebhookEndpoint)
def get_endpoint(endpoint_id: str) -> ViewResult:
    return queries.webhook_endpoint(context.reader(), context.scope(), endpoint_id), 200


@api.route("DELETE", "/webhook-endpoints/<endpoint_id>", summary="Delete a webhook endpoint",
           response=schemas.Deleted)
def delete_endpoint(endpoint_id: str) -> ViewResult:
    webhook_endpoints.delete_endpoint(context.uow(), context.scope(), endpoint_id)
    return {"id": endpoint_id, "object": "webhook_endpoint", "deleted": True}, 200


@api.route(
    "GET",
    "/webhook-endpoints/<endpoint_id>/deliveries",
    summary="List an endpoint's deliveries",
    query=schemas.ListQuery,
    response=schemas.WebhookDelivery,
    list_response=True,
)
def list_deliveries(endpoint_id: str, query: schemas.ListQuery) -> ViewResult:
    return page(*queries.webhook_deliveries(context.reader(), context.scope(), endpoint_id,
                                            limit=query.limit,
                                            starting_after=query.starting_after))


@api.route(
    "POST",
    "/webhook-deliveries/<delivery_id>/retry",
    summary="Send a delivery again now",
    response=schemas.WebhookDelivery,
    status=202,
)
def retry_delivery(delivery_id: str) -> ViewResult:
    delivery = webhook_endpoints.retry_delivery(context.uow(), context.scope(), delivery_id)
    return render.webhook_delivery(delivery), 202
