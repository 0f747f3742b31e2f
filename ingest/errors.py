"""The exception hierarchy. Errors are translated at module boundaries with ``raise … from``.

    IngestError
    ├── ConfigError       bad settings file, environment or CLI argument (exit code 2)
    ├── ExchangeError     an exchange or public API answered badly or not at all
    │   └── RateLimited   429/418 with an optional Retry-After
    ├── ParseError        one frame or response could not be understood (counted, never fatal)
    ├── DatabaseError     connection, authentication, missing database
    │   └── MigrationError  a migration failed or an applied one was changed
    └── WriteError        a batch could not be written
"""

from __future__ import annotations


class IngestError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 1


class ConfigError(IngestError):
    """A setting, environment variable or CLI argument is wrong. Names the key and the file."""

    exit_code = 2


class ExchangeError(IngestError):
    """An exchange or public API failed."""


class RateLimited(ExchangeError):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ParseError(IngestError):
    """A frame or response could not be parsed. ``reason`` is short and safe to log."""


class DatabaseError(IngestError):
    """The database is unreachable, refused us, or misbehaved."""


class MigrationError(DatabaseError):
    """A migration failed, or an applied migration's file has changed."""


class UnknownMigration(MigrationError):
    """A version given on the command line that no migration has: a usage error (exit 2)."""

    exit_code = 2


class WriteError(IngestError):
    """A batch could not be written."""
