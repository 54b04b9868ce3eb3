"""Domain errors.

The library raises these; only ``cli.py`` turns them into exit codes and
messages, so every other module can stay free of presentation concerns.
"""

from __future__ import annotations

from pathlib import Path


class MemorydError(Exception):
    """Base class of every error memoryd raises on purpose."""


class ConfigError(MemorydError):
    """The configuration file or a MEMORYD_* variable holds a wrong key or value."""


class ServerTooOld(ConfigError):
    """The configured PostgreSQL server runs a PostgreSQL or pgvector older than memoryd needs."""


class ParseError(MemorydError):
    """An input file cannot be read or does not follow its format."""

    def __init__(self, path: Path | str, reason: str, *, line: int | None = None, in_progress: bool = False) -> None:
        self.path = Path(path)
        self.reason = reason
        self.line = line
        # Not broken: still being written (a JSONL file without one complete line yet).
        self.in_progress = in_progress
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {reason}")


class StoreError(MemorydError):
    """The database refused an operation for a reason a retry will not fix."""


class EmbedError(MemorydError):
    """The embedding model cannot be loaded or cannot encode."""


class DatabaseUnavailable(MemorydError):
    """The database could not be reached, even after retrying."""


class TransientError(MemorydError):
    """A failure that is expected to go away by itself (the server is restarting).

    The retry policy in ``db.py`` retries these and psycopg's OperationalError.
    """


class Cancelled(MemorydError):
    """The daemon is stopping; work waiting for the database is abandoned (and redone at next start)."""


class AlreadyRunning(MemorydError):
    """Another memoryd daemon already watches this database."""


class InvalidRequest(MemorydError, ValueError):
    """A question to the memory that cannot be answered as asked (a bad k, mode, filter or id)."""


class NotFound(MemorydError):
    """The conversation or hit asked for is not in the memory."""


class ServiceError(MemorydError):
    """The query service answered with an error, or stopped answering mid-request."""
