"""How long a worker waits before retrying a charge the provider refused for now."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.providers.errors import ProviderRateLimited, ProviderUnavailable
from app.services.charge import RetryPolicy

POLICY = RetryPolicy(max_retries=5, min_backoff_ms=1000, max_backoff_ms=300_000)


def test_a_retry_after_is_honoured_never_shortened() -> None:
    assert POLICY.wait_ms(ProviderRateLimited("429", retry_after=7)) == 7000
    assert POLICY.wait_ms(ProviderRateLimited("429", retry_after=0.2)) == 1000
    assert POLICY.wait_ms(ProviderRateLimited("429", retry_after=86_400)) == 86_400_000


def test_without_a_retry_after_our_own_backoff_decides() -> None:
    assert POLICY.wait_ms(ProviderRateLimited("429")) is None
    assert POLICY.wait_ms(ProviderUnavailable("500")) is None


@given(st.integers(min_value=1, max_value=40))
def test_backoff_doubles_up_to_the_maximum(retries: int) -> None:
    waited = POLICY.backoff_seconds(retries)
    assert waited == min(2 ** (retries - 1), 300)
    assert POLICY.backoff_seconds(retries + 1) >= waited
