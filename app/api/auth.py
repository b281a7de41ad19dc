"""Bearer API keys: every endpoint but the public ones needs one."""

from __future__ import annotations

from flask import g, request

from app.api import context
from app.api.errors import Problem
from app.services.tenants import authenticate

PUBLIC_PREFIXES = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/webhooks/")


def authenticate_request() -> None:
    """Resolve the caller from `Authorization: Bearer <key>`; 401 when absent or unknown."""
    if request.path.startswith(PUBLIC_PREFIXES):
        return
    header = request.headers.get("Authorization", "")
    scheme, _, raw_key = header.partition(" ")
    if scheme.lower() != "bearer" or not raw_key.strip():
        raise Problem(
            401,
            "unauthorized",
            "Send your API key as 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    found = authenticate(context.uow().session, context.container().cache, raw_key.strip())
    if found is None:
        raise Problem(
            401,
            "unauthorized",
            "The API key is unknown or revoked.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    g.caller = found
