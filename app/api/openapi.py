"""The OpenAPI 3.1 document, built from the same pydantic schemas that validate requests."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.api import schemas
from app.api.routing import Endpoint

REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"<(?:\w+:)?(\w+)>")
_ERRORS = {
    400: "Malformed request",
    401: "Missing or unknown API key",
    404: "Unknown id (or another tenant's)",
    409: "State conflict or key in flight",
    413: "Body over 64 KiB",
    415: "Body is not JSON",
    422: "Validation failed",
    429: "Rate limited",
    503: "A dependency is down; nothing was written",
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
                "name": "Idempotency-Key",
                "in": "header",
                "required": endpoint.idempotency == "required",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        )
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": _ref(endpoint.body)}}},
        }
    for status, description in _ERRORS.items():
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
