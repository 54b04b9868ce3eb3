"""Logs that tell the truth about outages, and stay JSON whatever the embedded server prints."""

from __future__ import annotations

import threading

import psycopg
from structlog.testing import capture_logs

from memoryd.db import RetryPolicy
from tests.daemon_helpers import wait_for

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
