"""Dependencies a test may stop, freeze or restart: never the machine's shared ones.

`RedisServer` is a redis-server of the test's own on a free port (no persistence);
`SilentListener` is a TCP port that accepts connections and never answers, the way a hung
server looks to a client; `Cluster` is a PostgreSQL server of the test's own (initdb, run as
user postgres), a primary or a streaming replica of one.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
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


PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
hot_standby = on
fsync = off
shared_buffers = 16MB
max_connections = 200
log_min_messages = warning
"""


def _as_postgres(*argv: str, check: bool = True) -> None:
    """Run a server binary as user postgres (initdb and pg_ctl refuse to run as root)."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *argv], check=check, capture_output=True, timeout=60)


@dataclass
class Cluster:
    """One running server: a primary, or a streaming replica (`pg_basebackup -R`) of one."""

    directory: Path
    port: int

    @classmethod
    def primary(cls, tls: Pair | None = None) -> Cluster:
        """initdb a cluster that lets 127.0.0.1 replicate from it, and start it.

        With `tls` (its certificate), `ssl = on` and only TLS connections are accepted, its
        replicas' too (pg_basebackup copies the certificate and the settings).
        """
        cluster = cls(_own_directory("primary"), free_port())
        _as_postgres(str(PG_BIN / "initdb"), "-D", str(cluster.directory), "-U", "postgres",
                     "--auth=trust", "--no-sync")
        if tls is None:
            with (cluster.directory / "pg_hba.conf").open("a") as hba:
                hba.write("host replication all 127.0.0.1/32 trust\n")
        else:
            cluster.serve_tls_only(tls)
        cluster.configure()
        cluster.start()
        return cluster

    def serve_tls_only(self, tls: Pair) -> None:
        for source, name in ((tls.cert, "server.crt"), (tls.key, "server.key")):
            shutil.copy(source, self.directory / name)
            shutil.chown(self.directory / name, "postgres", "postgres")
            (self.directory / name).chmod(0o600)
        with (self.directory / "postgresql.conf").open("a") as conf:
            conf.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
        (self.directory / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n"
            "hostssl replication all 127.0.0.1/32 trust\n")

    def replica(self) -> Cluster:
        """A streaming replica of this cluster, started and replaying."""
        replica = Cluster(_own_directory("replica"), free_port())
        replica.directory.rmdir()  # pg_basebackup makes it
        _as_postgres(str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.port),
                     "-U", "postgres", "-D", str(replica.directory), "-R", "-X", "stream",
                     "-c", "fast")
        replica.configure()
        replica.start()
        return replica

    def configure(self) -> None:
        with (self.directory / "postgresql.conf").open("a") as conf:
            conf.write(PG_SETTINGS.format(port=self.port, socket_dir=self.directory))

    def start(self) -> None:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.directory), "-l",
                     str(self.directory / "server.log"), "-w", "start")

    def stop(self, *, check: bool = True, mode: str = "immediate") -> None:
        """`immediate` is a crash (recovery at the next start); `fast` ends every connection."""
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.directory), "-m", mode, "-w",
                     "stop", check=check)

    def freeze(self) -> None:
        """SIGSTOP the server and all its processes: connections stay open, nothing answers."""
        for pid in self._processes():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._processes():
            os.kill(pid, signal.SIGCONT)

    def _processes(self) -> list[int]:
        postmaster = int((self.directory / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # exited while we looked
            if parent == postmaster:
                children.append(int(stat.parent.name))
        return [postmaster, *children]

    def url(self, database: str = "postgres", driver: str = "+psycopg2") -> str:
        return f"postgresql{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def scalar(self, sql: str, *params: Any, database: str = "postgres") -> Any:
        """One value of one statement, in autocommit."""
        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres",
                                      dbname=database, connect_timeout=5)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                row = cursor.fetchone() if cursor.description else None
                return None if row is None else row[0]
        finally:
            connection.close()


def _own_directory(name: str) -> Path:
    """A new directory in /tmp that user postgres owns."""
    directory = Path(tempfile.mkdtemp(prefix=f"se-test-{name}-"))
    if os.geteuid() == 0:
        postgres = pwd.getpwnam("postgres")
        os.chown(directory, postgres.pw_uid, postgres.pw_gid)
    return directory


@contextmanager
def streaming_pair(primary: Cluster) -> Iterator[tuple[Cluster, Cluster]]:
    """`primary` and a streaming replica of it; both stopped and deleted afterwards."""
    clusters = [primary]
    try:
        clusters.append(primary.replica())
        yield primary, clusters[1]
    finally:
        remove(*reversed(clusters))


def remove(*clusters: Cluster) -> None:
    """Stop the clusters (if running) and delete their files."""
    for cluster in clusters:
        cluster.stop(check=False)
        shutil.rmtree(cluster.directory, ignore_errors=True)
