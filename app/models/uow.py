"""The unit of work: one transaction, committed explicitly, rolled back by default.

`commit()` writes the outbox events the transaction recorded, then commits, then runs what
waited for the commit (enqueueing actors): nothing leaves before the commit that made it
true, and no event is lost or kept from a transaction that rolled back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

from app.events import outbox

log = logging.getLogger(__name__)


class UnitOfWork:
    """A session plus the callbacks that may run only once its transaction has committed."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory
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

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` right after the next successful commit (e.g. enqueue an actor)."""
        self._after_commit.append(callback)

    def commit(self) -> None:
        """Write the recorded outbox events, commit, then run the after-commit callbacks in
        the order they were added."""
        outbox.flush(self.session)
        self.session.commit()
        self.committed = True
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    def rollback(self) -> None:
        """Discard the transaction, its recorded events and the callbacks that waited for it."""
        self._after_commit.clear()
        outbox.discard(self.session)
        self.session.rollback()


UnitOfWorkFactory = Callable[[], UnitOfWork]
