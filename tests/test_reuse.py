"""The same text is never encoded twice: reuse of live and recently deleted vectors."""

from __future__ import annotations

import shutil

import psycopg
import pytest
from structlog.testing import capture_logs

from memoryd import embed as embed_module
from memoryd.config import Config
from memoryd.db import Database
from memoryd.embed import Embedder, embed_pending
from memoryd.store import as_array
from memoryd.sync import Syncer
from memoryd.vectors import hnsw_index_name
from tests.conftest import write_conversation

pytestmark = pytest.mark.slow


def _vectors(db: Database, slug: str) -> list[list[float]]:
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT e.vector FROM embeddings e JOIN messages m ON m.id = e.message_id"
            " JOIN conversations c ON c.id = m.conversation_id WHERE c.slug = %s ORDER BY m.seq, e.chunk",
            (slug,),
        ).fetchall()
    return [as_array(r[0]).tolist() for r in rows]


def test_same_text_elsewhere_costs_no_model_call(db: Database, config: Config, embedder: Embedder) -> None:
    """A text already embedded in another conversation is copied, not encoded."""
    messages = [("user", "how do I rotate my SSH keys?"), ("assistant", "generate a new key pair, then ...")]
    write_conversation(config.paths.conversations, "first", messages)
    syncer = Syncer(db, config)
    syncer.reconcile()
    embed_pending(db, embedder)
    write_conversation(config.paths.conversations, "second", messages)
    syncer.reconcile()
    calls = embedder.encode_calls
    report = embed_pending(db, embedder)
    assert (report.texts, report.encoded, embedder.encode_calls) == (2, 0, calls)
    assert _vectors(db, "second") == _vectors(db, "first")


def test_duplicates_in_one_batch_are_encoded_once(db: Database, config: Config, embedder: Embedder) -> None:
    """Several new texts with the same content cost one encoding of it."""
    write_conversation(config.paths.conversations, "echo", [("user", "ping")] * 5)
    Syncer(db, config).reconcile()
    report = embed_pending(db, embedder)
    assert (report.texts, report.encoded) == (5, 1)


def test_renamed_slug_costs_no_model_call(db: Database, config: Config, embedder: Embedder) -> None:
    """A slug renamed on disk (a delete, then a create) reuses the deleted vectors."""
    write_conversation(config.paths.conversations, "old-name", [("user", "a question"), ("assistant", "an answer")])
    syncer = Syncer(db, config)
    syncer.reconcile()
    embed_pending(db, embedder)
    before = _vectors(db, "old-name")
    (config.paths.conversations / "old-name").rename(config.paths.conversations / "new-name")
    syncer.reconcile()
    calls = embedder.encode_calls
    report = embed_pending(db, embedder)
    assert (report.texts, report.encoded, embedder.encode_calls) == (2, 0, calls)
    assert _vectors(db, "new-name") == before


def test_moved_message_costs_no_model_call(db: Database, config: Config, embedder: Embedder) -> None:
    """An insertion early in a transcript encodes the new message only; later ones keep their vectors."""
    write_conversation(config.paths.conversations, "c", [("user", "one"), ("assistant", "two"), ("user", "three")])
    syncer = Syncer(db, config)
    syncer.reconcile()
    embed_pending(db, embedder)
    write_conversation(
        config.paths.conversations, "c", [("user", "zero"), ("user", "one"), ("assistant", "two"), ("user", "three")]
    )
    syncer.reconcile()
    calls = embedder.encode_calls
    report = embed_pending(db, embedder)
    assert (report.texts, report.encoded, embedder.encode_calls) == (1, 1, calls + 1)


def test_edit_reverted_costs_no_model_call(db: Database, config: Config, embedder: Embedder) -> None:
    """A message edited and then edited back gets its first vectors back from the cache."""
    write_conversation(config.paths.conversations, "c", [("user", "original wording")])
    syncer = Syncer(db, config)
    syncer.reconcile()
    embed_pending(db, embedder)
    write_conversation(config.paths.conversations, "c", [("user", "a temporary edit")])
    syncer.reconcile()
    assert embed_pending(db, embedder).encoded == 1
    write_conversation(config.paths.conversations, "c", [("user", "original wording")])
    syncer.reconcile()
    assert embed_pending(db, embedder).encoded == 0


@pytest.fixture
def above_bulk_threshold(db: Database, config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """Six texts pending for a model with no vectors yet, over a bulk-load threshold lowered to 3."""
    monkeypatch.setattr(embed_module, "BULK_LOAD_TEXTS", 3)
    write_conversation(config.paths.conversations, "c", [("user", f"text {i}") for i in range(6)])
    Syncer(db, config).reconcile()


def _vector_index(conn: psycopg.Connection[object], model: str) -> str | None:
    row = conn.execute("SELECT to_regclass(%s)::text", (hnsw_index_name(model),)).fetchone()
    return row[0] if row else None


@pytest.mark.usefixtures("above_bulk_threshold")
def test_first_bulk_load_builds_index_after_loading(db: Database, embedder: Embedder) -> None:
    """A first load above the bulk threshold writes vectors without the HNSW index, then builds it once."""
    with capture_logs() as logs:
        embed_pending(db, embedder, texts_per_transaction=2)
    assert [e["event"] for e in logs if e["event"] == "vector_index_built"] == ["vector_index_built"]
    assert db.run(_vector_index, embedder.name) == hnsw_index_name(embedder.name)


@pytest.mark.usefixtures("above_bulk_threshold")
def test_bulk_load_stopped_defers_the_index_to_the_next_run(db: Database, embedder: Embedder) -> None:
    """Stopped during a first bulk load (SIGTERM), no minutes-long build holds the exit: the next run builds it."""
    batches: list[int] = []
    with capture_logs() as logs:
        embed_pending(db, embedder, texts_per_transaction=2, progress=batches.append, should_stop=lambda: bool(batches))
    events = [e["event"] for e in logs]
    # The stop lets the transactions already in flight commit (at most two), and starts no other.
    assert batches in ([2], [2, 2]) and "vector_index_deferred" in events and "vector_index_built" not in events
    assert db.run(_vector_index, embedder.name) is None
    assert embed_pending(db, embedder).texts == 6 - sum(batches)
    assert db.run(_vector_index, embedder.name) == hnsw_index_name(embedder.name)


def test_vector_cache_is_pruned_by_age(db: Database, config: Config, embedder: Embedder) -> None:
    """Cached vectors of deleted texts are forgotten once older than the retention period."""
    from memoryd.store import prune_vector_cache

    write_conversation(config.paths.conversations, "gone", [("user", "soon deleted")])
    syncer = Syncer(db, config)
    syncer.reconcile()
    embed_pending(db, embedder)
    shutil.rmtree(config.paths.conversations / "gone")
    syncer.reconcile()
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM vector_cache").fetchone() == (1,)
        assert prune_vector_cache(conn, older_than_days=30) == 0
        conn.execute("UPDATE vector_cache SET cached_at = now() - interval '31 days'")
        assert prune_vector_cache(conn, older_than_days=30) == 1
