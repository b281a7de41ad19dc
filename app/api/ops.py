"""Operations: health, readiness, metrics, the OpenAPI document and its rendering."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app
from flask_swagger_ui import get_swaggerui_blueprint
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.api import context
from app.api.errors import problem_response
from app.telemetry import metrics as telemetry

blueprint = Blueprint("ops", __name__)
# /docs: Swagger UI 5 (it reads OpenAPI 3.1), served offline from flask-swagger-ui's copy.
blueprint.register_blueprint(get_swaggerui_blueprint(
    "/docs", "/openapi.json", config={"app_name": "Subscription Engine API"}))


@blueprint.get("/healthz")
def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@blueprint.get("/readyz")
def readyz() -> Any:
    failing = [
        name for name, check in (("postgresql", _check_db), ("redis", _check_redis)) if not check()
    ]
    if failing:
        return problem_response(
            503,
            "not_ready",
            f"Not ready: {', '.join(failing)} unavailable.",
            errors=[{"field": name, "message": "unavailable"} for name in failing],
        )
    return {"status": "ok", "checks": {"postgresql": "ok", "redis": "ok"}}


@blueprint.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(telemetry.registry()), mimetype=CONTENT_TYPE_LATEST)


@blueprint.get("/docs")
def docs() -> Any:
    """The UI at /docs itself, as at /docs/ (no redirect): the same page."""
    return current_app.view_functions["ops.swagger_ui.show"]()


@blueprint.get("/openapi.json")
def openapi() -> dict[str, Any]:
    document: dict[str, Any] = current_app.extensions["openapi"]
    return document


def _check_db() -> bool:
    try:
        with context.container().engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means "not ready"
        return False


def _check_redis() -> bool:
    try:
        return bool(context.container().redis.ping())
    except Exception:  # noqa: BLE001 - any failure means "not ready"
        return False
