"""A server older than memoryd needs is refused at open, saying what it runs and what is needed.

The real test server is made to look too old by raising the minimums
memoryd asks for, not by faking the server's answers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from memoryd import server_version
from memoryd.config import Config
from memoryd.db import Database, RetryPolicy
from memoryd.errors import ServerTooOld
from tests.conftest import own_database
from tests.test_cli import clean_environment


def _server(dsn: str) -> tuple[str, str]:
    """The real server's PostgreSQL major and its pgvector version, as memoryd prints them."""
    with psycopg.connect(dsn) as conn:
        number = conn.info.server_version
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    assert row is not None
    return f"{number // 10000}.{number % 10000}", str(row[0])


def test_the_test_server_is_recent_enough(config: Config) -> None:
    """The real server (PostgreSQL >= 14, pgvector >= 0.8) opens without complaint."""
    with Database(config.database, retry=RetryPolicy(deadline_s=10.0)) as db, db.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_old_postgresql_is_refused(config: Config, db_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server below the PostgreSQL minimum is refused with its version and the one needed."""
    monkeypatch.setattr(server_version, "MIN_POSTGRESQL", (99,))
    postgresql, _ = _server(db_dsn)
    with pytest.raises(ServerTooOld) as caught:
        Database(config.database, retry=RetryPolicy(deadline_s=10.0)).open()
    assert str(caught.value) == f"the server runs PostgreSQL {postgresql}; memoryd needs PostgreSQL 99 or newer"


def test_old_pgvector_is_refused_with_how_to_upgrade(
    config: Config, db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database whose pgvector is below the minimum is refused, naming the installed and the needed version."""
    monkeypatch.setattr(server_version, "MIN_PGVECTOR", (9, 1, 0))
    _, pgvector = _server(db_dsn)
    with pytest.raises(ServerTooOld) as caught:
        Database(config.database, retry=RetryPolicy(deadline_s=10.0)).open()
    assert str(caught.value) == f"this database uses pgvector {pgvector}; memoryd needs pgvector 9.1.0 or newer"


# The real command in a process of its own, with the minimum raised first.
_INIT_WITH_A_HIGHER_MINIMUM = """\
import sys
from memoryd import cli, server_version
server_version.MIN_PGVECTOR = (9, 1, 0)
sys.exit(cli.main(sys.argv[1:]))
"""


def test_too_old_server_exits_2_before_migrating(tmp_path: Path, pg_admin_dsn: str) -> None:
    """`memoryd init` on a too-old server exits 2 with a configuration error, and migrates nothing."""
    with own_database(pg_admin_dsn, template=None) as dsn:
        (tmp_path / "config.toml").write_text("", encoding="utf-8")
        result = subprocess.run(
            [sys.executable, "-c", _INIT_WITH_A_HIGHER_MINIMUM, "--config", str(tmp_path / "config.toml"), "init"],
            env=clean_environment() | {"MEMORYD_DSN": dsn},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        message = result.stderr.strip().splitlines()[-1]
        assert message.startswith("memoryd: configuration error: the server offers pgvector "), message
        assert message.endswith("; memoryd needs pgvector 9.1.0 or newer"), message
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)
