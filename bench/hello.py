"""The ceilings for bench/pay.py, served under the same gunicorn settings as the engine.

`/`: a Flask hello-world, the ceiling every ratio is to. `/io`: the same Flask view doing the
round trips one POST /pay makes, with the bare drivers and nothing else (psycopg2: BEGIN, an
advisory lock, a lookup by key, one INSERT, COMMIT; redis-py: three commands), on the bench's
DATABASE_URL and REDIS_URL (bench/pay.py creates the table `bench_io`): what /pay would cost
if the engine's own Python cost nothing.
"""

import os
import uuid

import psycopg2
import redis
from flask import Flask

app = Flask(__name__)
_connections: dict[str, object] = {}
PAYLOAD = "x" * 600  # about what a payment, its event and its idempotency record hold


@app.get("/")
def hello() -> str:
    return "Hello, World!"


@app.get("/io")
def io() -> str:
    db, cache = _clients()
    key = uuid.uuid4().hex
    with db.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (key,))
        cursor.execute("SELECT v FROM bench_io WHERE k = %s", (key,))
        cursor.execute("INSERT INTO bench_io (k, v) VALUES (%s, %s)", (key, PAYLOAD))
    db.commit()
    cache.incr("bench-io:limit")
    cache.get("bench-io:owner")
    cache.lpush("bench-io:queue", key)
    return "ok"


def _clients() -> tuple["psycopg2.extensions.connection", redis.Redis]:
    if not _connections:
        url = os.environ["DATABASE_URL"].replace("postgresql+psycopg2://", "postgresql://")
        _connections.update(db=psycopg2.connect(url),
                            cache=redis.Redis.from_url(os.environ["REDIS_URL"]))
    return _connections["db"], _connections["cache"]  # type: ignore[return-value]
