"""Flask-Mail over SMTP, configured from our settings: the one way mail leaves the engine.

With MAIL_SECURITY=starttls or ssl the server's certificate and name are verified, against
MAIL_SSL_CAFILE or the system's CAs. (Flask-Mail alone opens TLS with smtplib's default
context, which verifies neither: any certificate would do.)
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import replace
from email.utils import parseaddr

from flask import Flask
from flask_mail import Connection, Mail
from flask_mail import Message as FlaskMessage

from app.config import Config
from app.mail.message import Email

SECURITY = ("none", "starttls", "ssl")


class Mailer:
    """Sends one Email per SMTP connection; SMTP and socket errors propagate for a retry."""

    def __init__(self, config: Config) -> None:
        if config.mail_security not in SECURITY:
            raise ValueError(
                f"MAIL_SECURITY must be one of {SECURITY}, got {config.mail_security!r}"
            )
        if config.mail_ssl_cafile and config.mail_security == "none":
            raise ValueError("MAIL_SSL_CAFILE set, but MAIL_SECURITY is none")
        app = Flask("app.mail")
        app.config.update(
            MAIL_SERVER=config.mail_server,
            MAIL_PORT=config.mail_port,
            MAIL_USE_TLS=config.mail_security == "starttls",
            MAIL_USE_SSL=config.mail_security == "ssl",
            MAIL_USERNAME=config.mail_username or None,
            MAIL_PASSWORD=config.mail_password or None,
            MAIL_DEFAULT_SENDER=config.mail_default_sender,
        )
        Mail(app)
        self.app = app
        self.tls = ssl.create_default_context(cafile=config.mail_ssl_cafile or None)
        self.sender = config.mail_default_sender
        self.domain = parseaddr(config.mail_default_sender)[1].rpartition("@")[2] or "localhost"

    def send(self, email: Email, message_id: str) -> None:
        """Hand `email` to the SMTP server under `message_id`."""
        message = FlaskMessage(
            subject=email.subject,
            recipients=[email.recipient],
            body=email.text,
            html=email.html,
            sender=self.sender,
            extra_headers={"X-Mail-Kind": email.kind, **email.headers},
        )
        message.msgId = message_id
        with (self.app.app_context(),  # Flask-Mail renders the message in an app context
              _VerifiedConnection(self.app.extensions["mail"], self.tls) as connection):
            connection.send(message)


class _VerifiedConnection(Connection):
    """Flask-Mail's SMTP connection, its TLS verified with `tls`."""

    def __init__(self, mail: Mail, tls: ssl.SSLContext) -> None:
        super().__init__(mail)
        self.tls = tls

    def configure_host(self) -> smtplib.SMTP | smtplib.SMTP_SSL:
        host: smtplib.SMTP
        if self.mail.use_ssl:
            host = smtplib.SMTP_SSL(self.mail.server, self.mail.port, context=self.tls)
        else:
            host = smtplib.SMTP(self.mail.server, self.mail.port)
        if self.mail.use_tls:
            host.starttls(context=self.tls)
        if self.mail.username and self.mail.password:
            host.login(self.mail.username, self.mail.password)
        return host


def mailer_for(config: Config, *, livemode: bool) -> Mailer | None:
    """Live-mode mail goes to MAIL_SERVER; test-mode mail only to TEST_MAIL_SERVER
    (plain SMTP, no login), and nowhere (None) while that is unset."""
    if livemode:
        return Mailer(config)
    if not config.test_mail_server:
        return None
    host, _, port = config.test_mail_server.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"TEST_MAIL_SERVER must be host:port, got {config.test_mail_server!r}")
    return Mailer(replace(config, mail_server=host, mail_port=int(port), mail_security="none",
                          mail_ssl_cafile="", mail_username="", mail_password=""))
