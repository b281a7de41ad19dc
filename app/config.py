"""Settings from the environment: one frozen dataclass, read once per process."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from typing import Any

#: Fernet key for provider credentials in local development only; set CREDENTIALS_KEY elsewhere.
DEV_CREDENTIALS_KEY = "ZGV2LW9ubHkta2V5LW5ldmVyLXVzZS1pbi1wcm9kISE="
#: A setting with one of these words in its name holds a secret; repr() shows none of them.
_SECRET_WORDS = frozenset({"key", "password", "secret", "token"})
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@/\s]+@")


@dataclass(frozen=True)
class Config:
    """Every setting of the engine; each field is read from the upper-cased env var of its name."""

    database_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/subscription_engine"
    database_replica_urls: str = ""
    replica_max_lag_seconds: float = 5.0
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_ssl_cafile: str = ""
    redis_namespace: str = "se"
    cache_ttl_seconds: float = 60.0
    kafka_bootstrap_servers: str = ""
    log_level: str = "INFO"
    db_pool_size: int = 5
    # Bounds on every client, so a hung dependency answers 503 within seconds (gunicorn
    # kills a worker after 30 s): PostgreSQL connect (libpq's minimum is 2), statement and
    # lock waits; Redis connect and reply, for the broker, the limiter and any cache.
    db_connect_timeout_seconds: int = 3
    db_statement_timeout_ms: int = 5000
    db_lock_timeout_ms: int = 2000
    redis_connect_timeout_seconds: float = 2.0
    redis_socket_timeout_seconds: float = 2.0
    # API
    default_rate_limit: str = "100/second"
    webhook_rate_limit: str = "50/second"
    max_body_bytes: int = 65536
    idempotency_ttl_hours: int = 24
    # Worker
    charge_max_retries: int = 5
    charge_min_backoff_ms: int = 1000
    charge_max_backoff_ms: int = 300_000
    payment_lease_seconds: int = 60
    # One-time payments claimed, charged and settled together by one charge_payment message
    charge_batch_size: int = 32
    # How long a young charge_payment message may wait before claiming, so the payments
    # made meanwhile join one batch (0: claim at once; app/jobs/actors.py, _Window)
    charge_linger_ms: int = 40
    dramatiq_heartbeat_timeout_ms: int = 60_000
    breaker_failure_threshold: int = 5
    breaker_recovery_seconds: int = 30
    # Providers (Stripe, PayPal)
    credentials_key: str = DEV_CREDENTIALS_KEY
    # "development" allows the development CREDENTIALS_KEY (`make run` and the tests set it)
    engine_env: str = "production"
    stripe_api_base: str = ""
    paypal_api_base: str = ""
    provider_timeout_seconds: float = 30.0
    provider_concurrency: int = 8
    payment_return_url: str = "http://localhost:8000/"
    # Scheduler
    renewal_interval_seconds: float = 2.0
    renewal_batch_size: int = 1000
    # 200 renewed (and charged) per message: about a tenth more renewals/s than 100 in
    # bench/renewals.py on 2 cores (half the transactions, commits and messages per
    # renewal), and a worker's peak RSS 136 MB against 117 MB; 500 took it to 208 MB.
    renewal_message_size: int = 200
    subscription_lease_seconds: int = 300
    # Test clocks of one tenant advanced at once (the `clocks` queue); the others wait their turn
    test_clock_tenant_concurrency: int = 2
    reconcile_interval_seconds: float = 10.0
    reconcile_stale_seconds: int = 30
    reconcile_batch_size: int = 500
    # Events: outbox relay to Kafka
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    kafka_aws_region: str = ""
    kafka_topic_partitions: int = 3
    kafka_replication_factor: int = 1
    relay_batch_size: int = 1000
    relay_shards: int = 1
    relay_poll_interval_ms: int = 50
    relay_flush_timeout_seconds: float = 5.0
    outbox_retention_hours: float = 24.0
    outbox_prune_interval_seconds: float = 60.0
    # Mail
    mail_server: str = "127.0.0.1"
    mail_port: int = 1025
    mail_security: str = "none"
    mail_ssl_cafile: str = ""
    mail_username: str = ""
    mail_password: str = ""
    # host:port of the SMTP server that gets all test-mode mail (a sink, plain SMTP); unset,
    # test-mode mail is recorded as skipped and not sent. Never a real customer's server.
    test_mail_server: str = ""
    mail_default_sender: str = "Subscription Engine <billing@localhost>"
    mail_max_retries: int = 10
    mail_min_backoff_ms: int = 1000
    mail_max_backoff_ms: int = 600_000
    mail_time_limit_seconds: int = 60
    # Webhooks out
    webhooks_allow_private_networks: bool = False
    webhook_endpoint_concurrency: int = 2
    # Metrics: CloudWatch EMF lines on stdout, Prometheus on /metrics and METRICS_PORT
    metrics_emf: str = "on"
    metrics_flush_seconds: float = 10.0
    metrics_port: int = 0

    def __post_init__(self) -> None:
        # SQLAlchemy reads plain postgresql:// as psycopg 3; the engine has psycopg2.
        object.__setattr__(self, "database_url", _psycopg2(self.database_url))
        replicas = ",".join(_psycopg2(u.strip()) for u in self.database_replica_urls.split(",")
                            if u.strip())
        object.__setattr__(self, "database_replica_urls", replicas)
        if not 1 <= self.charge_batch_size <= MAX_CHARGE_BATCH_SIZE:
            raise ValueError(f"setting CHARGE_BATCH_SIZE must be 1 to {MAX_CHARGE_BATCH_SIZE},"
                             f" got {self.charge_batch_size}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Config:
        """Build the config from environment variables (DATABASE_URL, REDIS_URL, ...)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = env.get(field.name.upper())
            if raw is not None:
                values[field.name] = _coerce(raw, type(getattr(cls, field.name)), field.name)
        values.update(overrides)
        return cls(**values)

    def __repr__(self) -> str:
        """Every setting but the secrets: keys and passwords hidden, URLs without passwords."""
        shown = []
        for field in fields(self):
            value = getattr(self, field.name)
            if _SECRET_WORDS & set(field.name.split("_")):
                value = "<hidden>" if value else ""
            elif isinstance(value, str):
                value = _URL_PASSWORD.sub(r"\1<hidden>@", value)
            shown.append(f"{field.name}={value!r}")
        return f"Config({', '.join(shown)})"

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, to hand to a child process."""
        return {field.name.upper(): str(getattr(self, field.name)) for field in fields(self)}


#: A claim numbers its attempts' ids with two base32 digits (app/services/charge.py).
MAX_CHARGE_BATCH_SIZE = 1023
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _coerce(raw: str, kind: type, name: str) -> Any:
    if kind is bool:
        if raw.strip().lower() not in _BOOLEANS:
            raise ValueError(f"setting {name.upper()} must be true or false, got {raw!r}")
        return _BOOLEANS[raw.strip().lower()]
    try:
        return kind(raw)
    except ValueError as exc:
        raise ValueError(f"setting {name.upper()} must be a {kind.__name__}, got {raw!r}") from exc


def _psycopg2(url: str) -> str:
    """A PostgreSQL URL with the psycopg2 driver named: postgresql:// and postgres:// too."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql+psycopg2://{rest}" if sep and scheme in ("postgresql", "postgres") else url
