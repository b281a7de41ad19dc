"""Creating the database and bringing its schema to the newest Alembic revision."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

SOURCE_ROOT = Path(__file__).resolve().parents[2]


def project_root() -> Path:
    """Where alembic.ini and migrations/ are: the source checkout, else the working directory.

    An installed package (the Docker image) has neither beside it; the image keeps them in
    its working directory, next to wsgi.py, where every process's command runs.
    """
    return SOURCE_ROOT if (SOURCE_ROOT / "alembic.ini").is_file() else Path.cwd()


def ensure_database(url: str) -> bool:
    """Create the database named in `url` if it does not exist; True when it was created."""
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": target.database},
            )
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{target.database}"'))
            return not exists
    finally:
        admin.dispose()


def migrate(url: str, revision: str = "head") -> None:
    """Run Alembic's upgrade to `revision` on the database at `url`."""
    root = project_root()
    config = AlembicConfig(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    config.attributes["database_url"] = url
    command.upgrade(config, revision)


def drop_database(url: str) -> None:
    """Drop the database named in `url`, ending its connections first (tests and benches)."""
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": target.database},
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{target.database}"'))
    finally:
        admin.dispose()
