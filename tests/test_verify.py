"""`memoryd verify`: folders and database compared on a real database, with drift induced on both sides."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from memoryd.config import Config
from memoryd.db import Database
from memoryd.embed import Embedder, embed_pending
from memoryd.records import content_hash
from memoryd.sync import Syncer
from memoryd.verify import verify
from tests.conftest import write_conversation, write_summaries

BREAD = "2025-01-01__bread"
BIRDS = "2025-01-02__birds"
TEA = "2025-01-03__tea"
GONE = "2025-01-04__gone"
TABLES = ("conversations", "messages", "summaries", "embeddings", "folder_state", "ingest_errors", "vector_cache")


def database_snapshot(dsn: str) -> dict[str, str]:
    """An md5 of every row of every table: any write shows."""
    with psycopg.connect(dsn) as conn:
        return {
            table: str(
                conn.execute(
                    f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t"
                ).fetchone()
            )
            for table in TABLES
        }


def folder_snapshot(*roots: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under the roots with its bytes and mtime."""
    return {
        str(path): (path.read_bytes(), path.stat().st_mtime_ns)
        for root in roots
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def stored(db: Database, config: Config, embedder: Embedder) -> Config:
    """Four conversations (one with summaries) stored and embedded: folders and database agree."""
    root = config.paths.conversations
    write_conversation(root, BREAD, [("user", "How do I get a crisp crust?"), ("assistant", "Bake in a hot pot.")])
    write_conversation(root, BIRDS, [("user", "How far do terns fly?"), ("assistant", "Pole to pole.")])
    write_conversation(root, TEA, [("user", "Green tea temperature?"), ("assistant", "About 80 °C.")])
    write_conversation(root, GONE, [("user", "Soon deleted"), ("assistant", "Indeed.")])
    write_summaries(config.paths.summaries, BREAD, [{"level": 1, "covers": [0, 1], "content": "Crusty bread."}])
    Syncer(db, config).reconcile()
    embed_pending(db, embedder)
    return config


def test_agreeing_folders_and_database_verify_clean(db: Database, stored: Config) -> None:
    """After ingest and embed, verify finds no drift and counts what it compared."""
    report = verify(db, stored)
    assert report.drift == {}
    assert (report.slugs, report.conversations, report.messages, report.summaries) == (4, 4, 8, 1)


def induce_drift(config: Config, dsn: str) -> None:
    """Drift on both sides: edited and broken files, new and deleted folders, rows and vectors changed in SQL."""
    root = config.paths.conversations
    write_conversation(
        root, BREAD, [("user", "How do I get a crisp crust?"), ("assistant", "Bake it in a Dutch oven.")]
    )
    write_summaries(
        config.paths.summaries,
        BREAD,
        [{"level": 2, "covers": [0, 1], "content": "Baking."}],
        name="more.jsonl",
    )
    write_conversation(root, "2025-01-05__new", [("user", "Not ingested yet")])
    shutil.rmtree(root / GONE)
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "DELETE FROM messages WHERE seq = 1 AND conversation_id = (SELECT id FROM conversations WHERE slug = %s)",
            (BIRDS,),
        )
        conn.execute(
            "UPDATE messages SET content = %s, content_hash = %s"
            " WHERE seq = 0 AND conversation_id = (SELECT id FROM conversations WHERE slug = %s)",
            ("Black tea temperature?", content_hash("Black tea temperature?"), TEA),
        )


def test_induced_drift_is_reported_per_slug_and_nothing_is_written(db: Database, stored: Config) -> None:
    """Each kind of drift is named under its slug; the database rows and the files are the same before and after."""
    induce_drift(stored, stored.database.dsn)
    before = (database_snapshot(stored.database.dsn), folder_snapshot(stored.paths.conversations))
    report = verify(db, stored)
    assert (database_snapshot(stored.database.dsn), folder_snapshot(stored.paths.conversations)) == before
    assert sorted(report.drift) == [BREAD, BIRDS, TEA, GONE, "2025-01-05__new"]
    bread = report.drift[BREAD]
    assert (bread.messages_missing, bread.messages_extra, bread.summaries_missing, bread.summaries_extra) == (
        1,
        1,
        1,
        0,
    )
    assert bread.problems == [
        "messages differ: 1 on disk not in the database, 1 in the database not on disk",
        "files changed since the last ingest (the stored source hash differs)",
        "summaries differ: 1 on disk not in the database, 0 in the database not on disk",
    ]
    assert report.drift[BIRDS].problems == [
        "messages differ: 1 on disk not in the database, 0 in the database not on disk"
    ]
    tea = report.drift[TEA]
    assert (tea.messages_missing, tea.messages_extra, tea.pending_vectors, tea.orphaned_vectors) == (1, 1, 1, 1)
    assert tea.problems[-2:] == [
        "1 text(s) without vectors of the model (run `memoryd embed`)",
        "1 orphaned vector(s): of a text that changed, or chunks missing",
    ]
    assert report.drift[GONE].problems == ["conversation in the database, its folder is gone"]
    assert report.drift["2025-01-05__new"].problems == ["conversation on disk, not in the database (1 message(s))"]


def test_ingest_force_and_embed_repair_what_verify_finds(db: Database, stored: Config, embedder: Embedder) -> None:
    """`ingest --force` then `embed` repair every induced drift, rows changed in SQL included."""
    induce_drift(stored, stored.database.dsn)
    Syncer(db, stored).reconcile(force=True)
    embed_pending(db, embedder)
    assert verify(db, stored).drift == {}


def test_unreadable_file_and_kept_conversation(db: Database, stored: Config) -> None:
    """A broken file is drift (the stored version is kept); with on_delete = keep a deleted folder is not."""
    (stored.paths.conversations / BREAD / "messages.jsonl").write_text("{broken\n", encoding="utf-8")
    shutil.rmtree(stored.paths.conversations / GONE)
    keep = replace(stored, watch=replace(stored.watch, on_delete="keep"))
    report = verify(db, keep)
    assert sorted(report.drift) == [BREAD]
    (problem,) = report.drift[BREAD].problems
    assert problem.startswith("unreadable on disk (the stored version is kept): ")
    assert "messages.jsonl:1: invalid JSON" in problem


def write_config(config: Config, path: Path) -> Path:
    path.write_text(
        f'[paths]\nconversations = "{config.paths.conversations}"\nsummaries = "{config.paths.summaries}"\n',
        encoding="utf-8",
    )
    return path


def test_cli_verify_text_and_json(stored: Config, tmp_path: Path) -> None:
    """`memoryd verify` exits 0 when clean, 1 on drift, printing it per slug; --json says the same."""
    config_path = write_config(stored, tmp_path / "config.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMORYD_")} | {"MEMORYD_DSN": stored.database.dsn}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "memoryd.cli", "--config", str(config_path), "verify", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)

    clean = run()
    assert clean.returncode == 0, clean.stderr
    assert " 0 drifted in " in clean.stdout
    shutil.rmtree(stored.paths.conversations / GONE)
    drifted = run()
    assert drifted.returncode == 1
    out = drifted.stdout.splitlines()
    assert " 1 drifted in " in out[0]
    assert out[1:] == [GONE, "  conversation in the database, its folder is gone"]
    as_json = run("--json")
    assert as_json.returncode == 1
    data: dict[str, Any] = json.loads(as_json.stdout)
    assert data["clean"] is False
    assert data["drift"][GONE]["problems"] == ["conversation in the database, its folder is gone"]
    assert data["drift"][GONE]["messages_extra"] == 2
