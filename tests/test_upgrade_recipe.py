"""Upgrade to sql/006: a database filled and embedded before it re-embeds in the background, searchable throughout."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from memoryd.config import Config
from memoryd.db import Database, RetryPolicy, apply_migrations, migrations_dir
from memoryd.embed import Embedder, embed_pending
from memoryd.formats import parse_conversation
from memoryd.recipe import RECIPE
from memoryd.search import search
from memoryd.store import count_pending, count_reembedding
from memoryd.sync import fingerprint
from memoryd.vectors import ensure_vector_index

pytestmark = pytest.mark.slow

UPGRADE = "006"
NAMES = ("Kate", "Elise")
TOPICS = ("skiing in the Alps", "a pasta class", "the flu", "Art Basel", "a new camera", "volleyball on the beach")


def _turns(n: int) -> list[dict[str, Any]]:
    """A conversation of four turns; odd conversations name no speakers."""
    turns = []
    for seq in range(4):
        turn: dict[str, Any] = {"role": ("user", "assistant")[seq % 2], "content": f"Turn {seq} about {TOPICS[n]}."}
        if n % 2 == 0:
            turn["speaker"] = NAMES[seq % 2]
        turns.append(turn)
    return turns


@pytest.fixture
def old_dsn(empty_dsn: str, tmp_path: Path) -> str:
    """A database with the migrations before 006 only, as the previous release left it."""
    older = tmp_path / "older-sql"
    older.mkdir()
    for path in sorted(migrations_dir().glob("*.sql")):
        if path.stem < UPGRADE:
            shutil.copy(path, older / path.name)
    with psycopg.connect(empty_dsn) as conn:
        apply_migrations(conn, older)
    return empty_dsn


def _fill_as_before(dsn: str, config: Config, embedder: Embedder) -> None:
    """Store and embed the folders as the previous release did: its columns, vectors of the content alone."""
    with psycopg.connect(dsn) as conn:
        for folder in sorted(config.paths.conversations.iterdir()):
            conv = parse_conversation(folder)
            (conv_id,) = conn.execute(
                "INSERT INTO conversations (source, slug, title, created_date, total_chars, total_lines, source_path,"
                " source_format, content_hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    config.source.name,  # sql/005_sources.sql came before
                    conv.slug,
                    conv.title,
                    conv.created_date,
                    conv.total_chars,
                    conv.total_lines,
                    str(conv.source_path),
                    conv.source_format,
                    conv.source_hash,
                ),
            ).fetchone() or (0,)
            vectors = embedder.encode([m.content for m in conv.messages])
            for m, vector in zip(conv.messages, vectors, strict=True):
                (message_id,) = conn.execute(
                    "INSERT INTO messages (conversation_id, seq, role, ts, content, content_hash)"
                    " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                    (conv_id, m.seq, m.role, m.ts, m.content, m.content_hash),
                ).fetchone() or (0,)
                conn.execute(
                    "INSERT INTO embeddings (conversation_id, ref_type, message_id, chunk, chunk_start, chunk_end,"
                    " model, dim, vector, content_hash) VALUES (%s, 'message', %s, 0, 0, %s, %s, %s, %s::vector, %s)",
                    (conv_id, message_id, len(m.content), embedder.name, embedder.dim, vector.tolist(), m.content_hash),
                )
            conn.execute(
                "INSERT INTO folder_state (source, slug, conversation_fingerprint, summaries_fingerprint)"
                " VALUES (%s, %s, %s, %s)",
                (config.source.name, conv.slug, fingerprint(folder), fingerprint(config.paths.summaries / conv.slug)),
            )
        ensure_vector_index(conn, embedder.name, embedder.dim)


def test_upgrade_reembeds_in_background_searchable_throughout(old_dsn: str, config: Config, embedder: Embedder) -> None:
    """Opened by the new release, an old database fills in speakers and re-embeds them in the background.

    Searches between the re-embed's transactions find every text at every
    moment (old vectors until new ones replace them); texts whose encoded
    input did not change are not encoded again; at the end each text has one
    set of vectors, all of the current recipe.
    """
    for n in range(len(TOPICS)):
        folder = config.paths.conversations / f"2024-01-0{n + 1}__chat_s{n}"
        folder.mkdir(parents=True)
        (folder / "messages.jsonl").write_text("".join(json.dumps(t) + "\n" for t in _turns(n)), encoding="utf-8")
    _fill_as_before(old_dsn, config, embedder)
    with psycopg.connect(old_dsn) as conn:
        ids_before = conn.execute("SELECT id, content_hash FROM messages ORDER BY id").fetchall()
    total = len(ids_before)
    named = sum(1 for n in range(len(TOPICS)) for t in _turns(n) if "speaker" in t)

    config = replace(config, database=replace(config.database, dsn=old_dsn))
    with Database(config.database, retry=RetryPolicy(deadline_s=10.0)) as db:  # opening it migrates
        from memoryd.sync import Syncer

        Syncer(db, config).reconcile()
        with db.connection() as conn:
            assert conn.execute("SELECT id, content_hash FROM messages ORDER BY id").fetchall() == ids_before
            assert conn.execute("SELECT count(*) FROM messages WHERE speaker IS NOT NULL").fetchone() == (named,)
            assert count_pending(conn, embedder.name) == total
            assert count_reembedding(conn, embedder.name) == total

        searched: list[list[int]] = []

        def search_between_batches(stop_after: int | None) -> bool:
            """Every text is findable by meaning, and the one asked for comes first; stop after a few batches."""
            with db.connection() as conn:
                everything = search(conn, embedder, "Turn about", k=total, mode="vector")
                assert sorted(h.ref_id for h in everything) == [i for i, _ in ids_before]
                best = search(conn, embedder, "Turn 2 about Art Basel.", k=1)
                searched.append([h.ref_id for h in best])
                assert [(h.slug, h.seq) for h in best] == [("2024-01-04__chat_s3", 2)]
            return stop_after is not None and len(searched) >= stop_after

        calls = embedder.encode_calls
        first = embed_pending(db, embedder, texts_per_transaction=3, should_stop=lambda: search_between_batches(3))
        with db.connection() as conn:
            left = count_reembedding(conn, embedder.name)
            assert 0 < first.texts < total and left == total - first.texts
        second = embed_pending(db, embedder, texts_per_transaction=3, should_stop=lambda: search_between_batches(None))
        assert first.texts + second.texts == total
        assert first.encoded + second.encoded == named  # each named turn is a distinct input; the rest kept theirs
        assert embedder.encode_calls - calls <= named
        assert len(searched) > 5
        with db.connection() as conn:
            assert (count_pending(conn, embedder.name), count_reembedding(conn, embedder.name)) == (0, 0)
            rows = conn.execute(
                "SELECT recipe, count(*), count(DISTINCT message_id), max(chunk) FROM embeddings GROUP BY recipe"
            ).fetchall()
            assert rows == [(RECIPE, total, total, 0)]
