"""The unit of work: one transaction, committed explicitly, rolled back by default."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

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
        """Commit, then run the after-commit callbacks in the order they were added."""
        self.session.commit()
        self.committed = True
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    def rollback(self) -> None:
        """Discard the transaction and the callbacks that waited for it."""
        self._after_commit.clear()
        self.session.rollback()


UnitOfWorkFactory = Callable[[], UnitOfWork]
