"""The real daemon on real folders under awkward input: symlinked slugs, slow writers, a busy start."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from memoryd.config import Config
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
