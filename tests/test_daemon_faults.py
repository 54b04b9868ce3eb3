"""The real daemon on real folders under awkward input: symlinked slugs, slow writers, a busy start."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from structlog.testing import capture_logs

from memoryd.config import Config
from memoryd.daemon import Daemon
from memoryd.embed import Embedder
from tests.conftest import write_conversation
from tests.daemon_helpers import fast_config, running_daemon, wait_for

pytestmark = pytest.mark.slow


def _query(dsn: str, query: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [tuple(row) for row in conn.execute(query, params)]


def test_symlinked_slug_folders_are_seen_by_the_watcher(
    config: Config, db_dsn: str, embedder: Embedder, tmp_path: Path
) -> None:
    """A link to a folder made or removed in the conversations folder is synced at once, not at the next reconcile."""
    config = fast_config(config)  # rescan_interval_s stays 600: only events can explain a quick sync
    conversations = config.paths.conversations
    write_conversation(conversations / ".store", "real", [("user", "a linked conversation about tides")])
    outside = write_conversation(tmp_path / "elsewhere", "away", [("user", "a conversation outside the folder")])
    linked, stray = "2025-09-01__linked", "2025-09-02__outside"
    with running_daemon(config, embedder):
        os.symlink(".store/real", conversations / linked)
        wait_for(
            lambda: _query(db_dsn, "SELECT 1 FROM conversations WHERE slug = %s", linked) != [],
            timeout=60,
            what="the linked slug to be stored",
        )
        os.symlink(outside, conversations / stray)
        wait_for(
            lambda: _query(db_dsn, "SELECT 1 FROM ingest_errors WHERE slug = %s", stray) != [],
            timeout=60,
            what="the link out of the folder to be recorded",
        )
        (conversations / linked).unlink()
        wait_for(
            lambda: _query(db_dsn, "SELECT 1 FROM conversations WHERE slug = %s", linked) == [],
            timeout=60,
            what="the removed link's conversation to be deleted",
        )
    [(error,)] = _query(db_dsn, "SELECT error FROM ingest_errors WHERE slug = %s", stray)
    assert "outside the watched folder" in str(error)


def test_the_model_loads_after_the_first_reconcile(config: Config, embedder: Embedder) -> None:
    """The embedder's model is loaded only once the daemon is ready, so the start-up reconcile has the CPUs."""
    for n in range(20):
        write_conversation(config.paths.conversations, f"2025-10-{n % 28 + 1:02d}__start_{n:02d}", [("user", f"n{n}")])
    seen_ready: list[bool] = []
    daemon = Daemon(fast_config(config), embedder_factory=lambda: seen_ready.append(daemon.ready.is_set()) or embedder)
    thread = threading.Thread(target=daemon.run, name="test-daemon")
    thread.start()
    try:
        assert daemon.embedder_ready.wait(120), "the model was never loaded"
    finally:
        daemon.stop()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert seen_ready == [True]


def test_a_slow_writer_is_stored_as_in_progress_never_as_broken(
    config: Config, db_dsn: str, embedder: Embedder
) -> None:
    """A transcript appended to past max_wait, half a line at a time: no error, partial stores marked in progress."""
    # A writer pausing 0.5 s: shorter than the quiet period (1 s), longer than the settle interval (0.25 s).
    config = replace(config, watch=replace(config.watch, debounce_ms=1000, max_wait_ms=3000))
    slug = "2025-11-01__slow_writer"
    folder = config.paths.conversations / slug
    lines = [
        json.dumps({"role": "user" if n % 2 == 0 else "assistant", "content": f"line {n} of a slow writer"})
        for n in range(8)
    ]
    with capture_logs() as logs, running_daemon(config, embedder):
        folder.mkdir()  # and the file at once: an empty slug folder is an error of its own
        with (folder / "messages.jsonl").open("w", encoding="utf-8") as out:
            for line in lines:
                half = len(line) // 2
                for piece in (line[:half], line[half:] + "\n"):
                    out.write(piece)
                    out.flush()
                    time.sleep(0.5)
        wait_for(
            lambda: (
                _query(db_dsn, "SELECT conversation_fingerprint FROM folder_state WHERE slug = %s", slug)
                not in ([], [(None,)])
                and not str(
                    _query(db_dsn, "SELECT conversation_fingerprint FROM folder_state WHERE slug = %s", slug)[0][0]
                ).startswith("in-progress:")
            ),
            timeout=60,
            what="the slug to be stored complete",
        )
    stored = [e for e in logs if e.get("slug") == slug and e["event"] == "slug_stored"]
    assert [e for e in logs if e["event"].startswith("ingest_")] == []
    assert _query(db_dsn, "SELECT count(*) FROM ingest_errors") == [(0,)]
    assert any(e.get("in_progress") for e in stored), stored  # stored while growing, and said so
    total = 0
    for event in stored:
        total += event.get("messages_inserted", 0) - event.get("messages_deleted", 0)
        assert event.get("in_progress") or total == len(lines), f"a partial store not marked in progress: {stored}"
    rows = _query(
        db_dsn,
        "SELECT m.content FROM messages m JOIN conversations c ON c.id = m.conversation_id"
        " WHERE c.slug = %s ORDER BY m.seq",
        slug,
    )
    assert [r[0] for r in rows] == [json.loads(line)["content"] for line in lines]
