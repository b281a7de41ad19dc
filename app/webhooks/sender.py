"""POSTing a delivery to a merchant's URL without letting the URL reach our own network.

The host is resolved once, every address it resolves to is checked, and the connection goes
to a checked address (so a second, different DNS answer cannot slip a private address in).
Redirects are not followed, the whole try is bounded by a timeout, and at most
`MAX_RESPONSE_BYTES` of the answer are read.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

TIMEOUT_SECONDS = 10.0
MAX_RESPONSE_BYTES = 4096
USER_AGENT = "SubscriptionEngine-Webhooks/1"
#: Cloud instance-metadata services (AWS IPv4 and IPv6, and the same address elsewhere).
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlNotAllowed(ValueError):
    """Raised when a webhook URL is malformed or its host is not a public address."""


class Unresolvable(OSError):
    """Raised when a webhook URL's host does not resolve (now): nothing to send to."""


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect and what to send as Host and SNI."""

    https: bool
    host: str
    port: int
    path: str
    address: str


@dataclass(frozen=True)
class Answer:
    """What one try got: an HTTP status, or None when no answer came (with why)."""

    status: int | None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def check_url(url: str, *, livemode: bool) -> None:
    """Refuse a URL an endpoint may not have (scheme, form), before any DNS lookup."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlNotAllowed(f"not a valid URL: {exc}") from None
    allowed = ("https",) if livemode else ("https", "http")
    if parts.scheme not in allowed:
        raise UrlNotAllowed("the URL must be https://" + ("" if livemode else " or http://"))
    if not parts.hostname or parts.username or parts.password or parts.fragment:
        raise UrlNotAllowed("the URL needs a host and no user, password or fragment")
    if port == 0:
        raise UrlNotAllowed("port 0 is not a valid port")


def resolve(url: str, *, allow_private: bool) -> Target:
    """The checked target of `url`: UrlNotAllowed when any address it resolves to is not
    public, Unresolvable when it resolves to none."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise Unresolvable(f"the host {host!r} does not resolve") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise Unresolvable(f"the host {host!r} does not resolve")
    if not allow_private:
        for address in addresses:
            if not public(address):
                raise UrlNotAllowed(f"the host {host!r} resolves to a non-public address")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(https, host, port, path, str(addresses[0]))


def public(address: Address) -> bool:
    """A globally routable unicast address that is no cloud metadata service."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast and address not in _METADATA


class Connection:
    """POSTs to one checked target over one kept-alive connection, reopened when needed."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self._http = _Pinned(target, TIMEOUT_SECONDS)

    def post(self, body: bytes, headers: dict[str, str]) -> Answer:
        """One try: never follows a redirect, never reads much, bounded in time."""
        reused = self._http.sock is not None
        answer = self._post(body, headers)
        if reused and answer.error in _STALE:  # the server had closed the idle connection
            answer = self._post(body, headers)
        return answer

    def _post(self, body: bytes, headers: dict[str, str]) -> Answer:
        target = self._target
        deadline = time.monotonic() + TIMEOUT_SECONDS
        try:
            self._http.request("POST", target.path, body=body, headers={
                "Host": target.host if target.port in (80, 443) else f"{target.host}:{target.port}",
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                **headers,
            })
            if self._http.sock is not None:
                self._http.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            response = self._http.getresponse()
            response.read(MAX_RESPONSE_BYTES)
            if not response.isclosed():  # more than we read: do not reuse the connection
                self._http.close()
            return Answer(response.status)
        except (OSError, http.client.HTTPException) as exc:
            self._http.close()
            return Answer(None, type(exc).__name__)
        finally:
            if self._http.sock is not None:
                self._http.sock.settimeout(TIMEOUT_SECONDS)

    def close(self) -> None:
        self._http.close()


_STALE = {"RemoteDisconnected", "ConnectionResetError", "BrokenPipeError"}


class _Pinned(http.client.HTTPSConnection):
    """A connection to the checked address, with the URL's host for Host, SNI and the
    certificate check (plain HTTP when the URL is http://)."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout,
                         context=ssl.create_default_context())
        self._target = target

    def connect(self) -> None:
        sock = socket.create_connection((self._target.address, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._target.https:
            sock = self._context.wrap_socket(  # type: ignore[attr-defined]
                sock, server_hostname=self._target.host)
        self.sock = sock
