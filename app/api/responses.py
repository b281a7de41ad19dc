"""What views return, and how it becomes a JSON response."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

ViewResult = tuple[dict[str, Any], int] | tuple[dict[str, Any], int, dict[str, str]]


def json_response(result: ViewResult) -> Response:
    """A view's (body, status[, headers]) as a JSON response."""
    body, status, *rest = result
    response = jsonify(body)
    response.status_code = status
    if rest:
        response.headers.update(rest[0])
    return response


def page(items: list[dict[str, Any]], has_more: bool) -> ViewResult:
    """A list response: {"object": "list", "data": [...], "has_more": ...}."""
    return {"object": "list", "data": items, "has_more": has_more}, 200
