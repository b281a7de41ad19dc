"""`python -m app.mail.sink`: a local SMTP server that saves every mail as a file.

`make run` starts it on 127.0.0.1:1025 (the default MAIL_SERVER/MAIL_PORT) so a developer
reads what customers would get in `var/mail/<time>-<recipient>.eml`. Never for production.
"""

from __future__ import annotations

import argparse
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class SaveToDirectory:
    """aiosmtpd handler: writes each message, as received, to `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        recipients = "+".join(re.sub(r"[^\w.@-]", "_", r) for r in envelope.rcpt_tos)
        stamp = time.strftime("%Y%m%dT%H%M%S") + f"{time.time() % 1:.6f}"[1:]
        path = self.directory / f"{stamp}-{recipients[:100]}.eml"
        content: Any = envelope.original_content or envelope.content or b""
        path.write_bytes(content if isinstance(content, bytes) else str(content).encode())
        return "250 Message accepted for delivery"


def main() -> None:
    """Serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", default="var/mail", type=Path)
    args = parser.parse_args()
    controller = Controller(SaveToDirectory(args.dir), hostname=args.host, port=args.port)
    controller.start()
    print(f"SMTP sink on {args.host}:{args.port}, saving mail to {args.dir}/", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
