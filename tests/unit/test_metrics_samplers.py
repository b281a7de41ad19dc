"""Samplers run before every flush: one failing (its database down) is logged and the
others still run; a bound method's sampling ends when its object is gone."""

from __future__ import annotations

import gc
import weakref

import pytest

from app.telemetry import metrics


class Probe:
    def __init__(self, fail: bool) -> None:
        self.fail, self.calls = fail, 0

    def sample(self) -> None:
        self.calls += 1
        if self.fail:
            raise RuntimeError("database down")


def test_a_failing_sampler_is_logged_and_samplers_go_with_their_objects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad, good = Probe(fail=True), Probe(fail=False)
    metrics.sampler(bad.sample)
    metrics.sampler(good.sample)
    metrics.flush()  # (the process's flusher thread may run them too, meanwhile)
    assert bad.calls >= 1 and good.calls >= 1
    assert "metrics sampler failed" in caplog.text
    gone = weakref.ref(bad)
    del bad
    gc.collect()
    assert gone() is None  # the registration did not keep it alive
    before = good.calls
    metrics.flush()
    assert good.calls > before
