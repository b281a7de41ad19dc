"""The actors' one retry policy (Container.retries, Dramatiq's Retries) and how long a worker
waits before retrying a charge the provider refused for now."""

from __future__ import annotations

import dramatiq
from hypothesis import given
from hypothesis import strategies as st

from app.bootstrap import Container
from app.config import Config
from app.providers.errors import PaymentDeclined, ProviderRateLimited, ProviderUnavailable

CONTAINER = Container(Config(charge_max_retries=5, charge_min_backoff_ms=1000,
                             charge_max_backoff_ms=300_000))


def test_a_retry_after_is_honoured_never_shortened() -> None:
    assert CONTAINER.retry_after_ms(ProviderRateLimited("429", retry_after=7)) == 7000
    assert CONTAINER.retry_after_ms(ProviderRateLimited("429", retry_after=0.2)) == 1000
    assert CONTAINER.retry_after_ms(ProviderRateLimited("429", retry_after=86_400)) == 86_400_000


def test_without_a_retry_after_our_own_backoff_decides() -> None:
    assert CONTAINER.retry_after_ms(ProviderRateLimited("429")) is None


def test_the_broker_retries_with_the_configured_bounds() -> None:
    retries = CONTAINER.retries
    assert (retries.max_retries, retries.min_backoff, retries.max_backoff) == (5, 1000, 300_000)


@given(st.integers(min_value=0, max_value=40))
def test_only_transient_errors_retry_a_bounded_number_of_times(retries: int) -> None:
    retry_when = CONTAINER.retries.retry_when
    assert retry_when is not None
    for transient in (ProviderUnavailable("500"), ProviderRateLimited("429"),
                      dramatiq.Retry("a test clock's payments are not settled yet")):
        assert retry_when(retries, transient) is (retries < 5)
    assert retry_when(retries, PaymentDeclined("card_declined", "declined", hard=False)) is False
    assert retry_when(retries, ValueError("a bug")) is False
