"""A few sending slots per endpoint, shared by every worker process (a Redis semaphore).

Each holder is a member of a sorted set scored by when its hold lapses, so a worker killed
while sending frees its slot after `HOLD_SECONDS` without anyone's help. Redis down: every
sender may go (the slots only keep one endpoint from taking many threads).
"""

from __future__ import annotations

import logging
import secrets
import time

import redis

log = logging.getLogger(__name__)
HOLD_SECONDS = 60


class Gate:
    """At most `slots` senders per endpoint at once."""

    def __init__(self, client: redis.Redis, namespace: str, slots: int) -> None:
        self._redis = client
        self._prefix = f"{namespace}:webhook-senders:"
        self._slots = slots

    def enter(self, endpoint_id: str) -> str | None:
        """A token holding one of the endpoint's slots, or None when all are taken."""
        key, token, now = self._prefix + endpoint_id, secrets.token_hex(8), time.time()
        try:
            pipe = self._redis.pipeline()
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zadd(key, {token: now + HOLD_SECONDS})
            pipe.zcard(key)
            pipe.expire(key, HOLD_SECONDS)
            if pipe.execute()[2] > self._slots:
                self._redis.zrem(key, token)
                return None
        except redis.RedisError:
            log.warning("webhook sender slots unavailable; sending anyway")
        return token

    def renew(self, endpoint_id: str, token: str) -> None:
        """Keep holding the slot (a long run of sends)."""
        try:
            self._redis.zadd(self._prefix + endpoint_id, {token: time.time() + HOLD_SECONDS},
                             xx=True)
        except redis.RedisError:
            pass

    def leave(self, endpoint_id: str, token: str) -> None:
        try:
            self._redis.zrem(self._prefix + endpoint_id, token)
        except redis.RedisError:
            pass
