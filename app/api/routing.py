"""Declaring endpoints once: the view, its schemas and its OpenAPI entry come from one place.

Each endpoint states its body and query schemas; the wrapper parses and validates them
(415, 400, 422 as the contract says), runs POSTs through the idempotency layer (which
commits them), commits DELETEs, and records the endpoint for the OpenAPI document.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Literal

from flask import Blueprint, request
from pydantic import BaseModel, ValidationError

from app.api import context, idempotency
from app.api.errors import Problem
from app.api.responses import json_response

Idempotency = Literal["optional", "required"]
NO_BODY = object()  # a request without a body, unlike one whose body is `null`
_MAX_INT_DIGITS = 100
_OUT_OF_RANGE: int = 10**_MAX_INT_DIGITS


@dataclass(frozen=True)
class Endpoint:
    method: str
    rule: str
    summary: str
    tag: str
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    list_response: bool
    idempotency: Idempotency | None
    public: bool
    #: Request headers the endpoint requires besides the API key (e.g. a provider signature).
    headers: tuple[str, ...] = ()


@dataclass
class Api:
    """A blueprint plus the endpoint descriptions the OpenAPI document is built from."""

    blueprint: Blueprint
    tag: str
    endpoints: list[Endpoint] = field(default_factory=list)

    def route(
        self,
        method: str,
        rule: str,
        *,
        summary: str,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        list_response: bool = False,
        idempotency: Idempotency | None = None,
        public: bool = False,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a view; it receives path args plus `body=` / `query=` when declared."""
        if method == "POST" and idempotency is None:
            idempotency = "optional"
        endpoint = Endpoint(
            method,
            rule,
            summary,
            self.tag,
            body,
            query,
            response,
            status,
            list_response,
            idempotency,
            public,
        )
        self.endpoints.append(endpoint)

        def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
            @wraps(view)
            def handler(**path: Any) -> Any:
                return _handle(endpoint, view, path)

            self.blueprint.add_url_rule(rule, view_func=handler, methods=[method])
            return view

        return decorate


def _handle(endpoint: Endpoint, view: Callable[..., Any], path: dict[str, Any]) -> Any:
    kwargs = dict(path)
    if endpoint.query is not None:
        kwargs["query"] = _validate(endpoint.query, request.args.to_dict())
    if endpoint.method == "GET":
        return json_response(view(**kwargs))
    if endpoint.method == "DELETE":  # no body, no idempotency key: deleting twice is a 404
        response = json_response(view(**kwargs))
        context.uow().commit()
        return response
    raw = _json_body()
    model = _validate(endpoint.body, raw) if endpoint.body is not None else None
    if endpoint.body is None and raw is not NO_BODY and raw != {}:
        raise Problem(422, "validation_failed", "This endpoint takes no body.")
    if model is not None:
        kwargs["body"] = model
    fingerprint = _fingerprint(model)
    assert endpoint.idempotency is not None
    return idempotency.run(
        lambda: view(**kwargs),
        required=endpoint.idempotency == "required",
        fingerprint=fingerprint,
    )


def _json_body() -> Any:
    """The parsed body, or NO_BODY; strict UTF-8 JSON (no NaN/Infinity), 400 otherwise."""
    data = request.get_data(cache=True)
    if not data:
        return NO_BODY
    if request.mimetype != "application/json":
        raise Problem(415, "unsupported_media_type", "Send the body as application/json.")
    try:
        return json.loads(
            data.decode("utf-8"), parse_int=_parse_int, parse_constant=_refuse_constant
        )
    except (ValueError, RecursionError):
        raise Problem(400, "invalid_json", "The body is not valid JSON.") from None


def _parse_int(literal: str) -> int:
    """An integer literal; one too long for int() is out of every field's range anyway."""
    if len(literal) > _MAX_INT_DIGITS:
        return -_OUT_OF_RANGE if literal.startswith("-") else _OUT_OF_RANGE
    return int(literal)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _validate(model: type[BaseModel], data: Any) -> BaseModel:
    if data is NO_BODY:
        data = {}
    if not isinstance(data, dict):
        raise Problem(422, "validation_failed", "The body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(part) for part in err["loc"]) or "body", "message": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise Problem(
            422, "validation_failed", "The request has invalid fields.", errors=errors
        ) from None


def _fingerprint(model: BaseModel | None) -> str:
    canonical = json.dumps(
        model.model_dump(mode="json") if model else None, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(f"{request.method} {request.path} {canonical}".encode()).hexdigest()
