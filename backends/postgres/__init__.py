"""The `postgres` backend; see `backends.postgres.backend` for its configuration."""

from .backend import PostgresBackend

__all__ = ["PostgresBackend"]
