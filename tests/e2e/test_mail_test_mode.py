"""Test-mode mail never reaches a real customer: it goes only to TEST_MAIL_SERVER, and with
that unset it is recorded as skipped and not sent. Live-mode mail goes to MAIL_SERVER.

A real worker fleet sends each event's mail (`send_mail`), with two real SMTP servers: one
as MAIL_SERVER, one as TEST_MAIL_SERVER.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import select

from app.bootstrap import Container, build
from app.config import Config
from app.models import SentMail
from tests.conftest import start_worker
from tests.eventing import SmtpServer, record, subscription_object
from tests.support import Api, eventually


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[SmtpServer, SmtpServer]]:
    """(MAIL_SERVER, TEST_MAIL_SERVER)."""
    servers = (SmtpServer(), SmtpServer())
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


def mailing(config: Config, live: SmtpServer, test_server: str) -> Iterator[Container]:
    """A worker fleet of its own namespace mailing live mode to `live`, test mode per
    `test_server`; the container to enqueue to it."""
    own = replace(config, redis_namespace=f"{config.redis_namespace}-mm-{uuid.uuid4().hex[:6]}",
                  mail_port=live.port, test_mail_server=test_server, mail_min_backoff_ms=50,
                  mail_max_backoff_ms=200)
    worker = start_worker(own, threads=2, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        yield build(own)
    finally:
        worker.terminate()
        worker.wait(timeout=30)


@pytest.fixture(scope="module")
def unset(config: Config, smtp: tuple[SmtpServer, SmtpServer]) -> Iterator[Container]:
    yield from mailing(config, smtp[0], "")


@pytest.fixture(scope="module")
def to_sink(config: Config, smtp: tuple[SmtpServer, SmtpServer]) -> Iterator[Container]:
    yield from mailing(config, smtp[0], f"127.0.0.1:{smtp[1].port}")


def cancel_mail(container: Container, api: Api, *, livemode: bool) -> tuple[str, str]:
    """Enqueue the "subscription canceled" mail of a new customer: (event id, address)."""
    address = f"m-{uuid.uuid4().hex[:10]}@example.com"
    key = api.live_key if livemode else None
    customer = api.customer(email=address, key=key)
    canceled = subscription_object(customer["id"], "canceled")
    event_id = record(container, "subscription.canceled", canceled, api.tenant_id,
                      livemode=livemode)
    container.enqueue("send_mail", event_id)
    return event_id, address


def recorded(container: Container, event_id: str) -> str | None:
    with container.uow() as uow:
        status = uow.session.scalar(select(SentMail.status).where(SentMail.event_id == event_id))
    return None if status is None else str(status)


def test_test_mode_mail_is_skipped_without_a_test_mail_server(
    unset: Container, api: Api, smtp: tuple[SmtpServer, SmtpServer]
) -> None:
    live, test_sink = smtp
    event_id, address = cancel_mail(unset, api, livemode=False)
    assert eventually(lambda: recorded(unset, event_id), 30, what="the mail's record") == "skipped"
    live_event, live_address = cancel_mail(unset, api, livemode=True)
    eventually(lambda: live.inbox.to(live_address), 30, what="the live-mode mail")
    assert eventually(lambda: recorded(unset, live_event), 30, what="its record") == "sent"
    assert live.inbox.to(address) == [] and test_sink.inbox.to(address) == []


def test_test_mode_mail_goes_only_to_the_test_mail_server(
    to_sink: Container, api: Api, smtp: tuple[SmtpServer, SmtpServer]
) -> None:
    live, test_sink = smtp
    event_id, address = cancel_mail(to_sink, api, livemode=False)
    [mail] = eventually(lambda: test_sink.inbox.to(address), 30, what="the test-mode mail")
    assert mail["X-Mail-Kind"] == "subscription_canceled"
    assert eventually(lambda: recorded(to_sink, event_id), 30, what="its record") == "sent"
    _, live_address = cancel_mail(to_sink, api, livemode=True)
    eventually(lambda: live.inbox.to(live_address), 30, what="the live-mode mail")
    assert live.inbox.to(address) == [] and test_sink.inbox.to(live_address) == []
