"""Embedding with the real model: chunking, pending work, idempotence, cascades."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import numpy as np
import pytest

from daemon.config import Config
from daemon.db import Database
from daemon.embed import Embedder, embed_pending
from daemon.errors import EmbedError
from daemon.store import count_pending
from daemon.sync import Syncer
from tests.conftest import write_conversation, write_summaries

pytestmark = pytest.mark.slow


def _embedding_ids(db: Database) -> dict[tuple[str, int, int], int]:
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT e.id, e.ref_type, COALESCE(m.seq, -1), e.chunk FROM embeddings AS e"
            " LEFT JOIN messages AS m ON m.id = e.message_id"
        ).fetchall()
    return {(ref_type, seq, chunk): row_id for row_id, ref_type, seq, chunk in rows}


def _orphans(db: Database) -> int:
    with db.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM embeddings AS e"
            " WHERE NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.id = e.message_id)"
            " AND NOT EXISTS (SELECT 1 FROM summaries AS s WHERE s.id = e.summary_id)"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_vectors_are_unit_length_and_384_wide(embedder: Embedder) -> None:
    """The default model gives 384-dimension, L2-normalised float32 vectors."""
    vectors = embedder.encode(["hello world", "bonjour le monde"])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_short_text_is_one_chunk(embedder: Embedder) -> None:
    """A text within the window is a single chunk spanning all of it."""
    spans = embedder.chunk("  a short message  ")
    assert [(s.start, s.end) for s in spans] == [(0, 19)]


def test_long_text_chunks_cover_everything_with_overlap(embedder: Embedder) -> None:
    """Long texts are split within the token window, overlapping, with nothing left out."""
    small = copy.copy(embedder)
    small.window, small.overlap = 32, 8
    text = " ".join(f"word{i}" for i in range(400))
    spans = small.chunk(text)
    assert len(spans) > 5
    assert spans[0].start == 0 and spans[-1].end == len(text)
    for before, after in itertools.pairwise(spans):
        assert after.start < before.end  # overlap: no gap between chunks
    for span in spans:
        tokens = small.model.tokenizer(text[span.start : span.end], add_special_tokens=False)["input_ids"]
        assert len(tokens) <= 32 + 2  # re-tokenising a chunk may merge a boundary token or two


def test_unknown_model_is_a_clear_error() -> None:
    """A model that is neither the packaged default nor a local folder fails without any download."""
    from daemon.config import EmbeddingConfig

    with pytest.raises(EmbedError, match="memoryd never downloads models"):
        Embedder(EmbeddingConfig(model="no-such/model"))


def test_embed_then_nothing_pending(db: Database, config: Config, embedder: Embedder) -> None:
    """Embedding covers messages and summaries; a second run encodes nothing."""
    write_conversation(config.paths.conversations, "c1", [("user", "hi"), ("assistant", "hello")])
    write_summaries(config.paths.summaries, "c1", [{"level": 1, "content": "greetings"}])
    Syncer(db, config).reconcile()
    report = embed_pending(db, embedder)
    assert (report.texts, report.chunks) == (3, 3)
    assert db.run(count_pending, embedder.name) == 0
    calls = embedder.encode_calls
    assert embed_pending(db, embedder).texts == 0
    assert embedder.encode_calls == calls


def test_edit_reembeds_only_that_message(db: Database, config: Config, embedder: Embedder) -> None:
    """Editing one message of 50 re-embeds its chunks only; every other embedding keeps its id."""
    messages = [("user" if i % 2 == 0 else "assistant", f"message number {i} about topic {i * 7}") for i in range(50)]
    write_conversation(config.paths.conversations, "c50", messages)
    syncer = Syncer(db, config)
    syncer.reconcile()
    embed_pending(db, embedder)
    before = _embedding_ids(db)
    assert len(before) == 50
    messages[17] = ("assistant", "an edited message about something else entirely")
    write_conversation(config.paths.conversations, "c50", messages)
    syncer.reconcile()
    calls = embedder.encode_calls
    report = embed_pending(db, embedder)
    after = _embedding_ids(db)
    assert report.texts == 1 and embedder.encode_calls == calls + 1
    assert {k: v for k, v in after.items() if k[1] != 17} == {k: v for k, v in before.items() if k[1] != 17}
    assert after[("message", 17, 0)] != before[("message", 17, 0)]
    assert _orphans(db) == 0


def test_deleting_folder_removes_embeddings(db: Database, config: Config, embedder: Embedder) -> None:
    """Deleting a conversation folder removes its embeddings; none is left without its source."""
    write_conversation(config.paths.conversations, "gone", [("user", "bye"), ("assistant", "see you")])
    write_conversation(config.paths.conversations, "stays", [("user", "still here")])
    write_summaries(config.paths.summaries, "gone", [{"level": 1, "content": "farewell"}])
    syncer = Syncer(db, config)
    syncer.reconcile()
    embed_pending(db, embedder)
    for f in (config.paths.conversations / "gone").iterdir():
        f.unlink()
    (config.paths.conversations / "gone").rmdir()
    syncer.reconcile()
    with db.connection() as conn:
        rows: Any = conn.execute(
            "SELECT c.slug, count(*) FROM embeddings e JOIN conversations c ON c.id = e.conversation_id GROUP BY 1"
        ).fetchall()
    assert rows == [("stays", 1)]
    assert _orphans(db) == 0


def test_embedding_without_source_is_impossible(db: Database, config: Config, embedder: Embedder) -> None:
    """The schema itself refuses an embedding whose message does not exist."""
    import psycopg

    write_conversation(config.paths.conversations, "c", [("user", "x")])
    Syncer(db, config).reconcile()
    with pytest.raises(psycopg.errors.ForeignKeyViolation), db.connection() as conn:
        conn.execute(
            "INSERT INTO embeddings (conversation_id, ref_type, message_id, chunk, chunk_start, chunk_end, model,"
            " dim, vector, content_hash) SELECT id, 'message', 999999, 0, 0, 1, 'm', 3, '[1,2,3]', 'h'"
            " FROM conversations"
        )
