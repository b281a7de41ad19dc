"""The unit of work sends what a transaction enqueued only after that transaction commits."""

from __future__ import annotations

from typing import Any

from app.bootstrap import Container
from app.models.uow import UnitOfWork


class Sent:
    """A sender that records what it was given, in order."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, tuple[Any, ...]]] = []

    def __call__(self, actor_name: str, *args: Any, delay_ms: int | None = None) -> None:
        self.messages.append((actor_name, args))


def test_enqueued_messages_leave_after_commit_in_order(container: Container) -> None:
    sent = Sent()
    with UnitOfWork(container.session_factory, sent) as uow:
        uow.enqueue("charge_payment", "pay_1")
        uow.enqueue("process_subscriptions", ["sub_1", "sub_2"])
        assert sent.messages == [], "nothing leaves before the commit"
        uow.commit()
        assert sent.messages == [("charge_payment", ("pay_1",)),
                                 ("process_subscriptions", (["sub_1", "sub_2"],))]
        uow.commit()
    assert len(sent.messages) == 2, "a message is sent by the commit that made it, once"


def test_a_rolled_back_transaction_sends_nothing(container: Container) -> None:
    sent = Sent()
    with UnitOfWork(container.session_factory, sent) as uow:
        uow.enqueue("charge_payment", "pay_1")
    with UnitOfWork(container.session_factory, sent) as uow:
        uow.enqueue("charge_payment", "pay_2")
        uow.rollback()
        uow.commit()
    assert sent.messages == []
