"""A real local HTTP server for provider simulators, with fault injection.

Each simulator subclasses `SimServer` and answers `(method, path, query, headers, body)`
with a `Reply`. Faults queued with `inject` hit the next matching requests:

- `500` / `429`: an error envelope (429 with `Retry-After`), the request is not processed;
- `reset`: the connection is reset before the request is processed;
- `lost`: the request is processed (a charge is made), then the connection is reset,
  so the client never sees the answer;
- `delay`: the request is processed, then the answer waits `seconds` (a slow answer, or a
  client timeout);
- `500_after`: the request is processed (a charge is made), then answered 500.

As the real APIs do, a request whose idempotency key (`flight_key`) is still being processed
or answered gets a conflict (`conflict_reply`, Stripe's 409) and is not processed.

`gate` holds the next `parties` matching requests until all of them have arrived: requests
sent one after the other never get through it (they are answered 500 after `timeout`).
"""

from __future__ import annotations

import fnmatch
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        return b"" if self.status == 204 else json.dumps(self.body).encode()


@dataclass
class Seen:
    """A request the simulator received (for assertions on what the SDK sent)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Fault:
    kind: str
    method: str
    pattern: str
    remaining: int
    retry_after: int | None = None
    seconds: float = 0.0


class SimServer:
    """Base of the simulators: a threaded HTTP server on 127.0.0.1 and a random port."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.seen: list[Seen] = []
        self._faults: list[Fault] = []
        self._gates: list[tuple[str, str, threading.Barrier]] = []
        self._in_flight: set[str] = set()
        self._httpd = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SimServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def inject(self, kind: str, pattern: str = "*", *, method: str = "*", count: int = 1,
               retry_after: int | None = None, seconds: float = 0.0) -> None:
        """Make the next `count` requests matching `method` and path `pattern` fail as `kind`."""
        assert kind in ("500", "429", "reset", "lost", "delay", "500_after"), kind
        with self.lock:
            self._faults.append(Fault(kind, method, pattern, count, retry_after, seconds))

    def gate(self, pattern: str, parties: int, *, method: str = "*",
             timeout: float = 10.0) -> None:
        """Hold the next `parties` requests matching `method` and `pattern` until all came."""
        with self.lock:
            self._gates.append((method, pattern, threading.Barrier(parties, timeout=timeout)))

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()
            self._gates.clear()

    def requests_to(self, pattern: str, method: str = "*") -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if _matches(method, pattern, s.method, s.path)]

    # Subclasses implement these.
    def handle(self, seen: Seen) -> Reply:
        raise NotImplementedError

    def error_reply(self, status: int) -> Reply:
        raise NotImplementedError

    def flight_key(self, seen: Seen) -> str | None:
        """The idempotency key a request carries, if any (none: never a conflict)."""
        return None

    def conflict_reply(self) -> Reply:
        raise NotImplementedError

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self._faults:
                if _matches(fault.method, fault.pattern, method, path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def serve(self, seen: Seen, respond: Callable[[Reply], None],
              reset: Callable[[], None]) -> None:
        """Refuse a request whose key is in flight; else apply a fault, or process it."""
        key = self.flight_key(seen)
        with self.lock:
            self.seen.append(seen)
            if key is not None and key in self._in_flight:
                conflict = True
            else:
                conflict = False
                if key is not None:
                    self._in_flight.add(key)
        if conflict:
            respond(self.conflict_reply())
            return
        try:
            self._serve(seen, respond, reset)
        finally:
            if key is not None:
                with self.lock:
                    self._in_flight.discard(key)

    def _serve(self, seen: Seen, respond: Callable[[Reply], None],
               reset: Callable[[], None]) -> None:
        with self.lock:
            gate = next((g for g in self._gates if _matches(g[0], g[1], seen.method, seen.path)),
                        None)
        if gate is not None:
            try:
                if gate[2].wait() == 0:
                    with self.lock:
                        self._gates.remove(gate)
            except threading.BrokenBarrierError:
                respond(self.error_reply(500))
                return
        fault = self._take_fault(seen.method, seen.path)
        if fault is not None and fault.kind in ("500", "429"):
            reply = self.error_reply(int(fault.kind))
            if fault.retry_after is not None:
                reply.headers["Retry-After"] = str(fault.retry_after)
            respond(reply)
            return
        if fault is not None and fault.kind == "reset":
            reset()
            return
        with self.lock:
            reply = self.handle(seen)
        if fault is not None and fault.kind == "lost":
            reset()
            return
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
        if fault is not None and fault.kind == "500_after":
            reply = self.error_reply(500)
        respond(reply)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a connection we reset on purpose, or a client that went away


def _matches(fault_method: str, pattern: str, method: str, path: str) -> bool:
    return fault_method in ("*", method) and fnmatch.fnmatchcase(path, pattern)


def _handler_for(sim: SimServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _dispatch(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            seen = Seen(
                method=self.command,
                path=parts.path,
                query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            sim.serve(seen, self._respond, self._reset)

        def _respond(self, reply: Reply) -> None:
            payload = reply.payload()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def _reset(self) -> None:
            """Abort the connection with a TCP RST: the client sees a reset, no answer."""
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def finish(self) -> None:
            try:
                super().finish()
            except (OSError, ValueError):
                pass

        do_GET = do_POST = do_PATCH = do_DELETE = _dispatch

    return Handler


def closed_port_url() -> str:
    """A URL where nothing listens: connections are refused (the request never left)."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"http://127.0.0.1:{port}"
