"""The package floors for bench/pay.py: the work POST /pay and GET /payments/{id} must do, done
by the packages the design fixes alone (Flask, Flask-Limiter, pydantic, SQLAlchemy 2 on
psycopg2, Dramatiq and redis-py on Redis), with none of the engine's own request code.

Served under the same gunicorn settings as the engine, on its settings (the environment
bench/pay.py gives both) and with the engine's pieces that fix what the packages do: its
rate-limit storage (app/api/limits.py), request schema (PayRequest), tables (app/models), SQL
engine and Dramatiq broker (app/bootstrap.py). The caller is bench/pay.py's tenant
(BENCH_TENANT_ID, limited to BENCH_TENANT_RATE_LIMIT) in test mode, taken as given: API keys
are the engine's to check (it remembers them in each process: no round trip).

`POST /pay` (the body and headers bench/wrk.lua sends /pay): the classic round trips of one
payment, 3 to Redis and 5 to PostgreSQL, whatever the engine's /pay does now (where it saves
some, e.g. its key's lock and lookup in one call, or the method's owner checked by its INSERT
instead of a cache, this floor does not follow):
  1. Flask-Limiter's hit on the tenant's per-key limit (its application limit: a callable, as
     the engine's per-tenant limit is), WindowStorage on Redis, RateLimit-* headers: one round
     trip (a Lua script);
  2. pydantic parses and validates the body with PayRequest (model_validate_json);
  3. redis-py reads the payment method's owner from a cache: one GET;
  4. SQLAlchemy Core on a Connection of the engine's Engine (its pool, no pre-ping), the
     statements built once from the engine's tables with bound parameters: BEGIN (psycopg2's),
     the advisory transaction lock of (tenant, mode, Idempotency-Key), the lookup of the key's
     stored response, one INSERT of the payment, its payment.created outbox event and the
     key's stored response (WITH ... INSERT), COMMIT: five round trips;
  5. the engine's RedisBroker enqueues a dramatiq.Message for charge_payment: one round trip;
  6. the payment as JSON, 202 with its Location.
Core on a Connection is the cheapest way SQLAlchemy offers; the engine's ORM Session is more.

`GET /payments/<id>`: the limiter's hit as above (one Redis round trip), one SQLAlchemy Core
SELECT of the payment in scope with its attempts (LEFT JOIN) on a Connection of an Engine in
autocommit (one round trip), and the row as JSON.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from typing import Any

import dramatiq
from flask import Flask, Response, abort, jsonify, request
from flask_limiter import Limiter
from sqlalchemy import Insert, Table, bindparam, create_engine, func, insert, select

from app.api.limits import SCHEME_PREFIX
from app.api.schemas import PayRequest
from app.bootstrap import build, redis_options
from app.events.outbox import TABLE as EVENTS
from app.events.outbox import TOPICS
from app.ids import new_id
from app.models import IdempotencyKey, Payment, PaymentAttempt, PaymentPurpose, PaymentStatus

app = Flask(__name__)
container = build()
config = container.config
TENANT = os.environ["BENCH_TENANT_ID"]
limiter = Limiter(
    key_func=lambda: request.headers.get("Authorization", ""),
    app=app,
    application_limits=[lambda: os.environ["BENCH_TENANT_RATE_LIMIT"]],
    storage_uri=SCHEME_PREFIX + config.redis_url,
    storage_options=redis_options(config),
    strategy="fixed-window",
    headers_enabled=True,
    key_prefix=f"{config.redis_namespace}-floor-limits",
)
PAYMENTS, KEYS, ATTEMPTS = (
    model.__table__ for model in (Payment, IdempotencyKey, PaymentAttempt)
)


def _insert(table: Table, prefix: str, *columns: str) -> Insert:
    """INSERT of one row of `columns`, bound as `<prefix><column>`."""
    return insert(table).values(
        {c: bindparam(prefix + c, type_=table.c[c].type) for c in columns}
    )


LOCK = select(func.pg_try_advisory_xact_lock(func.hashtextextended(bindparam("lock"), 0)))
LOOKUP = select(KEYS).where(KEYS.c.tenant_id == TENANT, KEYS.c.livemode.is_(False),
                            KEYS.c.key == bindparam("key"))
INSERT = _insert(KEYS, "k_", "tenant_id", "livemode", "key", "request_hash", "status_code",
                 "response_body", "response_headers", "created_at").add_cte(
    _insert(PAYMENTS, "p_", "id", "tenant_id", "livemode", "customer_id",
            "payment_method_id", "purpose", "amount", "currency", "status",
            "amount_refunded", "description", "metadata", "created_at", "updated_at")
    .cte("payment"),
    _insert(EVENTS, "e_", "event_id", "topic", "key", "type", "payload", "created_at")
    .cte("event"),
)
READ = (
    select(PAYMENTS, *(c.label(f"attempt_{c.name}") for c in ATTEMPTS.c))
    .select_from(PAYMENTS.outerjoin(ATTEMPTS, ATTEMPTS.c.payment_id == PAYMENTS.c.id))
    .where(PAYMENTS.c.id == bindparam("id"), PAYMENTS.c.tenant_id == TENANT,
           PAYMENTS.c.livemode.is_(False))
)
#: Autocommit set once per connection: an Engine's execution_options(isolation_level=...) sets
#: it at every checkout and resets it at every checkin, which psycopg2 does with a round trip
#: of its own (SET default_transaction_isolation TO DEFAULT).
READS = create_engine(config.database_url, isolation_level="AUTOCOMMIT", pool_recycle=1800)


@app.get("/")
def ready() -> str:
    return "ok"


@app.post("/pay")
def pay() -> tuple[Response, int, dict[str, str]]:
    raw = request.get_data()
    body = PayRequest.model_validate_json(raw)
    key = request.headers["Idempotency-Key"]
    container.redis.get(f"{config.redis_namespace}-floor:owner:{body.payment_method_id}")
    now = datetime.now(UTC)
    at = now.isoformat(timespec="seconds")
    payment: dict[str, Any] = {
        "id": new_id("pay"), "object": "payment", **body.model_dump(), "subscription_id": None,
        "status": PaymentStatus.PENDING, "failure_code": None, "failure_message": None,
        "amount_refunded": 0, "attempts": [], "livemode": False, "created_at": at,
        "updated_at": at, "next_action": None,
    }
    event_id = new_id("evt")
    event = {"id": event_id, "type": "payment.created", "schema_version": 1,
             "occurred_at": at, "tenant_id": TENANT, "livemode": False,
             "data": {"object": payment}}
    location = {"Location": f"/payments/{payment['id']}"}
    params = {
        **{f"p_{c}": payment[c] for c in ("id", "customer_id", "payment_method_id", "amount",
                                          "currency", "status", "amount_refunded",
                                          "description", "metadata")},
        "p_tenant_id": TENANT, "p_livemode": False, "p_purpose": PaymentPurpose.ONE_TIME,
        "p_created_at": now, "p_updated_at": now,
        "e_event_id": event_id, "e_topic": TOPICS["payment"], "e_key": payment["id"],
        "e_type": "payment.created", "e_payload": event, "e_created_at": now,
        "k_tenant_id": TENANT, "k_livemode": False, "k_key": key,
        "k_request_hash": hashlib.sha256(raw).hexdigest(), "k_status_code": 202,
        "k_response_body": payment, "k_response_headers": location, "k_created_at": now,
    }
    with container.engine.begin() as db:
        if not db.scalar(LOCK, {"lock": f"{TENANT}:0:{key}"}):
            abort(409)  # a request with this key is in flight
        if db.execute(LOOKUP, {"key": key}).first() is not None:
            abort(409)  # a replay (the floor stores, never replays)
        db.execute(INSERT, params)
    container.broker.enqueue(dramatiq.Message(
        queue_name="default", actor_name="charge_payment", args=(payment["id"],), kwargs={},
        options={},
    ))
    return jsonify(payment), 202, location


@app.get("/payments/<payment_id>")
def get_payment(payment_id: str) -> Response:
    with READS.connect() as db:
        rows = db.execute(READ, {"id": payment_id}).all()
    if not rows:
        abort(404)
    found = {k: v for k, v in rows[0]._mapping.items() if not k.startswith("attempt_")}
    found["attempts"] = [{k.removeprefix("attempt_"): v for k, v in row._mapping.items()
                          if k.startswith("attempt_")} for row in rows if row.attempt_id]
    return jsonify(found)
