"""Folders to database: reconcile, idempotence, deletions, waiting summaries, bad input."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from memoryd import store, sync
from memoryd.config import Config
from memoryd.db import Database
from memoryd.sync import Syncer
from tests.conftest import write_conversation, write_summaries


def _snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every data table with its xmin: any rewrite changes it."""
    tables = ("conversations", "messages", "summaries", "embeddings", "folder_state", "ingest_errors")
    return {
        t: conn.execute(
            f"SELECT xmin::text, id FROM {t} ORDER BY 2"
            if t not in ("folder_state", "ingest_errors")
            else f"SELECT xmin::text, * FROM {t} ORDER BY 2"
        ).fetchall()
        for t in tables
    }


def _tree(config: Config, n: int = 3) -> None:
    for i in range(n):
        write_conversation(
            config.paths.conversations,
            f"2025-01-0{i + 1}__conv_{i}",
            [("user", f"question {i}"), ("assistant", f"answer {i}")],
        )
    write_summaries(config.paths.summaries, "2025-01-01__conv_0", [{"level": 1, "covers": [0, 1], "content": "s0"}])


def test_reconcile_stores_tree(db: Database, config: Config) -> None:
    """A first reconcile stores every conversation, message and summary of the tree."""
    _tree(config)
    report = Syncer(db, config).reconcile()
    assert (report.checked, report.wrote, report.failed) == (3, 3, 0)
    with db.connection() as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM conversations), (SELECT count(*) FROM messages),"
            " (SELECT count(*) FROM summaries)"
        ).fetchone()
        row = conn.execute(
            "SELECT title, created_date::text FROM conversations WHERE slug = '2025-01-02__conv_1'"
        ).fetchone()
    assert counts == (3, 6, 1)
    assert row == ("conv 1", "2025-01-02")


def test_bulk_batches_are_stored_in_parallel(db: Database, config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of new slugs go in on several connections at once; each slug is stored once, in full.

    Batches of 3, 3 workers; two slugs are broken (one malformed transcript,
    one summary file that does not parse) and take the slug-by-slug path.
    """
    for i in range(20):
        write_conversation(
            config.paths.conversations,
            f"2025-02-{i + 1:02d}__bulk_{i}",
            [("user", f"question {i}"), ("assistant", f"answer {i}"), ("user", f"thanks {i}")],
        )
        write_summaries(
            config.paths.summaries,
            f"2025-02-{i + 1:02d}__bulk_{i}",
            [{"level": 1, "covers": [0, 1], "content": f"s{i}"}],
        )
    (config.paths.conversations / "2025-02-05__bulk_4" / "messages.jsonl").write_text("{not json\n", encoding="utf-8")
    (config.paths.summaries / "2025-02-09__bulk_8" / "summaries.jsonl").write_text("[oops\n", encoding="utf-8")
    monkeypatch.setattr(sync, "BULK_BATCH", 3)
    monkeypatch.setattr(sync, "bulk_workers", lambda db: 3)
    threads: set[str] = set()
    original = store.insert_new_slugs

    def recording(conn: psycopg.Connection[Any], source: str, items: Any) -> list[str]:
        threads.add(threading.current_thread().name)
        time.sleep(0.05)  # long enough for the batches to overlap
        return original(conn, source, items)

    monkeypatch.setattr(store, "insert_new_slugs", recording)
    progress: list[int] = []
    report = Syncer(db, config).reconcile(progress=lambda done, total: progress.append(done))
    assert len(threads) > 1 and all(name.startswith("memoryd-bulk") for name in threads)
    assert progress == list(range(1, 21))
    assert (report.checked, report.synced, report.failed) == (20, 20, 0)
    with db.connection() as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM conversations), (SELECT count(DISTINCT slug) FROM conversations),"
            " (SELECT count(*) FROM messages), (SELECT count(*) FROM summaries), (SELECT count(*) FROM folder_state),"
            " (SELECT array_agg(DISTINCT slug ORDER BY slug) FROM ingest_errors)"
        ).fetchone()
    # The broken transcript stores nothing; the broken summary file leaves its conversation stored.
    assert counts == (19, 19, 57, 18, 20, ["2025-02-05__bulk_4", "2025-02-09__bulk_8"])
    assert Syncer(db, config).slugs_to_sync() == []


def test_second_ingest_of_unchanged_tree_writes_nothing(db: Database, config: Config) -> None:
    """Re-ingesting an unchanged tree, even forced to re-parse everything, rewrites no row."""
    _tree(config)
    syncer = Syncer(db, config)
    syncer.reconcile()
    with db.connection() as conn:
        before = _snapshot(conn)
    assert syncer.slugs_to_sync() == []
    assert syncer.reconcile().checked == 0
    forced = syncer.reconcile(force=True)
    assert (forced.checked, forced.wrote) == (3, 0)
    with db.connection() as conn:
        assert _snapshot(conn) == before


def test_forced_reparse_writes_exactly_what_changed(db: Database, config: Config) -> None:
    """A forced re-parse, many slugs a transaction, writes the edited slugs only, and the others not at all."""
    _tree(config, n=5)
    syncer = Syncer(db, config)
    syncer.reconcile()
    with db.connection() as conn:
        before = _snapshot(conn)
    write_conversation(config.paths.conversations, "2025-01-02__conv_1", [("user", "question 1"), ("assistant", "new")])
    write_summaries(config.paths.summaries, "2025-01-01__conv_0", [{"level": 1, "covers": [0, 1], "content": "s0 v2"}])
    forced = syncer.reconcile(force=True)
    assert (forced.checked, forced.synced, forced.wrote, forced.failed) == (5, 5, 2, 0)
    with db.connection() as conn:
        after = _snapshot(conn)
        contents = {row[0] for row in conn.execute("SELECT content FROM messages UNION SELECT content FROM summaries")}
    assert {"new", "s0 v2"} <= contents and not {"answer 1", "s0"} & contents
    edited = _ids(db, ("2025-01-01__conv_0", "2025-01-02__conv_1"))
    untouched = {r for r in before["conversations"] if r[1] not in edited}
    assert untouched <= set(after["conversations"])
    assert len(set(before["messages"]) - set(after["messages"])) == 1  # only "answer 1" went


def _ids(db: Database, slugs: tuple[str, ...]) -> set[int]:
    with db.connection() as conn:
        return {r[0] for r in conn.execute("SELECT id FROM conversations WHERE slug = ANY(%s)", (list(slugs),))}


def test_edit_resyncs_only_that_slug(db: Database, config: Config) -> None:
    """Editing one transcript makes only its slug differ from the stored folder state."""
    _tree(config)
    syncer = Syncer(db, config)
    syncer.reconcile()
    write_conversation(config.paths.conversations, "2025-01-02__conv_1", [("user", "question 1"), ("assistant", "new")])
    assert syncer.slugs_to_sync() == ["2025-01-02__conv_1"]
    report = syncer.reconcile()
    assert (report.checked, report.wrote) == (1, 1)


def test_deleted_folder_removes_conversation(db: Database, config: Config) -> None:
    """With on_delete = "delete", removing a conversation folder removes its rows and summaries."""
    _tree(config)
    syncer = Syncer(db, config)
    syncer.reconcile()
    folder = config.paths.conversations / "2025-01-01__conv_0"
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    report = syncer.reconcile()
    assert report.wrote == 1
    with db.connection() as conn:
        assert conn.execute("SELECT slug FROM conversations ORDER BY slug").fetchall() == [
            ("2025-01-02__conv_1",),
            ("2025-01-03__conv_2",),
        ]
        assert conn.execute("SELECT count(*) FROM summaries").fetchone() == (0,)


def test_on_delete_keep_keeps_rows(db: Database, config: Config) -> None:
    """With on_delete = "keep", a removed folder leaves the stored conversation alone."""
    config = replace(config, watch=replace(config.watch, on_delete="keep"))
    _tree(config, n=1)
    syncer = Syncer(db, config)
    syncer.reconcile()
    folder = config.paths.conversations / "2025-01-01__conv_0"
    (folder / "messages.jsonl").unlink()
    folder.rmdir()
    syncer.reconcile()
    assert syncer.slugs_to_sync() == []
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (2,)


def test_summary_waits_for_its_conversation(db: Database, config: Config) -> None:
    """A summary written before its conversation is stored once the conversation arrives."""
    write_summaries(
        config.paths.summaries, "2025-02-01__late", [{"level": 1, "covers": [0], "content": "early summary"}]
    )
    syncer = Syncer(db, config)
    changes = syncer.sync_slug("2025-02-01__late")
    assert changes.summaries_waiting == 1
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM summaries").fetchone() == (0,)
    write_conversation(config.paths.conversations, "2025-02-01__late", [("user", "hello")])
    assert syncer.slugs_to_sync() == ["2025-02-01__late"]
    syncer.reconcile()
    with db.connection() as conn:
        assert conn.execute("SELECT level, content FROM summaries").fetchall() == [(1, "early summary")]


def test_malformed_file_is_recorded_and_rest_ingested(db: Database, config: Config) -> None:
    """A malformed transcript is recorded with its path and line; the other slugs are stored."""
    _tree(config)
    bad = config.paths.conversations / "2025-03-01__broken"
    bad.mkdir()
    (bad / "messages.jsonl").write_text('{"role": "user", "content": "ok"}\n{not json\n', encoding="utf-8")
    report = Syncer(db, config).reconcile()
    assert (report.checked, report.failed) == (4, 0)
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM conversations").fetchone() == (3,)
        path, slug, severity, error = conn.execute("SELECT path, slug, severity, error FROM ingest_errors").fetchone()
    assert (path, slug, severity) == (str(bad / "messages.jsonl"), "2025-03-01__broken", "error")
    assert error.startswith("line 2:")


def test_garbage_keeps_stored_version_until_fixed(db: Database, config: Config) -> None:
    """A stored conversation survives its transcript turning into garbage, and updates when fixed."""
    folder = write_conversation(config.paths.conversations, "2025-04-01__c", [("user", "original")])
    syncer = Syncer(db, config)
    syncer.reconcile()
    (folder / "messages.jsonl").write_bytes(b"\x00\xff garbage")
    syncer.reconcile()
    with db.connection() as conn:
        assert conn.execute("SELECT content FROM messages").fetchall() == [("original",)]
        assert conn.execute("SELECT count(*) FROM ingest_errors").fetchone() == (1,)
    write_conversation(config.paths.conversations, "2025-04-01__c", [("user", "fixed")])
    syncer.reconcile()
    with db.connection() as conn:
        assert conn.execute("SELECT content FROM messages").fetchall() == [("fixed",)]
        assert conn.execute("SELECT count(*) FROM ingest_errors").fetchone() == (0,)


def test_bad_summary_file_keeps_its_summaries(db: Database, config: Config) -> None:
    """A summary file that stops parsing keeps its stored summaries; other files still sync."""
    write_conversation(config.paths.conversations, "2025-05-01__c", [("user", "a"), ("assistant", "b")])
    good = write_summaries(config.paths.summaries, "2025-05-01__c", [{"level": 1, "content": "one"}], name="a.jsonl")
    other = write_summaries(config.paths.summaries, "2025-05-01__c", [{"level": 2, "content": "two"}], name="b.jsonl")
    syncer = Syncer(db, config)
    syncer.reconcile()
    good.write_text("{broken", encoding="utf-8")
    other.write_text(json.dumps({"level": 2, "content": "two, edited"}) + "\n", encoding="utf-8")
    syncer.reconcile()
    with db.connection() as conn:
        assert conn.execute("SELECT level, content FROM summaries ORDER BY level").fetchall() == [
            (1, "one"),
            (2, "two, edited"),
        ]


def test_slugs_for_paths(db: Database, config: Config) -> None:
    """Paths inside either root map to their slug; a root means everything."""
    syncer = Syncer(db, config)
    conv = config.paths.conversations
    assert syncer.slugs_for_paths([conv / "a" / "messages.jsonl", config.paths.summaries / "b"]) == ["a", "b"]
    assert syncer.slugs_for_paths([conv]) is None


def test_hidden_folders_are_ignored(db: Database, config: Config) -> None:
    """Hidden folders (a tool's staging area) are never taken for conversations."""
    write_conversation(config.paths.conversations, ".staging", [("user", "half-copied")])
    assert Syncer(db, config).slugs_to_sync() == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_recorded(db: Database, config: Config) -> None:
    """An unreadable transcript is an ingest error, not a crash."""
    folder = write_conversation(config.paths.conversations, "2025-06-01__c", [("user", "a")])
    (folder / "messages.jsonl").chmod(0)
    try:
        report = Syncer(db, config).reconcile()
    finally:
        (folder / "messages.jsonl").chmod(0o644)
    assert report.failed == 0
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM ingest_errors").fetchone() == (1,)
