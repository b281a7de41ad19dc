"""Sending the mail of one outbox event, once, however often the actor runs."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from app.mail import context
from app.mail.message import build, kind_of, message_id
from app.mail.sender import Mailer
from app.models import OutboxEvent, SentMail
from app.models.uow import UnitOfWorkFactory

log = logging.getLogger(__name__)


def send_event_mail(
    uows: UnitOfWorkFactory, mailers: Callable[[bool], Mailer | None], event_id: str
) -> str:
    """Send the mail of event `event_id` unless it was sent; returns what happened.

    The dedupe row (event_id, kind) is inserted, the mail handed to SMTP, then the row
    committed: a concurrent or repeated run waits on the row and then finds it; an SMTP
    failure rolls it back so that the retry sends. Only a crash between SMTP's answer and
    the commit can send twice, and the Message-ID then names the same mail. `mailers` gives
    the sender of a mode; none (test mode without TEST_MAIL_SERVER) records it as skipped.
    """
    with uows() as uow:
        event = uow.session.scalar(select(OutboxEvent).where(OutboxEvent.event_id == event_id))
        if event is None:
            log.warning("mail for a pruned or unknown event", extra={"event_id": event_id})
            return "no_event"
        kind = kind_of(event.type)
        if kind is None:
            return "no_mail"
        mail_context = context.load(uow.session, event.payload)
        if mail_context is None:
            return "no_recipient"
        email = build(event.payload, mail_context)
        mailer = mailers(bool(event.payload["livemode"]))
        msg_id = message_id(event_id, kind, mailer.domain) if mailer is not None else ""
        claimed = uow.session.scalar(
            insert(SentMail)
            .values(event_id=event_id, kind=kind, tenant_id=event.payload["tenant_id"],
                    recipient=email.recipient, subject=email.subject, message_id=msg_id,
                    status="sent" if mailer is not None else "skipped")
            .on_conflict_do_nothing(index_elements=["event_id", "kind"])
            .returning(SentMail.id)
        )
        if claimed is None:
            return "duplicate"
        if mailer is None:
            uow.commit()
            log.info("test-mode mail skipped: no TEST_MAIL_SERVER",
                     extra={"event_id": event_id, "kind": kind})
            return "skipped"
        mailer.send(email, msg_id)
        uow.commit()
        log.info("mail sent", extra={"event_id": event_id, "kind": kind})
        return "sent"
