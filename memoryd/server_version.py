"""What a PostgreSQL server must run for memoryd, checked once when a Database opens.

A shared server (a home server's compose, a hosted one) may be older than
the one memoryd is tested on.  Left alone, an old server fails much later
and far from the cause: a migration with a syntax error, or every filtered
search with ``invalid configuration parameter name "hnsw.iterative_scan"``.
So the versions are compared before the first migration, and a server that
is too old is refused with what it runs and what is needed: a configuration
error (exit 2, which systemd does not restart: waiting does not upgrade a
server).
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from memoryd.errors import ServerTooOld

__all__ = ["MIN_PGVECTOR", "MIN_POSTGRESQL", "check_server_versions"]

# PostgreSQL 14: the oldest release memoryd's SQL is written for (issue 13).
MIN_POSTGRESQL: tuple[int, ...] = (14,)
# pgvector 0.8.0: search sets hnsw.iterative_scan (new in 0.8.0) so that a
# filter still returns k hits; before 0.8 that setting does not exist, and
# where pgvector reserves the hnsw.* prefix, setting it is an error.
# (Issue 13 asked for >= 0.7.)
MIN_PGVECTOR: tuple[int, ...] = (0, 8, 0)


def _version_text(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)


def _parse_version(text: str) -> tuple[int, ...]:
    """``"0.8.0"`` → (0, 8, 0); a suffix such as ``-dev`` or ``beta1`` is ignored."""
    return tuple(int(part) for part in re.findall(r"\d+", text.split("-")[0])[:3])


def _server_version(conn: psycopg.Connection[Any]) -> tuple[int, ...]:
    """(major, minor) from libpq's integer: 160004 → (16, 4)."""
    number = conn.info.server_version
    return (number // 10000, number % 10000)


def check_server_versions(conn: psycopg.Connection[Any]) -> None:
    """Raise ServerTooOld unless the server runs PostgreSQL and pgvector recent enough for memoryd.

    pgvector is judged by the version installed in this database, else by
    the version ``CREATE EXTENSION vector`` would install (the first
    migration creates it).
    """
    server = _server_version(conn)
    if server < MIN_POSTGRESQL:
        raise ServerTooOld(
            f"the server runs PostgreSQL {_version_text(server)}; memoryd needs PostgreSQL"
            f" {_version_text(MIN_POSTGRESQL)} or newer"
        )
    row = conn.execute(
        "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'vector'),"
        " (SELECT default_version FROM pg_available_extensions WHERE name = 'vector')"
    ).fetchone()
    conn.rollback()  # leave no transaction open for the migrations that follow
    installed, available = row if row else (None, None)
    if installed is None and available is None:
        raise ServerTooOld(
            f"the server (PostgreSQL {_version_text(server)}) does not have the pgvector extension;"
            f" memoryd needs pgvector {_version_text(MIN_PGVECTOR)} or newer installed on it"
        )
    current = str(installed or available)
    if _parse_version(current) < MIN_PGVECTOR:
        upgrade = (
            " (run ALTER EXTENSION vector UPDATE in this database)"
            if installed and available and _parse_version(str(available)) >= MIN_PGVECTOR
            else ""
        )
        where = "this database uses" if installed else "the server offers"
        raise ServerTooOld(
            f"{where} pgvector {current}; memoryd needs pgvector {_version_text(MIN_PGVECTOR)} or newer{upgrade}"
        )
