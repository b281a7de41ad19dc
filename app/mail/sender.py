"""Flask-Mail over SMTP, configured from our settings: the one way mail leaves the engine."""

from __future__ import annotations

from email.utils import parseaddr

from flask import Flask
from flask_mail import Mail
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
        self.app = app
        self.mail = Mail(app)
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
        with self.app.app_context():  # Flask-Mail renders the message in an app context
            self.mail.send(message)
