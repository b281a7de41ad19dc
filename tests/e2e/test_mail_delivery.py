"""Customer mail end to end: outbox -> relay's dispatcher -> `send_mail` in a real worker ->
Flask-Mail -> a real SMTP server (aiosmtpd). Each kind arrives once, with the right content."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import select, text

from app.bootstrap import Container, build
from app.config import Config
from app.events.embedded_broker import EmbeddedBroker
from app.ids import new_id
from app.models import OutboxEvent, Plan, SentMail
from app.render import timestamp
from tests.conftest import start_worker
from tests.eventing import (
    SmtpServer,
    broker,  # noqa: F401 - fixture
    kafka_config,
    record,
    relay_process,
    subscription_object,
)
from tests.support import Api, eventually


@dataclass
class MailStack:
    """A worker fleet, relay and API of their own Redis namespace, mailing `smtp`."""

    config: Config
    container: Container
    app: Flask
    smtp: SmtpServer

    def api(self) -> Api:
        return Api.for_new_tenant(self.app)

    def mails(self, recipient: str) -> list[Message]:
        return self.smtp.inbox.to(recipient)

    def one_mail(self, recipient: str) -> Message:
        [mail] = eventually(lambda: self.mails(recipient), 30, what=f"mail to {recipient}")
        return mail

    def queued(self, suffix: str) -> int:
        """Messages waiting in this stack's mail queue (`mail` or `mail.DQ`, the delayed)."""
        client = redis.Redis.from_url(self.config.redis_url)
        try:
            return int(client.hlen(f"{self.config.redis_namespace}-dramatiq:{suffix}.msgs"))
        finally:
            client.close()


@pytest.fixture(scope="module")
def stack(
    config: Config, broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
) -> Iterator[MailStack]:
    smtp = SmtpServer()
    smtp.start()
    own = kafka_config(config, broker, redis_namespace=f"{config.redis_namespace}-mail",
                       mail_port=smtp.port, test_mail_server=f"127.0.0.1:{smtp.port}",
                       mail_min_backoff_ms=50, mail_max_backoff_ms=200,
                       mail_default_sender="Billing <billing@merchant.test>")
    logs = tmp_path_factory.mktemp("mail")
    worker = start_worker(own, threads=2, stdout=(logs / "worker.log").open("ab"),
                          stderr=subprocess.STDOUT)
    relay = relay_process(own, logs / "relay.log")
    from app.api import create_app

    yield MailStack(own, build(own), create_app(own), smtp)
    for process in (relay, worker):
        process.terminate()
        process.wait(timeout=30)
    smtp.stop()


def customer(api: Api) -> tuple[str, str]:
    """A customer with an address of its own: (id, email)."""
    address = f"c-{uuid.uuid4().hex[:10]}@example.com"
    created = api.customer(email=address, name="Ada Lovelace")
    return created["id"], address


def bodies(mail: Message) -> tuple[str, str]:
    """(plain text, html) of a multipart/alternative mail."""
    parts = {p.get_content_type(): p for p in mail.walk() if not p.is_multipart()}
    text_part = parts["text/plain"].get_payload(decode=True)
    html_part = parts["text/html"].get_payload(decode=True)
    assert isinstance(text_part, bytes) and isinstance(html_part, bytes)
    return text_part.decode(), html_part.decode()


def pay(api: Api, customer_id: str, token: str) -> dict[str, Any]:
    method = api.payment_method(customer_id, token)
    body = {"amount": 4250, "currency": "eur", "customer_id": customer_id,
            "payment_method_id": method["id"], "description": "Pro <annual>"}
    response = api.post("/pay", body, headers={"Idempotency-Key": uuid.uuid4().hex})
    return api.settled(api.ok(response, 202)["id"])


def test_payment_receipt(stack: MailStack) -> None:
    api = stack.api()
    customer_id, address = customer(api)
    payment = pay(api, customer_id, "tok_ok")
    mail = stack.one_mail(address)
    text_body, html_body = bodies(mail)
    assert mail["Subject"] == "Receipt for your payment of 42.50 EUR"
    assert mail["From"] == "Billing <billing@merchant.test>"
    assert mail["X-Mail-Kind"] == "receipt"
    assert mail["Message-ID"].endswith("receipt@merchant.test>")
    assert "Hi Ada Lovelace" in text_body and payment["id"] in text_body
    assert "Pro <annual>" in text_body
    assert "Pro &lt;annual&gt;" in html_body and "<strong>42.50 EUR</strong>" in html_body


def test_payment_failed_without_and_with_a_retry_date(stack: MailStack) -> None:
    api = stack.api()
    customer_id, address = customer(api)
    declined = pay(api, customer_id, "tok_decline")
    mail = stack.one_mail(address)
    text_body, _ = bodies(mail)
    assert mail["Subject"] == "Your payment of 42.50 EUR failed"
    assert declined["id"] in text_body and "declined" in text_body
    assert "try again" not in text_body

    other_id, other_address = customer(api)
    retry = datetime(2031, 3, 14, 9, 0, tzinfo=UTC)
    failed = {**declined, "id": new_id("pay"), "customer_id": other_id,
              "subscription_id": new_id("sub"), "next_retry_at": timestamp(retry)}
    record(stack.container, "payment.failed", failed, api.tenant_id)
    text_body, html_body = bodies(stack.one_mail(other_address))
    assert "We will try again on March 14, 2031" in text_body
    assert "<strong>March 14, 2031</strong>" in html_body


def test_trial_ending_and_subscription_canceled(stack: MailStack) -> None:
    api = stack.api()
    customer_id, address = customer(api)
    plan_id = new_id("plan")
    with stack.container.uow() as uow:
        uow.session.add(Plan(id=plan_id, tenant_id=api.tenant_id, livemode=False, code=plan_id,
                             name="Pro Monthly", amount=1500, currency="usd", interval="month",
                             interval_count=1, trial_days=14))
        uow.commit()
    trial_end = datetime(2030, 5, 20, tzinfo=UTC)
    trialing = subscription_object(customer_id, "trialing", plan_id=plan_id,
                                   trial_end=timestamp(trial_end))
    record(stack.container, "subscription.trial_will_end", trialing, api.tenant_id)
    mail = stack.one_mail(address)
    text_body, _ = bodies(mail)
    assert mail["Subject"] == "Your trial of Pro Monthly ends on May 20, 2030"
    assert "15.00 USD every month" in text_body

    canceled = subscription_object(customer_id, "canceled", id=trialing["id"], plan_id=plan_id,
                                   cancellation_reason="payment_failed")
    record(stack.container, "subscription.canceled", canceled, api.tenant_id)
    mails = eventually(lambda: len(stack.mails(address)) == 2 and stack.mails(address), 30,
                       what="the cancellation mail")
    text_body, _ = bodies(mails[1])
    assert mails[1]["Subject"] == "Your subscription to Pro Monthly has been canceled"
    assert "because its payment failed after every retry" in text_body


def test_each_mail_is_sent_once_when_dispatched_and_delivered_again(stack: MailStack) -> None:
    api = stack.api()
    customer_id, address = customer(api)
    payment = pay(api, customer_id, "tok_ok")
    stack.one_mail(address)
    with stack.container.uow() as uow:
        event_id = uow.session.scalar(select(OutboxEvent.event_id).where(
            OutboxEvent.key == payment["id"], OutboxEvent.type == "payment.succeeded"))
        uow.session.execute(text("UPDATE outbox_events SET mail_enqueued_at = NULL"
                                 " WHERE event_id = :e"), {"e": event_id})
        uow.commit()
    for _ in range(3):  # the same message delivered again, as after a worker crash
        stack.container.enqueue("send_mail", event_id)

    def redelivered_and_done() -> bool:
        with stack.container.uow() as uow:
            dispatched = uow.session.scalar(select(OutboxEvent.mail_enqueued_at).where(
                OutboxEvent.event_id == event_id))
        return dispatched is not None and stack.queued("mail") == 0

    eventually(redelivered_and_done, 30, what="the duplicates to be processed")
    assert len(stack.mails(address)) == 1
    with stack.container.uow() as uow:
        sent = uow.session.execute(select(SentMail.kind, SentMail.recipient).where(
            SentMail.event_id == event_id)).all()
    assert [tuple(row) for row in sent] == [("receipt", address)]


def test_smtp_down_is_retried_and_never_blocks_charging(stack: MailStack) -> None:
    api = stack.api()
    customer_id, address = customer(api)
    stack.smtp.stop()
    try:
        payment = pay(api, customer_id, "tok_ok")
        assert payment["status"] == "succeeded"
        eventually(lambda: stack.queued("mail.DQ") > 0, 30, what="a mail retry to be scheduled")
        assert stack.mails(address) == []
    finally:
        stack.smtp.start()
    mail = stack.one_mail(address)
    assert payment["id"] in bodies(mail)[0]
