"""The worker process's container, built once on first use."""

from __future__ import annotations

import functools

from app.bootstrap import Container, build
from app.log import configure_logging


@functools.cache
def container() -> Container:
    """This process's container (settings from the environment)."""
    built = build()
    configure_logging(built.config.log_level)
    built.sealer  # noqa: B018 - refuse to start with the development key in production
    return built
