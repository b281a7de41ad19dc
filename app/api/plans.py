"""Plans."""

from __future__ import annotations

from flask import Blueprint

from app import render
from app.api import context, schemas
from app.api.responses import ViewResult, page
from app.api.routing import Api
from app.services import plans, queries

api = Api(Blueprint("plans", __name__), tag="Plans")


@api.route(
    "POST",
    "/plans",
    summary="Create a plan",
    body=schemas.PlanRequest,
    response=schemas.Plan,
    status=201,
)
def create_plan(body: schemas.PlanRequest) -> ViewResult:
    return render.plan(plans.create_plan(context.uow(), context.scope(), **body.model_dump())), 201


@api.route("GET", "/plans/<plan_id>", summary="Get a plan", response=schemas.Plan)
def get_plan(plan_id: str) -> ViewResult:
    return queries.plan(context.reader(), context.scope(), plan_id), 200


@api.route(
    "GET",
    "/plans",
    summary="List plans",
    query=schemas.ListQuery,
    response=schemas.Plan,
    list_response=True,
)
def list_plans(query: schemas.ListQuery) -> ViewResult:
    return page(*queries.plans(context.reader(), context.scope(), limit=query.limit,
                               starting_after=query.starting_after))


@api.route(
    "POST",
    "/plans/<plan_id>/archive",
    summary="Archive a plan (no new subscriptions)",
    response=schemas.Plan,
)
def archive_plan(plan_id: str) -> ViewResult:
    archived = plans.archive_plan(
        context.uow(), context.container().cache, context.scope(), plan_id
    )
    return render.plan(archived), 200
