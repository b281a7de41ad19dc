"""Kafka over TLS: the relay publishes and a consumer reads through a TLS server that verifies
the client's certificate; a wrong CA or a missing client certificate fails closed.

Tansu cannot speak TLS itself (see tests/tls.py), so it advertises a TLS terminator in front of
it: every connection the clients make, bootstrap and broker alike, is TLS.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Iterator

import pytest
from kafka.errors import KafkaError

from app.bootstrap import Container
from app.config import Config
from app.events.embedded_broker import EmbeddedBroker
from app.events.relay import ensure_topics, new_producer
from tests.eventing import (
    Collector,
    RelayThread,
    kafka_config,
    record,
    subscription_object,
)
from tests.servers import free_port
from tests.tls import Authority, TlsTerminator, authority, wrong_authority  # noqa: F401


@pytest.fixture(scope="module")
def tls_broker(authority: Authority,  # noqa: F811
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """Tansu on a plain port, reachable only through mutual TLS on the advertised one."""
    tls_port = free_port()
    terminator = TlsTerminator(tls_port, free_port(), authority.issue("kafka"),
                               client_ca=authority.cert)
    broker = EmbeddedBroker(port=terminator.upstream, advertised=f"127.0.0.1:{tls_port}",
                            log=tmp_path_factory.mktemp("kafka-tls") / "tansu.log")
    broker.start()
    try:
        terminator.start()
        yield broker
    finally:
        terminator.stop()
        broker.stop()


@pytest.fixture(scope="module")
def tls_config(config: Config, tls_broker: EmbeddedBroker, authority: Authority,  # noqa: F811
               ) -> Config:
    client = authority.issue("relay", client=True)
    return kafka_config(config, tls_broker, kafka_security_protocol="SSL",
                        kafka_ssl_cafile=str(authority.cert), kafka_ssl_certfile=str(client.cert),
                        kafka_ssl_keyfile=str(client.key))


def test_the_relay_publishes_over_tls_and_a_consumer_reads(
    tls_config: Config, container: Container
) -> None:
    collector = Collector(tls_config)
    relay = RelayThread(tls_config).start()
    try:
        subscription = subscription_object("cus_tls", "active")
        event_id = record(container, "subscription.renewed", subscription, tenant_id="ten_tls")
        received = collector.wait_for({event_id})
    finally:
        relay.stop()
        collector.close()
    assert [m.key for m in received if m.event["id"] == event_id] == [subscription["id"]]


def test_a_wrong_ca_fails_closed(tls_config: Config,
                                 wrong_authority: Authority) -> None:  # noqa: F811
    """kafka-python raises a failed verification to the caller: the relay stops, loudly."""
    wrong = dataclasses.replace(tls_config, kafka_ssl_cafile=str(wrong_authority.cert))
    with pytest.raises(ssl.SSLCertVerificationError):
        ensure_topics(wrong)
    with pytest.raises(ssl.SSLCertVerificationError):
        new_producer(wrong)


def test_no_client_certificate_fails_closed(tls_config: Config) -> None:
    anonymous = dataclasses.replace(tls_config, kafka_ssl_certfile="", kafka_ssl_keyfile="")
    with pytest.raises(KafkaError):
        ensure_topics(anonymous)
