"""Per-request access to the container, the unit of work and the caller."""

from __future__ import annotations

from flask import Response, current_app, g

from app.bootstrap import Container
from app.models.uow import UnitOfWork
from app.services.queries import Reader
from app.services.scope import Scope
from app.services.tenants import Caller


def container() -> Container:
    """The app's container."""
    built: Container = current_app.extensions["container"]
    return built


def uow() -> UnitOfWork:
    """This request's unit of work, opened on first use and closed at teardown."""
    if "uow" not in g:
        g.uow = container().uow().__enter__()
    current: UnitOfWork = g.uow
    return current


def reader() -> Reader:
    """Where this request's reads run (GETs go through app.services.queries)."""
    built = container()
    key_id = caller().key_id if "caller" in g else None
    return Reader(built.session_factory, built.cache, built.replicas, key_id)


def remember_writes(response: Response) -> Response:
    """After a request that committed, reads of its API key must see what it wrote."""
    replicas = container().replicas
    if replicas is not None and "caller" in g and "uow" in g and g.uow.committed:
        replicas.remember_write(caller().key_id, g.uow.session)
    return response


def close_uow(_: BaseException | None = None) -> None:
    """Roll back whatever this request did not commit."""
    current = g.pop("uow", None)
    if current is not None:
        current.__exit__(None, None, None)


def caller() -> Caller:
    """The authenticated API key of this request."""
    found: Caller = g.caller
    return found


def scope() -> Scope:
    """The tenant and mode this request is confined to."""
    return caller().scope
