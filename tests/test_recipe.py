"""Speakers and the embedding recipe: stored, shown, searched, embedded, and re-embedded when they change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memoryd.api import LocalMemory, Memory
from memoryd.config import Config
from memoryd.db import Database
from memoryd.embed import Embedder, embed_pending
from memoryd.recipe import RECIPE
from memoryd.search import search
from memoryd.store import as_array, count_pending, count_reembedding
from memoryd.sync import Syncer

pytestmark = pytest.mark.slow

SLUG = "2024-01-05__realtalk_s03"
TURNS = [
    {"role": "user", "content": "I went skiing in the Alps last weekend!", "speaker": "Kate"},
    {"role": "assistant", "content": "Wow, how was the snow?", "speaker": "Elise"},
    {"role": "user", "content": "Perfect powder, we stayed until the lifts closed."},
]


def _write(root: Path, turns: list[dict[str, Any]], slug: str = SLUG) -> None:
    folder = root / slug
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "messages.jsonl").write_text("".join(json.dumps(t) + "\n" for t in turns), encoding="utf-8")


def _vectors(db: Database) -> dict[int, tuple[str, str | None, np.ndarray[Any, Any]]]:
    """seq -> (recipe, input_hash, vector) of the one-chunk messages of SLUG."""
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT m.seq, e.recipe, e.input_hash, e.vector FROM embeddings e JOIN messages m ON m.id = e.message_id"
            " ORDER BY m.seq"
        ).fetchall()
    return {int(seq): (recipe, ih, as_array(v)) for seq, recipe, ih, v in rows}


def test_speaker_is_stored_shown_and_found_by_name(db: Database, config: Config, embedder: Embedder) -> None:
    """The speaker's name is stored, shown on hits and their context, and matched by full-text search."""
    _write(config.paths.conversations, TURNS)
    Syncer(db, config).reconcile()
    with db.connection() as conn:
        speakers = conn.execute("SELECT seq, speaker FROM messages ORDER BY seq").fetchall()
        assert speakers == [(0, "Kate"), (1, "Elise"), (2, None)]
        found = search(conn, None, "Elise", mode="text")
    assert [(h.seq, h.role) for h in found] == [(1, "assistant")]
    embed_pending(db, embedder)
    with Memory(config, LocalMemory(config, db, embedder=lambda: embedder)) as mem:
        hits = mem.search("skiing in the Alps", k=1, context=1)
    assert (hits[0].seq, hits[0].speaker) == (0, "Kate")
    assert [(t.seq, t.speaker) for t in hits[0].context.after] == [(1, "Elise")]


def test_speaker_is_part_of_the_embedded_text(db: Database, config: Config, embedder: Embedder) -> None:
    """A message with a speaker is embedded as "Name: content" under the current recipe; one without, as its content."""
    _write(config.paths.conversations, TURNS)
    Syncer(db, config).reconcile()
    embed_pending(db, embedder)
    stored = _vectors(db)
    expected = embedder.encode([f"Kate: {TURNS[0]['content']}", TURNS[2]["content"], TURNS[0]["content"]])
    # Not exact: with "auto" on a CPU the precision may be onnx-int8, whose scales depend on the batch.
    assert float(stored[0][2] @ expected[0]) > 0.99
    # ... and nearer "Kate: ..." than the bare content (0.75 apart in fp32).
    assert float(stored[0][2] @ expected[0]) > float(stored[0][2] @ expected[2]) + 0.01
    assert float(stored[2][2] @ expected[1]) > 0.99
    assert {recipe for recipe, _, _ in stored.values()} == {RECIPE}
    assert stored[0][1] is not None and stored[2][1] is None  # input_hash: None when the content alone is encoded


def test_new_speaker_reembeds_keeping_old_vector_until_then(db: Database, config: Config, embedder: Embedder) -> None:
    """A speaker renamed in the file makes its message pending; search uses the old vector until the new one is in."""
    _write(config.paths.conversations, TURNS)
    syncer = Syncer(db, config)
    syncer.reconcile()
    embed_pending(db, embedder)
    before = _vectors(db)
    renamed = [dict(TURNS[0], speaker="Katherine"), *TURNS[1:]]
    _write(config.paths.conversations, renamed)
    syncer.reconcile()
    with db.connection() as conn:
        assert count_pending(conn, embedder.name) == 1
        assert conn.execute("SELECT count(*) FROM embeddings").fetchone() == (3,)
        assert [h.seq for h in search(conn, embedder, "skiing in the Alps", k=1, mode="vector")] == [0]
    calls = embedder.encode_calls
    report = embed_pending(db, embedder)
    after = _vectors(db)
    assert (report.texts, report.encoded, embedder.encode_calls) == (1, 1, calls + 1)
    assert float(after[0][2] @ embedder.encode([f"Katherine: {TURNS[0]['content']}"])[0]) > 0.999
    assert np.array_equal(after[1][2], before[1][2]) and np.array_equal(after[2][2], before[2][2])
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM embeddings").fetchone() == (3,)
        assert count_pending(conn, embedder.name) == 0


def test_older_recipe_with_the_same_input_is_kept_not_encoded(db: Database, config: Config, embedder: Embedder) -> None:
    """Vectors of an older recipe that encoded the same input get the new recipe in place: no model call."""
    _write(config.paths.conversations, TURNS)
    Syncer(db, config).reconcile()
    embed_pending(db, embedder)
    with db.connection() as conn:
        ids = conn.execute("SELECT id FROM embeddings ORDER BY id").fetchall()
        conn.execute("UPDATE embeddings SET recipe = 'content' WHERE input_hash IS NULL")
        assert (count_pending(conn, embedder.name), count_reembedding(conn, embedder.name)) == (1, 1)
    calls = embedder.encode_calls
    report = embed_pending(db, embedder)
    assert (report.texts, report.encoded, embedder.encode_calls) == (1, 0, calls)
    with db.connection() as conn:
        assert conn.execute("SELECT id FROM embeddings ORDER BY id").fetchall() == ids
        assert (count_pending(conn, embedder.name), count_reembedding(conn, embedder.name)) == (0, 0)
