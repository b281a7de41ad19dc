"""The worker fleet: `dramatiq app.jobs` imports this module in every worker process.

Importing it installs the Redis broker from the environment's settings and declares the
actors; the resources the actors use are built lazily, in the worker process itself.
"""

from app.jobs.runtime import container
from app.jobs.telemetry import WorkerMetrics

container().broker.add_middleware(WorkerMetrics(container().config))  # also installs the broker

from app.jobs import actors, mail, webhooks  # noqa: E402

__all__ = ["actors", "mail", "webhooks"]
