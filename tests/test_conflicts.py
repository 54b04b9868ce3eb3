"""The sync and the embedder share rows; they must never deadlock, and a conflict is never an outage."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from memoryd.config import Config
from memoryd.db import Database, RetryPolicy
from memoryd.embed import Embedder
from memoryd.store import ChunkVector, claim_pending, write_embeddings
from memoryd.sync import Syncer
from tests.conftest import write_conversation
from tests.daemon_helpers import wait_for

SLUG = "2025-08-01__edited_while_embedding"
MESSAGES = [("user", f"question number {n} about the garden") for n in range(6)]


def _waiting(dsn: str) -> bool:
    """Whether a session of this test's database is waiting for a lock."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return bool(row and row[0])


def test_sync_deleting_messages_while_the_embedder_writes_does_not_deadlock(
    config: Config, db_dsn: str, embedder: Embedder
) -> None:
    """An edit that deletes messages, synced between the embedder's claim and its COPY, waits instead of deadlocking."""
    folder = write_conversation(config.paths.conversations, SLUG, MESSAGES)
    with Database(config.database, retry=RetryPolicy(deadline_s=30.0)) as db:
        syncer = Syncer(db, config)
        syncer.sync_slug(SLUG)
        write_conversation(config.paths.conversations, SLUG, MESSAGES[:2])  # four messages to delete
        sync_errors: list[BaseException] = []
        with capture_logs() as logs, db.connection() as conn:
            texts = claim_pending(conn, embedder.name, 100)  # the embedder's transaction: texts claimed
            assert len(texts) == len(MESSAGES)

            def sync() -> None:
                try:
                    syncer.sync_slug(SLUG)
                except BaseException as exc:
                    sync_errors.append(exc)

            thread = threading.Thread(target=sync, name="test-sync")
            thread.start()
            # The sync is now blocked on the embedder's locks; the embedder writes its vectors.
            wait_for(lambda: _waiting(db_dsn), timeout=30, what="the sync to wait")
            vectors = embedder.encode([t.content for t in texts])
            rows = [ChunkVector(t, 0, 0, len(t.content), vectors[i]) for i, t in enumerate(texts)]
            write_embeddings(conn, embedder.name, rows)
        thread.join(timeout=60)
        assert not thread.is_alive()
        assert sync_errors == []
        events = [e["event"] for e in logs]
        assert "db_unavailable" not in events and "db_conflict_retried" not in events, logs
        stored = db.run(lambda c: [r[0] for r in c.execute("SELECT content FROM messages ORDER BY seq")])
        assert stored == [content for _, content in MESSAGES[:2]]
        assert folder.is_dir()


def _deadlock(dsn: str, attempts: list[int]) -> str:
    """Two transactions locking two rows in opposite orders: PostgreSQL aborts one of them the first time."""
    attempts.append(1)
    first = len(attempts) == 1
    with psycopg.connect(dsn) as mine, psycopg.connect(dsn, autocommit=True) as other:
        # The detector runs in the session whose deadlock_timeout ends first: make it this one.
        mine.execute("SET deadlock_timeout = '100ms'")
        other.execute("SET deadlock_timeout = '30s'")
        mine.execute("UPDATE folder_state SET synced_at = now() WHERE slug = 'a'")
        if first:
            other.execute("BEGIN")
            other.execute("UPDATE folder_state SET synced_at = now() WHERE slug = 'b'")
            blocker = threading.Thread(
                target=lambda: _swallow(other, "UPDATE folder_state SET synced_at = now() WHERE slug = 'a'")
            )
            blocker.start()
            wait_for(lambda: _waiting(dsn), timeout=10, what="the other transaction to wait")
            try:
                mine.execute("UPDATE folder_state SET synced_at = now() WHERE slug = 'b'")
            finally:
                mine.rollback()
                blocker.join()
        return "done"


def _swallow(conn: psycopg.Connection[Any], query: str) -> None:
    try:
        conn.execute(query)
    except psycopg.errors.DeadlockDetected:
        pass
    finally:
        conn.execute("ROLLBACK")


@pytest.mark.parametrize("deadline_s", [None, 30.0])
def test_a_deadlock_is_retried_as_a_conflict_not_an_outage(db_dsn: str, deadline_s: float | None) -> None:
    """A real `deadlock detected` is retried at once and logged as db_conflict_retried, never db_unavailable."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO folder_state (source, slug) VALUES ('here', 'a'), ('here', 'b')")
    attempts: list[int] = []
    with capture_logs() as logs:
        result = RetryPolicy(deadline_s=deadline_s).call(_deadlock, db_dsn, attempts)
    assert result == "done"
    events = [e["event"] for e in logs]
    assert "db_unavailable" not in events and "db_recovered" not in events, logs
    assert events.count("db_conflict_retried") == len(attempts) - 1 >= 1, events
