"""charge_payment's window: the young charge messages a worker process takes within
CHARGE_LINGER_MS of the first one are claimed, charged and settled in one batch, once.

Worker threads of one process coordinate here; nothing is shared between processes (each
claim still takes mates across processes and tenants, app/services/charge.py).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.services.charge import Outcome


class Window:
    """The young charge messages a worker process takes within CHARGE_LINGER_MS of the first
    one: their payments are claimed, charged and settled in one batch, once.

    The first message taken while no window is open opens one, which ends when that
    message is CHARGE_LINGER_MS old (or holds CHARGE_BATCH_SIZE payments); messages taken
    before then join it. Its first message (the lead) waits for the end, then runs the
    batch; the others wait for the lead and take their own payment's outcome from it (a
    transient error is raised by each message for its own payment, so each retries on its
    own, as before). One claim, one provider call and one settle for the whole window,
    where each message used to claim by itself and the claims split the payments between
    them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: Batch | None = None

    def join(self, payment_id: str, sent_at: float | None, window: float, size: int
             ) -> Joined | None:
        """The window the message of this payment, sent at `sent_at` (epoch seconds), joins;
        None: it is older than `window` seconds and none is open, or lingering is off: it
        claims on its own, at once."""
        if sent_at is None or window <= 0 or size <= 1:
            return None
        now = time.time()
        with self._lock:
            batch = self._open
            if batch is None or batch.ends <= now:
                # a message sent "later" than now (clock skew) waits no more than the window
                ends = min(sent_at + window, now + window)
                if ends <= now:
                    return None
                batch = self._open = Batch(ends)
            batch.payment_ids.append(payment_id)
            if len(batch.payment_ids) >= size:  # full: the next message opens another
                self._open = None
            return Joined(self, batch, leads=len(batch.payment_ids) == 1)

    def close(self, batch: Batch) -> None:
        with self._lock:
            if self._open is batch:
                self._open = None


@dataclass
class Batch:
    ends: float
    payment_ids: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    retry: list[Outcome] = field(default_factory=list)
    error: BaseException | None = None


@dataclass(frozen=True)
class Joined:
    """One message's place in a window."""

    window: Window
    batch: Batch
    leads: bool

    def run(self, charging: Callable[[list[str]], list[Outcome]]
            ) -> list[Outcome]:
        """The lead's part: wait for the window's end, close it, charge its payments."""
        batch = self.batch
        try:
            time.sleep(max(0.0, batch.ends - time.time()))
            self.window.close(batch)
            batch.retry = charging(list(batch.payment_ids))
            return batch.retry
        except BaseException as exc:  # the others raise it too, each for its own message
            batch.error = exc
            raise
        finally:
            batch.done.set()

    def outcome(self) -> list[Outcome]:
        """The others' part: the lead's outcomes, or its error (each message retries)."""
        self.batch.done.wait()
        if self.batch.error is not None:
            raise copy.copy(self.batch.error) from self.batch.error
        return self.batch.retry
