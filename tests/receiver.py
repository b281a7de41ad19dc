"""A merchant's webhook receiver on 127.0.0.1: records every request, answers per path.

`/ok` answers 200, `/fail-first` 500 to the first try of each webhook-id and 200 after,
`/dead` always 500, `/slow` 200 after `slow_seconds`, `/redirect` 302 to the cloud metadata
address (which must never be followed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when it arrived


class Receiver:
    """The server, in a thread; `hits` lists every request in arrival order."""

    def __init__(self, slow_seconds: float = 5.0) -> None:
        self.hits: list[Hit] = []
        self.slow_seconds = slow_seconds
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hit = Hit(self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                          time.time())
                with receiver._lock:
                    receiver.hits.append(hit)
                    first = hit.headers.get("webhook-id", "") not in receiver._seen
                    receiver._seen.add(hit.headers.get("webhook-id", ""))
                status, headers = 200, {}
                if self.path == "/dead" or (self.path == "/fail-first" and first):
                    status = 500
                elif self.path == "/slow":
                    time.sleep(receiver.slow_seconds)
                elif self.path == "/redirect":
                    status, headers = 302, {"Location": "http://169.254.169.254/latest/meta-data/"}
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[Hit]:
        with self._lock:
            return [hit for hit in self.hits if hit.path == path]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def receiving(slow_seconds: float = 5.0) -> Iterator[Receiver]:
    """A running receiver, for a fixture to yield."""
    with Receiver(slow_seconds) as receiver:
        yield receiver
