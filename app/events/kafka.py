"""How every Kafka client of the engine connects: servers, TLS and MSK IAM, in one place.

`client_settings(config)` gives the keyword arguments of any kafka-python client (producer,
consumer, admin), so a new consumer connects exactly as the relay does.
KAFKA_SECURITY_PROTOCOL is PLAINTEXT, SSL (TLS, the server's certificate verified against
KAFKA_SSL_CAFILE or the system's CAs, optionally a client certificate) or SASL_SSL (the same
TLS, plus SASL OAUTHBEARER with a token from AWS's MSK IAM signer: Amazon MSK's IAM access
control, credentials from the default AWS chain, such as an ECS task role).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
from kafka.sasl.oauth import AbstractTokenProvider

from app.config import Config
from app.events.embedded_broker import bootstrap_servers

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL")
#: A token is signed anew this long before it expires (MSK's tokens last 15 minutes).
REFRESH_MARGIN_SECONDS = 60


class MskIamTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """SASL OAUTHBEARER tokens for Amazon MSK IAM, signed by AWS's signer, reused until
    shortly before they expire (kafka-python asks for one on every connection)."""

    def __init__(self, region: str) -> None:
        self.region = region
        self._lock = threading.Lock()
        self._token = ""
        self._refresh_at = 0.0

    def token(self) -> str:
        with self._lock:
            if time.time() >= self._refresh_at:
                token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(self.region)
                self._token = str(token)
                self._refresh_at = int(expiry_ms) / 1000 - REFRESH_MARGIN_SECONDS
            return self._token

    def __repr__(self) -> str:
        return f"MskIamTokenProvider(region={self.region!r})"  # never the token


def client_settings(config: Config) -> dict[str, Any]:
    """Keyword arguments that connect any kafka-python client as `config` says.

    Raises ValueError for a setting that cannot be meant, such as a CA file with PLAINTEXT:
    a TLS setting that would be silently ignored must stop the process instead.
    """
    protocol = config.kafka_security_protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"KAFKA_SECURITY_PROTOCOL must be one of {PROTOCOLS}, got {protocol!r}")
    settings: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers(config.kafka_bootstrap_servers),
        "security_protocol": protocol,
    }
    tls_files = {"KAFKA_SSL_CAFILE": config.kafka_ssl_cafile,
                 "KAFKA_SSL_CERTFILE": config.kafka_ssl_certfile,
                 "KAFKA_SSL_KEYFILE": config.kafka_ssl_keyfile}
    if protocol == "PLAINTEXT":
        unused = [name for name, value in tls_files.items() if value]
        unused += ["KAFKA_AWS_REGION"] if config.kafka_aws_region else []
        if unused:
            raise ValueError(f"{', '.join(unused)} set, but KAFKA_SECURITY_PROTOCOL is PLAINTEXT")
        return settings
    if bool(config.kafka_ssl_certfile) != bool(config.kafka_ssl_keyfile):
        raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
    settings.update(
        ssl_check_hostname=True,
        ssl_cafile=config.kafka_ssl_cafile or None,
        ssl_certfile=config.kafka_ssl_certfile or None,
        ssl_keyfile=config.kafka_ssl_keyfile or None,
    )
    if protocol == "SASL_SSL":
        if not config.kafka_aws_region:
            raise ValueError("KAFKA_SECURITY_PROTOCOL=SASL_SSL (MSK IAM) needs KAFKA_AWS_REGION")
        settings.update(sasl_mechanism="OAUTHBEARER",
                        sasl_oauth_token_provider=MskIamTokenProvider(config.kafka_aws_region))
    return settings
