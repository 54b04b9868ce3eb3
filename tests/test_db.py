"""The database layer: embedded server, migrations, DSN redaction, retry policy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from structlog.testing import capture_logs

from memoryd.config import DatabaseConfig
from memoryd.db import Database, RetryPolicy, apply_migrations, migrations_dir, redact_dsn
from memoryd.errors import DatabaseUnavailable


def test_migrations_are_applied_once(db_dsn: str) -> None:
    """Applying migrations again applies nothing and records each file exactly once."""
    with psycopg.connect(db_dsn) as conn:
        assert apply_migrations(conn) == []
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == sorted(p.stem for p in migrations_dir().glob("[0-9][0-9][0-9]_*.sql"))


def test_failed_migration_leaves_no_trace(db_dsn: str, tmp_path: Path) -> None:
    """A migration that fails is rolled back together with its schema_migrations row."""
    (tmp_path / "900_broken.sql").write_text("CREATE TABLE half_done (id int); SELECT 1/0;")
    with psycopg.connect(db_dsn) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            apply_migrations(conn, tmp_path)
        conn.rollback()
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM schema_migrations WHERE version = '900_broken'").fetchone() == (0,)


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        (
            "postgresql://shadeos:s3cret@127.0.0.1:6432/shadeos_local",
            "postgresql://shadeos:***@127.0.0.1:6432/shadeos_local",
        ),
        ("host=localhost password=s3cret dbname=x", "host=localhost password=*** dbname=x"),
        ("postgresql://postgres:@/postgres?host=/tmp/x", "postgresql://postgres:@/postgres?host=/tmp/x"),
    ],
)
def test_redact_dsn_hides_password(dsn: str, shown: str) -> None:
    """No password from a DSN is ever shown, in URL or key=value form."""
    assert redact_dsn(dsn) == shown


def test_retry_logs_outage_once_and_recovery() -> None:
    """Transient failures are retried; the outage is logged once, then its end."""
    failures = iter([psycopg.OperationalError("server closed the connection"), psycopg.OperationalError("again")])

    def flaky() -> str:
        for exc in failures:
            raise exc
        return "ok"

    policy = RetryPolicy(deadline_s=10.0, initial_wait_s=0.01, max_wait_s=0.05)
    with capture_logs() as logs:
        assert policy.call(flaky) == "ok"
    assert [entry["event"] for entry in logs] == ["db_unavailable", "db_recovered"]


def test_retry_gives_up_after_deadline() -> None:
    """One-shot commands stop retrying at the deadline with DatabaseUnavailable."""

    def down() -> None:
        raise psycopg.OperationalError("connection refused")

    with pytest.raises(DatabaseUnavailable, match="connection refused"):
        RetryPolicy(deadline_s=0.3, initial_wait_s=0.01, max_wait_s=0.05).call(down)


def test_programming_errors_are_not_retried() -> None:
    """A bug (syntax error) fails at once instead of being retried."""
    calls = 0

    def broken() -> None:
        nonlocal calls
        calls += 1
        raise psycopg.errors.SyntaxError("syntax error")

    with pytest.raises(psycopg.errors.SyntaxError):
        RetryPolicy(deadline_s=5.0).call(broken)
    assert calls == 1


@pytest.mark.slow
def test_embedded_server_is_shared_and_stopped_by_last_user(tmp_path: Path, pg_data_dir: Path) -> None:
    """Without a DSN memoryd runs its own PostgreSQL; another process shares it; the last one stops it."""
    data_dir = pg_data_dir
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[database]\ndata_dir = "{data_dir}"\n')
    with Database(DatabaseConfig(dsn=None, data_dir=data_dir)) as db:
        with db.connection() as conn:
            assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone() is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEMORYD_")}
        env["MEMORYD_CONFIG"] = str(config_file)
        other = subprocess.run(
            [sys.executable, "-m", "memoryd.cli", "db", "url"], capture_output=True, text=True, env=env, timeout=60
        )
        assert other.returncode == 0, other.stderr
        assert other.stdout.strip() == db.dsn
        with db.connection() as conn:  # the other process's exit did not stop our server
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not (data_dir / "postmaster.pid").exists()
