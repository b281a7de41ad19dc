"""charge_payment's window: the young charge messages a worker process takes within
CHARGE_LINGER_MS of the first one name their payments in one claim, made by the first.

Worker threads of one process coordinate here; nothing is shared between processes. A
window's claim takes no mates (other pending payments, app/services/charge.py): only a
message taken late, when the fleet is behind, does.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.services.charge import Claim


class Window:
    """The young charge messages a worker process takes within CHARGE_LINGER_MS of the first.

    The first message taken while no window is open opens one, which ends when that message
    is CHARGE_LINGER_MS old (or names CHARGE_BATCH_SIZE payments); young messages taken
    before then join it. At its end the first (the lead) claims every payment the window's
    messages name in one statement, then charges and settles them in one batch; the others
    are done once that claim is made: their payments are the batch's to finish, as an old
    message's mates are (settled, or a new message of their own for a transient error). If
    the claim fails, each of them raises its error, and its message is retried.

    So one claim, one provider call and one settle for the whole window, where each message
    used to claim by itself and the concurrent claims split the window's payments between
    them; and no thread waits for another's provider call. An old message (a backlog, a
    retry: its first try was at least a backoff ago) opens no window and joins none.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: Batch | None = None

    def join(self, payment_id: str, sent_at: float | None, window: float, size: int
             ) -> Joined | None:
        """The window the message of this payment, sent at `sent_at` (epoch seconds), joins;
        None: it is older than `window` seconds, or lingering is off: it claims on its own,
        at once."""
        now = time.time()
        # a message sent "later" than now (clock skew) waits no more than the window
        ends = min(sent_at + window, now + window) if sent_at is not None else now
        if window <= 0 or size <= 1 or ends <= now:
            return None
        with self._lock:
            batch = self._open
            if batch is None or batch.ends <= now:
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
    claimed: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


@dataclass(frozen=True)
class Joined:
    """One message's place in a window."""

    window: Window
    batch: Batch
    leads: bool

    def claim(self, claiming: Callable[[list[str]], list[Claim]]) -> list[Claim]:
        """The lead's part: wait for the window's end, close it, and claim its payments."""
        batch = self.batch
        try:
            time.sleep(max(0.0, batch.ends - time.time()))
            self.window.close(batch)
            return claiming(list(batch.payment_ids))
        except BaseException as exc:  # the others raise it too, each for its own message
            batch.error = exc
            raise
        finally:
            batch.claimed.set()

    def wait(self) -> None:
        """The others' part: wait for the lead's claim; raise its error if it failed."""
        self.batch.claimed.wait()
        if self.batch.error is not None:
            raise copy.copy(self.batch.error) from self.batch.error
