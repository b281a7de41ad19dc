"""The one composition root: everything a process needs, built on call, never at import."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import dramatiq
import psycopg2
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Retries, default_middleware
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app import cache
from app.config import DEV_CREDENTIALS_KEY, Config
from app.models.uow import UnitOfWork
from app.providers.credentials import CredentialStore, Sealer, TenantProviders, builders
from app.providers.errors import ProviderRateLimited, TransientProviderError
from app.providers.registry import ProviderRegistry
from app.providers.sandbox import SandboxProvider
from app.replicas import Replica, Replicas, bound_replica_waits, replica_name

log = logging.getLogger(__name__)

#: Actors that do not run on the default queue.
QUEUES = {"send_mail": "mail", "deliver_webhooks": "webhooks", "advance_test_clock": "clocks",
          "clock_retries_exhausted": "clocks"}
#: Errors after which an actor's message is retried: the provider did not process the
#: request, our database or Redis blinked, an actor asked for it (dramatiq.Retry: a test
#: clock's payments are not settled yet, a provider's Retry-After). Declines and lost
#: answers are settled by the services and never raised.
TRANSIENT = (TransientProviderError, dramatiq.Retry, OperationalError,
             InterfaceError, psycopg2.OperationalError, psycopg2.InterfaceError,
             redis.RedisError)


@dataclass
class Container:
    """Process-wide resources; each is made the first time it is used."""

    config: Config

    @cached_property
    def engine(self) -> Engine:
        """The primary: every write, the scheduler's claims and the workers' reads."""
        return self._engine(self.config.database_url)

    @cached_property
    def session_factory(self) -> sessionmaker[Session]:
        return sessionmaker(self.engine, expire_on_commit=False)

    @cached_property
    def replicas(self) -> Replicas | None:
        """The read replicas of DATABASE_REPLICA_URLS (None: every read on the primary)."""
        if not self.config.database_replica_urls:
            return None
        urls = self.config.database_replica_urls.split(",")
        bound_replica_waits(urls, self.config.db_statement_timeout_ms / 1000 + 1,
                            self.config.db_connect_timeout_seconds)
        members = []
        for url in urls:
            engine = self._engine(url)
            members.append(Replica(replica_name(url), engine, sessionmaker(engine)))
        return Replicas(self.engine, members, self.cache.client, self.config.redis_namespace,
                        self.config.replica_max_lag_seconds)

    def _engine(self, url: str) -> Engine:
        engine = create_engine(
            url,
            pool_size=self.config.db_pool_size,
            max_overflow=self.config.db_pool_size,
            # No pre-ping (a round trip per checkout): a connection the server dropped fails
            # its request with 503, nothing written, and the pool then discards them all.
            pool_recycle=1800,
            executemany_mode="values_plus_batch",  # batched UPDATEs: one round trip per page
            connect_args={
                "connect_timeout": self.config.db_connect_timeout_seconds,
                "options": f"-c statement_timeout={self.config.db_statement_timeout_ms}"
                           f" -c lock_timeout={self.config.db_lock_timeout_ms}"
                           # Our prepared statements (app/models/prepared.py) put constants
                           # in their SQL, so a generic plan matches partial indexes; left
                           # to choose, PostgreSQL kept planning the charge claim afresh at
                           # every call (0.93 ms a call against 0.39 ms).
                           " -c plan_cache_mode=force_generic_plan",
            },
        )
        event.listen(engine, "checkin", _out_of_autocommit)
        return engine

    @cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.config.redis_url, **redis_options(self.config))

    @cached_property
    def cache(self) -> cache.Cache:
        """The Redis cache every process shares (app/cache.py)."""
        client = cache.connect(self.config.redis_url, **redis_options(self.config))
        return cache.Cache(client, self.config.redis_namespace, self.config.cache_ttl_seconds)

    @cached_property
    def retries(self) -> Retries:
        """The actors' one retry policy, Dramatiq's Retries: only TRANSIENT errors, at most
        CHARGE_MAX_RETRIES times, exponential backoff with jitter between CHARGE_MIN_BACKOFF_MS
        and CHARGE_MAX_BACKOFF_MS (the mail and webhook actors set their own bounds)."""
        limit = self.config.charge_max_retries

        def transient(retries: int, exc: BaseException) -> bool:
            return isinstance(exc, TRANSIENT) and retries < limit

        return Retries(max_retries=limit, min_backoff=self.config.charge_min_backoff_ms,
                       max_backoff=self.config.charge_max_backoff_ms, retry_when=transient)

    def retry_after_ms(self, error: ProviderRateLimited) -> int | None:
        """How long to hold a retry the provider asked to wait for (its Retry-After, at
        least our minimum backoff), never shortened; None: the backoff decides."""
        if error.retry_after is None:
            return None
        return max(int(error.retry_after * 1000), self.config.charge_min_backoff_ms)

    @cached_property
    def broker(self) -> RedisBroker:
        middleware = [m() for m in default_middleware if m is not Retries] + [
            self.retries, CurrentMessage()]  # CurrentMessage: charge_payment's age (linger)
        broker = RedisBroker(  # type: ignore[no-untyped-call]
            client=self.redis,
            namespace=f"{self.config.redis_namespace}-dramatiq",
            heartbeat_timeout=self.config.dramatiq_heartbeat_timeout_ms,
            middleware=middleware,
        )
        dramatiq.set_broker(broker)
        return broker

    @cached_property
    def sealer(self) -> Sealer:
        """Encryption at rest of secrets the engine must read back (CREDENTIALS_KEY).

        Every process that decrypts builds it at start, so one given the public development
        key as its sealing key refuses to start unless ENGINE_ENV=development.
        """
        sealing = self.config.credentials_key.split(",")[0].strip()
        if sealing == DEV_CREDENTIALS_KEY and self.config.engine_env != "development":
            raise ValueError(
                "CREDENTIALS_KEY is the development key, which is public: set your own Fernet "
                "key (see the README), or ENGINE_ENV=development on a development machine"
            )
        return Sealer(self.config.credentials_key)

    @cached_property
    def credentials(self) -> CredentialStore:
        """Tenants' provider credentials, sealed with CREDENTIALS_KEY."""
        return CredentialStore(self.session_factory, self.sealer)

    @cached_property
    def providers(self) -> ProviderRegistry:
        return ProviderRegistry(
            {"sandbox": SandboxProvider(self.session_factory)},
            failure_threshold=self.config.breaker_failure_threshold,
            recovery_seconds=self.config.breaker_recovery_seconds,
            tenant_providers=TenantProviders(self.credentials, builders(self.config)),
        )

    def uow(self) -> UnitOfWork:
        """A new unit of work on the engine's database; what it enqueues is sent after its
        commit by `enqueue`."""
        return UnitOfWork(self.session_factory, self.enqueue)

    def enqueue(self, actor_name: str, *args: Any, delay_ms: int | None = None) -> None:
        """Send a message to an actor by name, now; a broker outage is logged, not raised.

        What a transaction made true is sent after its commit (`UnitOfWork.enqueue` calls
        this); entry points call it directly only for messages no transaction waits for (a
        delayed retry, a wake-up). The scheduler's reconciliation finds any work whose
        message was lost, so a failed send delays work but never loses it.
        """
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=QUEUES.get(actor_name, "default"),
            actor_name=actor_name,
            args=args,
            kwargs={},
            options={},
        )
        try:
            self.broker.enqueue(message, delay=delay_ms)
        except redis.RedisError:
            log.warning("enqueue failed; reconciliation will retry", extra={"actor": actor_name})


def _out_of_autocommit(driver: Any, _record: Any) -> None:
    """Every connection goes back to the pool out of autocommit, even one whose
    `prepared.autocommit` block an asynchronous exception (a Dramatiq time limit) cut before
    it could switch back: its next user's transaction must not commit statement by
    statement."""
    if driver is not None and not driver.closed and driver.autocommit:
        driver.autocommit = False


def redis_options(config: Config) -> dict[str, Any]:
    """What every Redis client (broker, rate limiter, caches) needs beyond REDIS_URL: its
    connect and reply timeouts, and the CA that a rediss:// server's certificate must chain
    to (else the system's CAs).

    A CA with a redis:// URL raises: the setting would be ignored and the traffic clear text.
    """
    timeouts = {"socket_connect_timeout": config.redis_connect_timeout_seconds,
                "socket_timeout": config.redis_socket_timeout_seconds}
    if not config.redis_ssl_cafile:
        return timeouts
    if not config.redis_url.startswith("rediss://"):
        raise ValueError("REDIS_SSL_CAFILE set, but REDIS_URL is not rediss://")
    return {**timeouts, "ssl_ca_certs": config.redis_ssl_cafile}


def build(config: Config | None = None) -> Container:
    """The container for this process, from `config` or the environment."""
    return Container(config or Config.from_env())
