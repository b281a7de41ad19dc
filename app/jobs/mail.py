"""The mail actor: its own queue, so mail never waits behind charging nor charging behind mail."""

from __future__ import annotations

import functools

import dramatiq
from sqlalchemy.exc import OperationalError

from app.bootstrap import QUEUES
from app.jobs.runtime import container
from app.mail import service
from app.mail.sender import Mailer, mailer_for

_config = container().config


def _transient(retries: int, exc: BaseException) -> bool:
    """SMTP or the network down (OSError covers smtplib's errors), or the database blinked."""
    return isinstance(exc, OSError | OperationalError) and retries < _config.mail_max_retries


@functools.cache
def mailer(livemode: bool) -> Mailer | None:
    """This worker process's Flask-Mail sender of a mode (test mode: TEST_MAIL_SERVER's)."""
    return mailer_for(container().config, livemode=livemode)


@dramatiq.actor(
    queue_name=QUEUES["send_mail"],
    max_retries=_config.mail_max_retries,
    min_backoff=_config.mail_min_backoff_ms,
    max_backoff=_config.mail_max_backoff_ms,
    time_limit=_config.mail_time_limit_seconds * 1000,
    retry_when=_transient,
)
def send_mail(event_id: str) -> None:
    """Send the customer the mail of outbox event `event_id`, once."""
    service.send_event_mail(container().uow, mailer, event_id)
