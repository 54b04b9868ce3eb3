"""Logs that tell the truth about outages, and stay JSON whatever the embedded server prints."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import psycopg
import pytest
from structlog.testing import capture_logs

from memoryd.db import RetryPolicy
from tests.daemon_helpers import wait_for
from tests.test_cli import clean_environment, run_memoryd

DISK_FULL_SQL = """
CREATE TABLE scratch (x int);
CREATE TABLE disk (is_full boolean NOT NULL);
INSERT INTO disk VALUES (true);
CREATE FUNCTION scratch_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT is_full FROM disk) THEN
        RAISE EXCEPTION 'could not extend file "base/1/2": No space left on device' USING ERRCODE = 'disk_full';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER scratch_disk_full BEFORE INSERT ON scratch FOR EACH ROW EXECUTE FUNCTION scratch_disk_full();
"""


def test_a_read_that_succeeds_during_a_disk_full_outage_does_not_end_it(db_dsn: str) -> None:
    """While writes fail with disk_full, successful reads log no db_recovered; the write's success does, once."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(DISK_FULL_SQL.encode())
    policy = RetryPolicy(deadline_s=None, initial_wait_s=0.05, max_wait_s=0.2)
    attempts = 0

    def write() -> None:
        nonlocal attempts
        attempts += 1
        with psycopg.connect(db_dsn) as conn:
            conn.execute("INSERT INTO scratch VALUES (1)")

    def read() -> int:
        with psycopg.connect(db_dsn) as conn:
            row = conn.execute("SELECT count(*) FROM scratch").fetchone()
            return int(row[0]) if row else -1

    with capture_logs() as logs:
        writer = threading.Thread(target=policy.call, args=(write,), name="test-writer")
        writer.start()
        wait_for(lambda: attempts >= 3, timeout=30, what="the write to fail a few times")
        for _ in range(3):
            assert policy.call(read) == 0
        during = [e["event"] for e in logs]
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute("UPDATE disk SET is_full = false")
        writer.join(timeout=30)
        assert not writer.is_alive()
    assert during == ["db_unavailable"], during
    assert [e["event"] for e in logs] == ["db_unavailable", "db_recovered"]
    assert "No space left on device" in logs[0]["error"]


@pytest.mark.slow
def test_a_failed_embedded_server_start_is_one_json_event(tmp_path: Path, pg_data_dir: Path) -> None:
    """`memoryd watch` whose embedded server cannot start writes only JSON lines, the server log inside one event."""
    config_path = tmp_path / "config.toml"
    config_path.write_text(f"[database]\ndata_dir = {json.dumps(str(pg_data_dir))}\n", encoding="utf-8")
    env = clean_environment() | {"MEMORYD_CONFIG": str(config_path), "MEMORYD_LOG_FORMAT": "json"}
    init = run_memoryd(["init"], cwd=tmp_path, env=env, timeout=300)
    assert init.returncode == 0, init.stderr
    with (pg_data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write("memoryd_test_no_such_setting = 1\n")  # the server now refuses to start
    result = run_memoryd(["watch"], cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 3
    events = [json.loads(line) for line in result.stderr.splitlines()]  # fails on any line that is not JSON
    failed = [e for e in events if e["event"] == "embedded_db_start_failed"]
    assert len(failed) == 1, events
    assert any("memoryd_test_no_such_setting" in line for line in failed[0]["server_log"])
    assert events[-1]["event"] == "command_failed" and events[-1]["exit_code"] == 3
