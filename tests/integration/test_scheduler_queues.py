"""What the scheduler reads of Dramatiq's Redis broker, against the real broker on real Redis:
the messages it still holds for a queue's workers (app/scheduler/queues.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from app.config import Config
from app.scheduler.queues import held_messages


@pytest.fixture
def namespace(config: Config) -> Iterator[str]:
    name = f"{config.redis_namespace}-queues-{uuid.uuid4().hex[:6]}"
    yield name
    client = redis.Redis.from_url(config.redis_url)
    for key in client.scan_iter(f"{name}:*"):
        client.delete(key)
    client.close()


def _send(broker: RedisBroker, clock_id: str, delay_ms: int | None = None) -> None:
    broker.enqueue(dramatiq.Message(queue_name="clocks", actor_name="advance_test_clock",
                                    args=(clock_id, 0, 1), kwargs={}, options={}),
                   delay=delay_ms)


def test_held_messages_are_those_a_live_worker_may_still_run(
    config: Config, namespace: str
) -> None:
    live, dead = (RedisBroker(url=config.redis_url, namespace=namespace) for _ in range(2))
    _send(live, "fetched-by-the-dead")
    assert len(dead.do_fetch("clocks", 1)) == 1
    _send(live, "fetched-by-the-living")
    assert len(live.do_fetch("clocks", 1)) == 1
    _send(live, "ready")
    _send(live, "delayed", delay_ms=3_600_000)
    silent_since = (time.time() - 60) * 1000  # its last command a minute ago: SIGKILLed
    live.client.zadd(f"{namespace}:__heartbeats__", {dead.broker_id: silent_since})

    held = held_messages(live.client, namespace, "clocks", silent_ms=10_000)
    assert sorted(m["args"][0] for m in held) == ["delayed", "fetched-by-the-living", "ready"]
    everything = held_messages(live.client, namespace, "clocks", silent_ms=3_600_000)
    assert len(everything) == 4, "a worker silent for less than silent_ms counts as alive"
