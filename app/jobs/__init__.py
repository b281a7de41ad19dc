"""The worker fleet: `dramatiq app.jobs` imports this module in every worker process.

Importing it installs the Redis broker from the environment's settings and declares the
actors; the resources the actors use are built lazily, in the worker process itself.
"""

from app.jobs.runtime import container

container().broker  # noqa: B018 - installs the broker before the actors are declared

from app.jobs import actors, mail, webhooks  # noqa: E402

__all__ = ["actors", "mail", "webhooks"]
