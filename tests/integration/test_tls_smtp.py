"""Customer mail over TLS: MAIL_SECURITY=starttls and =ssl against aiosmtpd with a certificate
of the tests' CA. The server's certificate is verified (MAIL_SSL_CAFILE, else the system's
CAs), so a server the client cannot verify gets no mail."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator

import pytest

from app.config import Config
from app.mail.message import Email
from app.mail.sender import Mailer
from tests.eventing import SmtpServer
from tests.tls import Authority, authority, wrong_authority  # noqa: F401


@pytest.fixture(scope="module", params=["starttls", "ssl"])
def server(request: pytest.FixtureRequest,
           authority: Authority) -> Iterator[tuple[str, SmtpServer]]:  # noqa: F811
    """MAIL_SECURITY and an SMTP server that speaks it, with a certificate of `authority`."""
    security: str = request.param
    started = SmtpServer(authority.issue("smtp").server_context(), implicit=security == "ssl")
    started.start()
    yield security, started
    started.stop()


def mail_config(server: tuple[str, SmtpServer], **settings: str) -> Config:
    security, smtp = server
    return Config(mail_server="127.0.0.1", mail_port=smtp.port, mail_security=security,
                  **settings)  # type: ignore[arg-type]


def send(mailer: Mailer, recipient: str) -> None:
    email = Email(kind="payment_receipt", recipient=recipient, subject="Receipt",
                  text="Paid.", html="<p>Paid.</p>", headers={})
    mailer.send(email, f"<{uuid.uuid4().hex}@example.com>")


def test_mail_arrives_over_verified_tls(server: tuple[str, SmtpServer],
                                        authority: Authority) -> None:  # noqa: F811
    recipient = f"{uuid.uuid4().hex[:8]}@example.com"
    send(Mailer(mail_config(server, mail_ssl_cafile=str(authority.cert))), recipient)
    [message] = server[1].inbox.to(recipient)
    assert message["Subject"] == "Receipt"


@pytest.mark.parametrize("trusted", ["system", "wrong"])
def test_a_server_the_client_cannot_verify_gets_no_mail(
    server: tuple[str, SmtpServer], wrong_authority: Authority, trusted: str  # noqa: F811
) -> None:
    settings = {"mail_ssl_cafile": str(wrong_authority.cert)} if trusted == "wrong" else {}
    mailer = Mailer(mail_config(server, **settings))
    recipient = f"{uuid.uuid4().hex[:8]}@example.com"
    with pytest.raises(ssl.SSLCertVerificationError):
        send(mailer, recipient)
    assert server[1].inbox.to(recipient) == []


def test_a_ca_for_plain_smtp_stops_the_process() -> None:
    with pytest.raises(ValueError, match="MAIL_SSL_CAFILE set, but MAIL_SECURITY is none"):
        Mailer(Config(mail_ssl_cafile="/etc/ssl/ca.pem"))
