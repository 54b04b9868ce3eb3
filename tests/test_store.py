"""The store: message diffing (pure) and idempotent writes on a real database."""

from __future__ import annotations

from pathlib import Path

import psycopg

from memoryd import store
from memoryd.db import Database
from memoryd.records import Conversation, Message
from memoryd.store import StoredMessage, plan_messages


def _msgs(*contents: str) -> list[Message]:
    return [Message(seq=i, role="user" if i % 2 == 0 else "assistant", content=c) for i, c in enumerate(contents)]


def _stored(messages: list[Message], first_id: int = 100) -> list[StoredMessage]:
    return [StoredMessage(first_id + m.seq, m.seq, m.content_hash, m.role, m.ts) for m in messages]


def _conversation(slug: str, messages: list[Message], source_hash: str = "h1") -> Conversation:
    return Conversation(
        slug=slug,
        title=slug,
        created_date=None,
        messages=tuple(messages),
        source_path=Path("/x") / slug / "messages.jsonl",
        source_format="jsonl",
        source_hash=source_hash,
        total_chars=sum(len(m.content) for m in messages),
        total_lines=len(messages),
    )


def test_plan_unchanged_is_empty() -> None:
    """The same messages produce no write at all."""
    msgs = _msgs("a", "b", "c")
    plan = plan_messages(_stored(msgs), msgs)
    assert (plan.delete, plan.update, plan.insert, plan.moved) == ([], [], [], 0)


def test_plan_edit_replaces_only_that_message() -> None:
    """An edited message is deleted and re-inserted; its neighbours are untouched."""
    old = _msgs("a", "b", "c")
    new = _msgs("a", "B!", "c")
    plan = plan_messages(_stored(old), new)
    assert plan.delete == [101]
    assert [m.content for m in plan.insert] == ["B!"]
    assert plan.update == []


def test_plan_insertion_moves_later_messages() -> None:
    """A message inserted early shifts the later rows (same ids) instead of re-creating them."""
    old = _msgs("a", "b", "c")
    new = [Message(0, "user", "a"), Message(1, "user", "new"), Message(2, "assistant", "b"), Message(3, "user", "c")]
    plan = plan_messages(_stored(old), new)
    assert plan.delete == []
    assert [m.content for m in plan.insert] == ["new"]
    assert plan.moved == 2
    assert sorted((row_id, m.seq) for row_id, m in plan.update) == [(101, 2), (102, 3)]


def test_plan_role_change_updates_in_place() -> None:
    """A changed role or timestamp on unchanged content is an in-place update, not a new row."""
    old = _msgs("a")
    new = [Message(0, "system", "a", ts="2025-01-01")]
    plan = plan_messages(_stored(old), new)
    assert plan.insert == [] and plan.delete == []
    assert plan.update == [(100, new[0])]
    assert plan.moved == 0


def test_plan_duplicate_contents_match_one_to_one() -> None:
    """Two identical messages each keep one row; a third identical one is inserted."""
    old = _msgs("same", "same")
    new = _msgs("same", "same", "same")
    plan = plan_messages(_stored(old), new)
    assert plan.delete == [] and len(plan.insert) == 1 and plan.insert[0].seq == 2


def _rows(conn: psycopg.Connection) -> list[tuple[int, int, str, str]]:
    return conn.execute("SELECT id, seq, content, xmin::text FROM messages ORDER BY seq").fetchall()


def test_upsert_twice_rewrites_nothing(db: Database) -> None:
    """Storing the same conversation again leaves every row (and its xmin) as it was."""
    conv = _conversation("s1", _msgs("a", "b"))
    with db.connection() as conn:
        store.upsert_conversation(conn, "here", conv, store.SlugChanges())
    with db.connection() as conn:
        before = _rows(conn)
        conv_xmin = conn.execute("SELECT xmin::text FROM conversations").fetchone()
    changes = store.SlugChanges()
    with db.connection() as conn:
        store.upsert_conversation(conn, "here", conv, changes)
    with db.connection() as conn:
        assert _rows(conn) == before
        assert conn.execute("SELECT xmin::text FROM conversations").fetchone() == conv_xmin
    assert changes.conversation == "unchanged" and not changes.wrote


def test_insertion_keeps_ids_of_moved_messages(db: Database) -> None:
    """After an insertion at seq 1 the later messages keep their ids with new seqs (deferred unique)."""
    with db.connection() as conn:
        store.upsert_conversation(conn, "here", _conversation("s1", _msgs("a", "b", "c")), store.SlugChanges())
        ids = {content: row_id for row_id, _, content, _ in _rows(conn)}
    new = [Message(0, "user", "a"), Message(1, "user", "x"), Message(2, "assistant", "b"), Message(3, "user", "c")]
    changes = store.SlugChanges()
    with db.connection() as conn:
        store.upsert_conversation(conn, "here", _conversation("s1", new, source_hash="h2"), changes)
        rows = _rows(conn)
    assert [content for _, _, content, _ in rows] == ["a", "x", "b", "c"]
    assert {content: row_id for row_id, _, content, _ in rows if content != "x"} == ids
    assert (changes.messages_inserted, changes.messages_moved, changes.messages_deleted) == (1, 2, 0)


def test_record_problems_reports_each_problem_once(db: Database) -> None:
    """A problem is 'fresh' the first time and when its text changes, not when seen again."""
    with db.connection() as conn:
        assert store.record_problems(conn, "here", "s", {"/p": ("error", "bad")}) == ["/p"]
        assert store.record_problems(conn, "here", "s", {"/p": ("error", "bad")}) == []
        assert store.record_problems(conn, "here", "s", {"/p": ("error", "worse")}) == ["/p"]
        assert conn.execute("SELECT count FROM ingest_errors WHERE path = '/p'").fetchone() == (2,)
        assert store.record_problems(conn, "here", "s", {}) == []
        assert conn.execute("SELECT count(*) FROM ingest_errors").fetchone() == (0,)
