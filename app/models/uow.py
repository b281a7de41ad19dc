"""The unit of work: one transaction, committed explicitly, rolled back by default.

The one transaction convention: the entry point (view, actor, scheduler job, CLI command)
opens the unit of work and commits it; services only use it. `commit()` writes the outbox
events the transaction recorded, then commits, then sends the messages `enqueue` deferred
and runs the other callbacks that waited for the commit: nothing leaves before the commit
that made it true, and no event or message is lost or kept from a transaction that rolled
back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from types import TracebackType
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from app.events import outbox

log = logging.getLogger(__name__)


class Send(Protocol):
    """Sends a message to an actor by name, now (the composition root's `Container.enqueue`)."""

    def __call__(self, actor_name: str, /, *args: Any, delay_ms: int | None = None) -> None: ...


class UnitOfWork:
    """A session plus the messages and callbacks that may leave only once its transaction
    has committed."""

    def __init__(self, session_factory: sessionmaker[Session], send: Send | None = None) -> None:
        """`send` is how `enqueue` sends after commit; None for a unit of work that only
        writes (a tool's), where `enqueue` raises."""
        self._session_factory = session_factory
        self._send = send
        self._after_commit: list[Callable[[], None]] = []
        self.committed = False  # whether anything was committed (the API remembers writes)

    def __enter__(self) -> UnitOfWork:
        self.session = self._session_factory()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.rollback()
        self.session.close()

    def enqueue(self, actor_name: str, *args: Any) -> None:
        """Send `actor_name(*args)` right after the next successful commit; never if the
        transaction rolls back."""
        if self._send is None:
            raise RuntimeError("this unit of work was made without a sender: it cannot enqueue")
        self.after_commit(partial(self._send, actor_name, *args))

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` right after the next successful commit (e.g. drop a cache entry);
        actors are sent with `enqueue`."""
        self._after_commit.append(callback)

    def commit(self) -> None:
        """Write the recorded outbox events, commit, then send the enqueued messages and run
        the after-commit callbacks, in the order they were added."""
        outbox.flush(self.session)
        self.session.commit()
        self.committed = True
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    def rollback(self) -> None:
        """Discard the transaction, its recorded events and the messages and callbacks that
        waited for it."""
        self._after_commit.clear()
        outbox.discard(self.session)
        self.session.rollback()


UnitOfWorkFactory = Callable[[], UnitOfWork]
