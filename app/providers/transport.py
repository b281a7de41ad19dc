"""What a failed HTTP call tells us: did the request ever leave this machine?"""

from __future__ import annotations

import socket

import requests
import urllib3.exceptions

_BEFORE_SENDING = (
    requests.exceptions.ConnectTimeout,
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.ConnectTimeoutError,
    ConnectionRefusedError,
    socket.gaierror,
)


def never_sent(exc: BaseException) -> bool:
    """True when the connection failed before the request was written (refused, DNS, connect
    timeout): the provider cannot have acted on it. A reset or read timeout is not such a case.
    """
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, _BEFORE_SENDING):
            return True
        node = _inner(node)
    return False


def _inner(exc: BaseException) -> BaseException | None:
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return exc.reason
    if exc.__cause__ is not None:
        return exc.__cause__
    if exc.args and isinstance(exc.args[0], BaseException):
        return exc.args[0]
    return exc.__context__


def retry_after(headers: object) -> float | None:
    """The `Retry-After` seconds of a response's headers, when it has a numeric one."""
    getter = getattr(headers, "get", None)
    if getter is None:
        return None
    raw = getter("Retry-After") or getter("retry-after")
    try:
        return float(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None
