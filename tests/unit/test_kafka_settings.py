"""Kafka client settings (app/events/kafka.py) and the MSK IAM token, offline.

No MSK is reachable here: the token is made from static test credentials by AWS's signer and
its SigV4 signature recomputed by hand from the specification, so a token MSK would refuse
(wrong service, region, action or signature) fails the test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qsl, quote, urlsplit

import pytest

from app.config import Config
from app.events.kafka import MskIamTokenProvider, client_settings

ACCESS_KEY = "AKIDEXAMPLETESTONLY"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture()
def static_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    """AWS's default credential chain finds these first; nothing else is looked up."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_plaintext_by_default() -> None:
    assert client_settings(Config(kafka_bootstrap_servers="k:9092")) == {
        "bootstrap_servers": "k:9092", "security_protocol": "PLAINTEXT"}


def test_ssl_verifies_the_server_and_presents_a_client_certificate() -> None:
    settings = client_settings(Config(
        kafka_security_protocol="SSL", kafka_ssl_cafile="/ca.pem",
        kafka_ssl_certfile="/client.crt", kafka_ssl_keyfile="/client.key"))
    assert settings["security_protocol"] == "SSL"
    assert settings["ssl_check_hostname"] is True
    assert (settings["ssl_cafile"], settings["ssl_certfile"], settings["ssl_keyfile"]) == (
        "/ca.pem", "/client.crt", "/client.key")
    assert "sasl_mechanism" not in settings


@pytest.mark.parametrize(("settings", "error"), [
    ({"kafka_security_protocol": "TLS"}, "must be one of"),
    ({"kafka_ssl_cafile": "/ca.pem"}, "KAFKA_SSL_CAFILE set, but"),
    ({"kafka_aws_region": "eu-west-1"}, "KAFKA_AWS_REGION set, but"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "/c.crt"}, "go together"),
    ({"kafka_security_protocol": "SASL_SSL"}, "needs KAFKA_AWS_REGION"),
])
def test_a_setting_that_would_be_ignored_stops_the_process(
    settings: dict[str, str], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        client_settings(Config(**settings))  # type: ignore[arg-type]


def test_sasl_ssl_is_msk_iam_over_oauthbearer(static_credentials: None) -> None:
    settings = client_settings(Config(kafka_security_protocol="SASL_SSL",
                                      kafka_aws_region="eu-west-1"))
    assert settings["sasl_mechanism"] == "OAUTHBEARER"
    provider = settings["sasl_oauth_token_provider"]
    assert isinstance(provider, MskIamTokenProvider)
    assert settings["ssl_check_hostname"] is True and settings["ssl_cafile"] is None


def test_the_token_is_a_sigv4_presigned_kafka_cluster_connect(static_credentials: None) -> None:
    provider = MskIamTokenProvider("eu-west-1")
    token = provider.token()
    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https", "kafka.eu-west-1.amazonaws.com", "/")
    assert query["Action"] == "kafka-cluster:Connect"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Expires"] == "900"
    assert query["X-Amz-SignedHeaders"] == "host"
    day = query["X-Amz-Date"][:8]
    scope = f"{day}/eu-west-1/kafka-cluster/aws4_request"
    assert query["X-Amz-Credential"] == f"{ACCESS_KEY}/{scope}"
    assert query["X-Amz-Signature"] == _sigv4_signature(query, parts.netloc, scope)
    assert provider.token() == token  # reused, not signed again per connection
    assert SECRET_KEY not in url and SECRET_KEY not in repr(provider) and token not in repr(
        provider)


def _sigv4_signature(query: dict[str, str], host: str, scope: str) -> str:
    """The signature of a presigned GET / (AWS Signature Version 4, query-string auth)."""
    signed = {k: v for k, v in query.items() if k not in ("X-Amz-Signature", "User-Agent")}
    canonical_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
                               for k, v in sorted(signed.items()))
    empty_body = hashlib.sha256(b"").hexdigest()
    canonical = f"GET\n/\n{canonical_query}\nhost:{host}\n\nhost\n{empty_body}"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", query["X-Amz-Date"], scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{SECRET_KEY}".encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
