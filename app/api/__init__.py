"""The HTTP API: the Flask app factory and its blueprints."""

from __future__ import annotations

import os

from flask import Flask

from app.api import (
    auth,
    customers,
    errors,
    openapi,
    ops,
    payments,
    plans,
    sandbox,
    subscriptions,
    test_clocks,
    webhook_endpoints,
    webhooks,
)
from app.api.context import close_uow, remember_writes
from app.api.limits import init_limiter
from app.api.metrics import init_metrics
from app.bootstrap import Container, build
from app.cli import COMMANDS
from app.config import Config
from app.log import configure_logging

APIS = (
    payments.api,
    customers.api,
    plans.api,
    subscriptions.api,
    test_clocks.api,
    sandbox.api,
    webhooks.api,
    webhook_endpoints.api,
)


def create_app(config: Config | None = None) -> Flask:
    """A configured app: its own container, handlers, limits, metrics and blueprints."""
    container: Container = build(config)
    if os.environ.get("FLASK_RUN_FROM_CLI") != "true":  # set by the `flask` command
        # The API refuses to start with the development key in production. Operator commands
        # run anywhere (tenants, keys: the contract's first step); those that seal or open
        # secrets (providers set, credentials rotate) reach the same check when they do.
        container.sealer  # noqa: B018
    configure_logging(container.config.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = container.config.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["container"] = container
    app.extensions["openapi"] = openapi.build([e for a in APIS for e in a.endpoints], "1")
    errors.register(app)
    init_metrics(app)
    app.before_request(auth.authenticate_request)  # before the limiter, which keys on the caller
    init_limiter(app, container.config)
    app.after_request(remember_writes)
    app.teardown_request(close_uow)
    app.register_blueprint(ops.blueprint)
    for api in APIS:
        app.register_blueprint(api.blueprint)
    for command in COMMANDS:
        app.cli.add_command(command)
    return app
