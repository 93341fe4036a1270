"""The errors the local server runners raise: one root, one subclass per server."""

from __future__ import annotations

__all__ = [
    "LocalKafkaError",
    "LocalPostgresError",
    "LocalServerError",
    "PostgresNotInstalledError",
]


class LocalServerError(RuntimeError):
    """A local server could not be prepared, started, stopped or killed."""


class LocalKafkaError(LocalServerError):
    """The local broker could not be prepared, started, or stopped."""


class LocalPostgresError(LocalServerError):
    """The local PostgreSQL cluster could not be prepared, started, stopped or killed."""


class PostgresNotInstalledError(LocalPostgresError):
    """PostgreSQL's server programs (or, when root, the ``postgres`` system user) are missing."""
