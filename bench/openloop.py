"""An open-loop HTTP load generator: requests leave on a fixed schedule, whatever the server does.

Latency is measured from each request's *scheduled* send time, not from when a connection
became free, so a stalled server shows up as latency instead of quietly lowering the rate
(no coordinated omission). This is what wrk2 does; Debian does not package wrk2, and
neither aiohttp nor httpx is installed, so this speaks HTTP/1.1 over asyncio streams.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Sequence number -> the raw bytes of one HTTP request.
RequestFactory = Callable[[int], bytes]
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_FAILURES = (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


@dataclass(frozen=True)
class Sample:
    """One request: when it was due, how long until its full answer, and the answer."""

    due: float  # seconds after the start of the run
    latency: float  # seconds from `due` to the complete response (or the failure)
    status: int  # 0 when the connection failed, the request timed out or was never sent
    body: bytes
    answered_at: float  # wall clock (time.time()) when the response was complete
    sent: bool = True  # False: no connection slot came free in time (the server was behind)


def request_bytes(method: str, path: str, host: str, headers: dict[str, str], body: bytes) -> bytes:
    """A complete HTTP/1.1 request."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _exchange(stream: Stream, payload: bytes) -> tuple[int, bytes, bool]:
    """Send one request and read its answer; the flag says whether the connection stays open."""
    reader, writer = stream
    writer.write(payload)
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    fields = dict(line.partition(":")[::2] for line in head[1:] if line)
    headers = {name.strip().lower(): value.strip() for name, value in fields.items()}
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("connection", "").lower() == "close":
        body = await reader.read()
    else:
        raise ValueError("response without Content-Length on a kept-alive connection")
    keep = head[0].startswith("HTTP/1.1") and headers.get("connection", "").lower() != "close"
    return status, body, keep


class _Connections:
    """Keep-alive connections to reuse; a server that closes each one (gunicorn sync) gets new."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._idle: list[Stream] = []

    async def send(self, payload: bytes) -> tuple[int, bytes]:
        while self._idle:
            stream = self._idle.pop()
            try:
                return await self._send_on(stream, payload)
            except _FAILURES:
                continue  # the server closed this idle connection; use another
        stream = await asyncio.open_connection(self._host, self._port)
        return await self._send_on(stream, payload)

    async def _send_on(self, stream: Stream, payload: bytes) -> tuple[int, bytes]:
        try:
            status, body, keep = await _exchange(stream, payload)
        except BaseException:
            stream[1].close()
            raise
        if keep:
            self._idle.append(stream)
        else:
            stream[1].close()
        return status, body


async def run_fixed_rate(
    host: str,
    port: int,
    rate: float,
    seconds: float,
    factory: RequestFactory,
    *,
    send_timeout: float = 5.0,
    answer_timeout: float = 30.0,
    max_in_flight: int = 64,
) -> list[Sample]:
    """Send `rate` requests per second for `seconds`, each on schedule; every answer, in order.

    At most `max_in_flight` requests are on the wire; the others wait their turn here, and
    that wait counts as latency. A request that could not be sent within `send_timeout` of
    its due time is dropped (status 0, never sent); one that was sent is waited for (up to
    `answer_timeout`), because the server would process it anyway: giving up on it would
    only leave the server a backlog of abandoned work that spoils the next phase.
    """
    loop = asyncio.get_running_loop()
    connections = _Connections(host, port)
    gate = asyncio.Semaphore(max_in_flight)
    start = loop.time() + 0.05

    async def one(number: int, due: float) -> Sample:
        try:
            async with asyncio.timeout_at(due + send_timeout):
                await gate.acquire()
        except TimeoutError:
            return Sample(due - start, loop.time() - due, 0, b"", time.time(), sent=False)
        try:
            async with asyncio.timeout(answer_timeout):
                status, body = await connections.send(factory(number))
        except (*_FAILURES, TimeoutError):
            status, body = 0, b""
        finally:
            gate.release()
        return Sample(due - start, loop.time() - due, status, body, time.time())

    tasks = []
    for number in range(int(rate * seconds)):
        due = start + number / rate
        wait = due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(number, due)))
    return list(await asyncio.gather(*tasks))


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The value below which `fraction` of the sorted values fall (nearest rank)."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, int(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def percentiles_ms(values: list[float]) -> dict[str, float | int]:
    """Count, p50, p90, p99 and max of seconds, in milliseconds."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    return {
        "count": len(ordered),
        "p50": round(percentile(ordered, 0.5) * 1000, 1),
        "p90": round(percentile(ordered, 0.9) * 1000, 1),
        "p99": round(percentile(ordered, 0.99) * 1000, 1),
        "max": round(ordered[-1] * 1000, 1),
    }


def summary(samples: list[Sample], rate: float, seconds: float, ok: int) -> dict[str, Any]:
    """What one fixed-rate run achieved: answers by status, `ok` answers per second (counted to
    the last answer, so a server that fell behind shows a lower rate), latency from schedule."""
    statuses = Counter(str(s.status) for s in samples)
    good = statuses.get(str(ok), 0)
    last = max((s.due + s.latency for s in samples), default=seconds)
    return {
        "offered_per_s": rate,
        "seconds": seconds,
        "sent": len(samples),
        "ok": good,
        "ok_per_s": round(good / max(last, seconds), 1),
        "error_rate": round(1 - good / len(samples), 4) if samples else 1.0,
        "statuses": dict(statuses),
        "not_sent": sum(1 for s in samples if not s.sent),
        "latency_ms": percentiles_ms([s.latency for s in samples]),
    }


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points: how fast y grows per unit of x."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var if var else 0.0
