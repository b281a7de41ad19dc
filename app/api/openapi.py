"""The OpenAPI 3.1 document, built from the same pydantic schemas that validate requests."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.api import schemas
from app.api.idempotency import HEADER, KEY_PATTERN
from app.api.routing import Endpoint

REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"<(?:\w+:)?(\w+)>")
_ERRORS = {
    400: "Malformed JSON, or a missing or malformed Idempotency-Key",
    401: "Missing, unknown or revoked API key",
    403: "A live key on a test-only resource (test clocks, the sandbox)",
    404: "Unknown id, or another tenant's or mode's",
    409: "State conflict (code says which), or a request with this Idempotency-Key still "
         "in flight (idempotency_key_in_use)",
    413: "Body over 64 KiB",
    415: "Body is not JSON",
    422: "Validation failed (errors lists every bad field), or this Idempotency-Key was used "
         "with another request (idempotency_key_reuse)",
    429: "Rate limited (Retry-After, RateLimit-* headers)",
    503: "A dependency is down; nothing was written",
}
#: What a public endpoint (no API key: provider webhooks) can answer besides success.
_PUBLIC_ERRORS = {
    400: "Bad or missing signature; nothing changed",
    413: _ERRORS[413],
    429: _ERRORS[429],
    503: "The provider could not be asked; deliver the event again later",
}


def build(endpoints: list[Endpoint], version: str) -> dict[str, Any]:
    """The whole document for these endpoints."""
    models = {m for e in endpoints for m in (e.body, e.response) if m is not None}
    models.add(schemas.ProblemDetail)
    _, defs = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)], ref_template=REF
    )
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        path = _PATH_PARAM.sub(r"{\1}", endpoint.rule)
        paths.setdefault(path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Subscription Engine API", "version": version},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
    }


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
        "parameters": _path_params(endpoint.rule) + _query_params(endpoint.query),
        "responses": {str(endpoint.status): _success(endpoint)},
    }
    if endpoint.idempotency is not None:
        operation["parameters"].append(
            {
                "name": HEADER,
                "in": "header",
                "required": endpoint.idempotency == "required",
                "description": "The same key and body within 24 hours replay the first answer "
                "(Idempotent-Replayed: true).",
                "schema": {"type": "string", "pattern": KEY_PATTERN},
            }
        )
    operation["parameters"] += [
        {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
        for name in endpoint.headers
    ]
    if endpoint.body is not None:
        operation["requestBody"] = {
            # A body whose every field is optional may be left out: it is taken as {}.
            "required": bool(endpoint.body.model_json_schema().get("required")),
            "content": {"application/json": {"schema": {"$ref": _ref(endpoint.body)}}},
        }
    if endpoint.public:
        operation["security"] = []  # no API key: the provider's signature is checked instead
    for status, description in (_PUBLIC_ERRORS if endpoint.public else _ERRORS).items():
        operation["responses"][str(status)] = {
            "description": description,
            "content": {
                "application/problem+json": {"schema": {"$ref": _ref(schemas.ProblemDetail)}}
            },
        }
    return operation


def _success(endpoint: Endpoint) -> dict[str, Any]:
    if endpoint.response is None:
        return {"description": "OK"}
    schema: dict[str, Any] = {"$ref": _ref(endpoint.response)}
    if endpoint.list_response:
        schema = {
            "type": "object",
            "required": ["object", "data", "has_more"],
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": schema},
                "has_more": {"type": "boolean"},
            },
        }
    return {"description": endpoint.summary, "content": {"application/json": {"schema": schema}}}


def _path_params(rule: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(rule)
    ]


def _query_params(model: type[BaseModel] | None) -> list[dict[str, Any]]:
    if model is None:
        return []
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]


def _ref(model: type[BaseModel]) -> str:
    return REF.format(model=model.__name__)
