"""The schema's version, and `upgrade`, which runs the Alembic migrations in this package.

`HEAD` is the newest revision this code needs; a test checks it matches Alembic's head,
so the backend can compare it with `alembic_version` without importing Alembic (which
costs ~250 ms) on every command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["HEAD", "current_revision", "upgrade"]

HEAD = "0002"


def _config(connection: Connection) -> object:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "backends.postgres:migrations")
    config.attributes["connection"] = connection
    return config


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Migrate the schema up to `revision`, in the connection's transaction."""
    from alembic import command

    command.upgrade(_config(connection), revision)  # type: ignore[arg-type]


def current_revision(connection: Connection) -> str | None:
    """The revision in `alembic_version`, or None when the database has no inv schema."""
    from sqlalchemy import text

    exists = connection.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
    if not exists.scalar_one():
        return None
    row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])
