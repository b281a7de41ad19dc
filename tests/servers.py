"""Dependencies a test may stop, freeze or restart: never the machine's shared ones.

`RedisServer` is a redis-server of the test's own on a free port (no persistence);
`SilentListener` is a TCP port that accepts connections and never answers, the way a hung
server looks to a client.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

import redis

from tests.support import eventually
from tests.tls import Pair


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """`redis-server --port N --save ''` of this test alone: start, stop, pause, resume.

    With `tls` (its certificate) and `ca` (the CA that signed it), it speaks TLS only:
    `--tls-port N` and no plain port; `url` is then rediss://.
    """

    def __init__(self, workdir: Path, tls: Pair | None = None, ca: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"{'rediss' if tls else 'redis'}://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.tls = tls
        self.ca = ca
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        listen = ["--port", str(self.port)]
        if self.tls is not None:
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no",
                      "--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key),
                      "--tls-ca-cert-file", str(self.ca)]
        self.process = subprocess.Popen(
            ["redis-server", *listen, "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        trust = {"ssl_ca_certs": str(self.ca)} if self.tls else {}
        client = redis.Redis.from_url(self.url, socket_timeout=1, **trust)
        eventually(lambda: self._answers(client), 10, what=f"redis-server on {self.port}")
        client.close()

    def stop(self) -> None:
        """Kill it (its data goes with it, as with the machine's Redis without persistence)."""
        if self.process is not None:
            self.resume()
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def pause(self) -> None:
        """Freeze it (SIGSTOP): connections stay open and nothing answers."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)

    @staticmethod
    def _answers(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False


class SilentListener:
    """A port that accepts every connection and never sends a byte."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return  # closed
            self.accepted.append(connection)

    def close(self) -> None:
        """Close every connection (a client still waiting then sees EOF) and the port."""
        self.server.close()
        for connection in self.accepted:
            connection.close()
