"""What Dramatiq's Redis broker holds, read from its keys (dramatiq/brokers/redis/dispatch.lua):
`<namespace>:<queue>` is a list of the ready message ids, oldest first; `<namespace>:<queue>.msgs`
maps each id to its JSON message, from its enqueue until a worker acknowledges it (ready, or
fetched and not acknowledged yet); `<queue>.DQ` is the queue of delayed messages, laid out the
same way. A worker's fetched ids are in `<namespace>:__acks__.<worker>.<queue>`, and
`<namespace>:__heartbeats__` scores each worker by its last command (milliseconds)."""

from __future__ import annotations

import json
import time
from typing import Any

import redis


def held_messages(client: redis.Redis, namespace: str, queue: str, *,
                  silent_ms: int) -> list[dict[str, Any]]:
    """Every message the broker holds for a queue's workers, as JSON: ready, delayed, or
    fetched by a worker that has not acknowledged it (it runs, or waits in that worker).

    Not those fetched by a worker silent for `silent_ms`: it died (SIGKILL), and they wait
    for another worker's maintenance, after DRAMATIQ_HEARTBEAT_TIMEOUT_MS and only by chance
    at each command. A live worker's idle consumers send a command every second or so.
    """
    silent = [_text(worker) for worker in client.zrangebyscore(
        f"{namespace}:__heartbeats__", "-inf", time.time() * 1000 - silent_ms)]
    messages = []
    for name in (queue, f"{queue}.DQ"):
        held = {_text(key): raw for key, raw in client.hgetall(f"{namespace}:{name}.msgs").items()}
        for worker in silent:
            for message_id in client.smembers(f"{namespace}:__acks__.{worker}.{name}"):
                held.pop(_text(message_id), None)
        messages += [json.loads(raw) for raw in held.values()]
    return messages


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def queue_backlog(client: redis.Redis, namespace: str, queue: str) -> tuple[int, float]:
    """Messages ready in a queue of Dramatiq's Redis broker, and the age in seconds of the
    oldest (the list's head), counted from when it became ready: its enqueue, or its eta."""
    key = f"{namespace}:{queue}"
    depth, head = client.llen(key), client.lindex(key, 0)
    if head is None:
        return int(depth), 0.0
    raw = client.hget(f"{key}.msgs", head)
    if raw is None:  # fetched between the two reads
        return int(depth), 0.0
    message = json.loads(raw)
    ready_ms = max(message["message_timestamp"], message["options"].get("eta", 0))
    return int(depth), max(0.0, time.time() - ready_ms / 1000)
