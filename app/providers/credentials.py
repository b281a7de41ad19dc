"""Per-tenant provider credentials: sealed with Fernet at rest, opened only to build adapters.

The key comes from CREDENTIALS_KEY (comma-separated Fernet keys: the first seals, any
opens, so keys rotate without downtime; `flask --app wsgi credentials rotate` then re-seals
everything stored with the first, so the others can be removed). Secrets never appear in
logs, reprs or answers: the CLI only says which providers and modes are configured.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from app.clock import utcnow
from app.config import Config
from app.models import ProviderCredential, WebhookEndpoint
from app.providers.base import PaymentProvider
from app.providers.errors import ProviderNotConfigured
from app.providers.paypal import PayPalKeys, PayPalProvider
from app.providers.stripe import StripeKeys, StripeProvider

#: The fields each provider takes; the required ones first.
FIELDS: dict[str, tuple[str, ...]] = {
    "stripe": ("secret_key", "webhook_secret"),
    "paypal": ("client_id", "client_secret", "webhook_id"),
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "stripe": ("secret_key",),
    "paypal": ("client_id", "client_secret"),
}


class Sealer:
    """Fernet encryption of a credentials mapping."""

    def __init__(self, keys: str) -> None:
        fernets = [Fernet(k.strip().encode()) for k in keys.split(",") if k.strip()]
        if not fernets:
            raise ValueError("CREDENTIALS_KEY holds no Fernet key")
        self._fernet = MultiFernet(fernets)

    def seal(self, values: Mapping[str, str]) -> bytes:
        return self._fernet.encrypt(json.dumps(dict(values), sort_keys=True).encode())

    def reseal(self, sealed: bytes) -> bytes:
        """The same secret sealed with the first key (MultiFernet.rotate), opened with any."""
        try:
            return self._fernet.rotate(sealed)
        except InvalidToken:
            raise ProviderNotConfigured(
                "stored credentials cannot be decrypted with CREDENTIALS_KEY"
            ) from None

    def open(self, sealed: bytes) -> dict[str, str]:
        try:
            opened: dict[str, str] = json.loads(self._fernet.decrypt(sealed))
        except InvalidToken:
            raise ProviderNotConfigured(
                "stored credentials cannot be decrypted with CREDENTIALS_KEY"
            ) from None
        return opened


Version = tuple[tuple[bool, datetime], ...]


@dataclass(frozen=True)
class Stored:
    """One tenant's credentials for one provider: by mode, plus a version for caches."""

    version: Version
    by_mode: dict[bool, dict[str, str]] = field(repr=False)


class CredentialStore:
    """Reads and writes sealed credentials rows."""

    def __init__(self, session_factory: sessionmaker[Session], sealer: Sealer) -> None:
        self._sessions = session_factory
        self._sealer = sealer

    def save(self, tenant_id: str, provider: str, *, livemode: bool,
             values: Mapping[str, str]) -> None:
        """Store (or replace) a provider's credentials for one mode; ValueError if incomplete."""
        if provider not in FIELDS:
            raise ValueError(f"credentials are for {sorted(FIELDS)}, not {provider!r}")
        unknown = set(values) - set(FIELDS[provider])
        missing = [f for f in REQUIRED[provider] if not values.get(f)]
        if unknown or missing:
            raise ValueError(f"{provider} takes {list(FIELDS[provider])}; "
                             f"missing {missing}, unknown {sorted(unknown)}")
        sealed = self._sealer.seal({k: v for k, v in values.items() if v})
        with self._sessions() as session, session.begin():
            session.execute(
                insert(ProviderCredential)
                .values(tenant_id=tenant_id, provider=provider, livemode=livemode,
                        sealed=sealed, updated_at=utcnow())
                .on_conflict_do_update(
                    index_elements=["tenant_id", "provider", "livemode"],
                    set_={"sealed": sealed, "updated_at": utcnow()},
                )
            )

    def remove(self, tenant_id: str, provider: str, *, livemode: bool) -> bool:
        """Forget a provider's credentials for one mode; True when there were some."""
        with self._sessions() as session, session.begin():
            gone = session.execute(
                delete(ProviderCredential).where(
                    ProviderCredential.tenant_id == tenant_id,
                    ProviderCredential.provider == provider,
                    ProviderCredential.livemode == livemode,
                ).returning(ProviderCredential.provider)
            ).first()
        return gone is not None

    def configured(self, tenant_id: str) -> list[tuple[str, bool]]:
        """(provider, livemode) pairs this tenant has credentials for; no secrets."""
        with self._sessions() as session:
            rows = session.execute(
                select(ProviderCredential.provider, ProviderCredential.livemode)
                .where(ProviderCredential.tenant_id == tenant_id)
                .order_by(ProviderCredential.provider, ProviderCredential.livemode)
            ).all()
        return [(p, m) for p, m in rows]

    def load(self, tenant_id: str, provider: str, known: Version | None = None) -> Stored | None:
        """The tenant's credentials for `provider`; values are not decrypted if `known`
        is still the current version."""
        with self._sessions() as session:
            rows = session.execute(
                select(ProviderCredential.livemode, ProviderCredential.updated_at,
                       ProviderCredential.sealed)
                .where(ProviderCredential.tenant_id == tenant_id,
                       ProviderCredential.provider == provider)
                .order_by(ProviderCredential.livemode)
            ).all()
        if not rows:
            return None
        version = tuple((m, at) for m, at, _ in rows)
        if version == known:
            return Stored(version, {})
        return Stored(version, {m: self._sealer.open(sealed) for m, _, sealed in rows})


def reseal_all(session_factory: sessionmaker[Session], sealer: Sealer) -> int:
    """Re-seal every stored secret (providers' credentials, webhook endpoints' signing
    secrets) with the first key of CREDENTIALS_KEY, in one transaction; how many.

    Afterwards the other keys open nothing still stored and can be removed. Values (and the
    credentials' versions, which adapters are cached by) do not change.
    """
    resealed = 0
    with session_factory() as session, session.begin():
        for column in (ProviderCredential.sealed, WebhookEndpoint.secret_sealed):
            table = column.class_
            for row in session.scalars(select(table).with_for_update()):
                setattr(row, column.key, sealer.reseal(getattr(row, column.key)))
                resealed += 1
    return resealed


Builder = Callable[[dict[bool, dict[str, str]]], PaymentProvider]


def builders(config: Config) -> dict[str, Builder]:
    """How each provider's adapter is made from one tenant's credentials."""

    def stripe(by_mode: dict[bool, dict[str, str]]) -> PaymentProvider:
        keys = {m: StripeKeys(v["secret_key"], v.get("webhook_secret", ""))
                for m, v in by_mode.items()}
        return StripeProvider(keys, api_base=config.stripe_api_base,
                              timeout=config.provider_timeout_seconds,
                              concurrency=config.provider_concurrency,
                              return_url=config.payment_return_url)

    def paypal(by_mode: dict[bool, dict[str, str]]) -> PaymentProvider:
        keys = {m: PayPalKeys(v["client_id"], v["client_secret"], v.get("webhook_id", ""))
                for m, v in by_mode.items()}
        return PayPalProvider(keys, api_base=config.paypal_api_base,
                              timeout=config.provider_timeout_seconds,
                              concurrency=config.provider_concurrency)

    return {"stripe": stripe, "paypal": paypal}


class TenantProviders:
    """Resolves (provider, tenant) to that tenant's adapter, rebuilt when its credentials change.

    Each call reads the credentials' version (one primary-key lookup); the adapter, its SDK
    client and its OAuth token are reused while the version stays the same.
    """

    def __init__(self, store: CredentialStore, build: Mapping[str, Builder]) -> None:
        self._store = store
        self._build = dict(build)
        self._cache: dict[tuple[str, str], tuple[Version, PaymentProvider]] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str, tenant_id: str) -> PaymentProvider | None:
        if name not in self._build:
            return None
        with self._lock:
            cached = self._cache.get((name, tenant_id))
        stored = self._store.load(tenant_id, name, cached[0] if cached else None)
        if stored is None:
            return None
        if cached is not None and stored.version == cached[0]:
            return cached[1]
        adapter = self._build[name](stored.by_mode)
        with self._lock:
            self._cache[(name, tenant_id)] = (stored.version, adapter)
        return adapter
