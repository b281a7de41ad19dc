"""Test clocks (test mode only)."""

from __future__ import annotations

from flask import Blueprint

from app import render
from app.api import context, schemas
from app.api.responses import ViewResult
from app.api.routing import Api
from app.services import clocks, queries

api = Api(Blueprint("test_clocks", __name__), tag="Test clocks")


@api.route(
    "POST",
    "/test-clocks",
    summary="Create a test clock",
    body=schemas.TestClockRequest,
    response=schemas.TestClock,
    status=201,
)
def create_clock(body: schemas.TestClockRequest) -> ViewResult:
    return render.test_clock(
        clocks.create_clock(context.uow(), context.scope(), body.frozen_time)
    ), 201


@api.route("GET", "/test-clocks/<clock_id>", summary="Get a test clock", response=schemas.TestClock)
def get_clock(clock_id: str) -> ViewResult:
    return queries.test_clock(context.reader(), context.scope(), clock_id), 200


@api.route(
    "POST",
    "/test-clocks/<clock_id>/advance",
    summary="Advance a test clock; everything due runs in order",
    body=schemas.TestClockRequest,
    response=schemas.TestClock,
    status=202,
)
def advance_clock(clock_id: str, body: schemas.TestClockRequest) -> ViewResult:
    clock = clocks.start_advance(context.uow(), context.scope(), clock_id, body.frozen_time)
    return render.test_clock(clock), 202
