"""The schema's version, and `upgrade`, which runs the Alembic migrations in this package.

`HEAD` is the newest revision this code needs and `REVISIONS` every one it knows, in
order; a test checks they match Alembic's, so the backend can compare them with
`alembic_version` without importing Alembic (which costs ~250 ms) on every command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["HEAD", "REVISIONS", "TABLES", "current_revision", "is_older", "upgrade"]

REVISIONS = ("0001", "0002", "0003", "0004")
HEAD = REVISIONS[-1]
#: The tables inv creates: a database that has one of them without inv's schema is
#: someone else's.
TABLES = (
    "stores",
    "products",
    "inventory",
    "users",
    "api_tokens",
    "applied_events",
    "audit_log",
    "rejected_events",
)


def _config(connection: Connection) -> object:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "backends.postgres:migrations")
    config.attributes["connection"] = connection
    return config


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Migrate the schema up to `revision`, in the connection's transaction.

    Refuses (`ConfigurationError`) a database with tables of inv's names but no inv
    schema, and one whose `alembic_version` names a revision this inv does not know.
    """
    from alembic import command
    from alembic.util.exc import CommandError
    from sqlalchemy import text

    current = current_revision(connection)
    if current is None:
        foreign = [
            name
            for name in TABLES
            if connection.execute(text("SELECT to_regclass(:t)"), {"t": name}).scalar()
        ]
        if foreign:
            raise ConfigurationError(
                f"the database already has tables inv did not create ({', '.join(foreign)}); "
                "give inv a database of its own"
            )
    elif current not in REVISIONS:
        raise ConfigurationError(
            f"the database's schema is at revision {current!r}, which this inv does not "
            f"know (it knows {', '.join(REVISIONS)}); upgrade inv, or give it its own database"
        )
    try:
        command.upgrade(_config(connection), revision)  # type: ignore[arg-type]
    except CommandError as exc:
        raise ConfigurationError(f"cannot migrate the schema: {exc}") from None


def current_revision(connection: Connection) -> str | None:
    """The revision in `alembic_version`, or None when the database has no inv schema."""
    from sqlalchemy import text

    exists = connection.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
    if not exists.scalar_one():
        return None
    row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])


def is_older(revision: str) -> bool:
    """Whether `revision` is one this inv knows and is behind `HEAD`."""
    return revision in REVISIONS and REVISIONS.index(revision) < REVISIONS.index(HEAD)
