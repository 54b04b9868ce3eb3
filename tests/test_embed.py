"""Embedding with the real model: chunking, pending work, idempotence, cascades."""

from __future__ import annotations

import copy
import itertools
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import structlog

from memoryd.config import Config, EmbeddingConfig
from memoryd.db import Database
from memoryd.embed import Capabilities, Embedder, embed_pending, length_batches, precision_candidates
from memoryd.errors import EmbedError
from memoryd.onnx_backend import prune_stale_builds
from memoryd.store import count_pending
from memoryd.sync import Syncer
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
    from memoryd.config import EmbeddingConfig

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


def test_text_locked_while_the_run_passes_it_is_embedded_before_the_run_ends(
    db: Database, db_dsn: str, config: Config, embedder: Embedder
) -> None:
    """Claims go on from where the last one stopped; a text skipped (locked elsewhere) is found by a last pass."""
    write_conversation(config.paths.conversations, "c1", [("user", f"message number {n}") for n in range(6)])
    Syncer(db, config).reconcile()
    with psycopg.connect(db_dsn) as other:
        first = other.execute("SELECT id FROM messages ORDER BY id LIMIT 1 FOR UPDATE").fetchone()
        batches: list[int] = []

        def release_after_first_batch(done: int) -> None:
            batches.append(done)
            if len(batches) == 1:
                other.rollback()  # the run has gone past the first message by now

        report = embed_pending(db, embedder, texts_per_transaction=2, progress=release_after_first_batch)
    assert first is not None and report.texts == 6
    assert batches[0] == 2 and batches[-1] == 1  # the skipped message came last, alone
    assert db.run(count_pending, embedder.name) == 0


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


# -- precision: the decision, the probe, sorted batching ------------------------

AVX2 = frozenset({"avx2", "fma"})
AMX = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})


@pytest.mark.parametrize(
    ("precision", "caps", "expected"),
    [
        ("auto", Capabilities("cpu", AVX2), ["onnx-int8", "onnx-fp32"]),
        ("auto", Capabilities("cpu", AMX), ["bf16", "onnx-int8", "onnx-fp32"]),
        ("auto", Capabilities("cpu", AVX2, onnx_unavailable="not installed"), []),
        ("auto", Capabilities("cuda", AVX2), ["fp16"]),
        ("auto", Capabilities("cuda:1", AMX), ["fp16"]),
        ("fp32", Capabilities("cuda", AMX), []),
        ("bf16", Capabilities("cpu", AVX2), ["bf16"]),
        ("onnx-int8", Capabilities("cpu", AVX2), ["onnx-int8"]),
        ("onnx-int8", Capabilities("cuda", AVX2), []),
        ("fp16", Capabilities("cpu", AMX), []),
    ],
    ids=[
        "avx2-cpu",
        "amx-cpu",
        "no-onnxruntime",
        "cuda",
        "cuda-on-amx-host",
        "fp32-forced",
        "bf16-forced",
        "int8-forced",
        "onnx-on-gpu",
        "fp16-on-cpu",
    ],
)
def test_precision_candidates(precision: str, caps: Capabilities, expected: list[str]) -> None:
    """The candidates follow the device and CPU flags: fp16 on CUDA, bf16 only with AMX/AVX-512 BF16, never fp32."""
    candidates, skipped = precision_candidates(precision, caps)
    assert candidates == expected
    assert "fp32" not in candidates and "fp32" not in skipped
    if precision not in ("auto", "fp32") and not candidates:
        assert set(skipped) == {precision}  # a forced precision that cannot run says why


def test_precision_candidates_say_why_bf16_is_skipped_on_avx2() -> None:
    """On a CPU without AMX or AVX-512 BF16, "auto" does not try bf16, and says why."""
    _, skipped = precision_candidates("auto", Capabilities("cpu", AVX2))
    assert "AMX" in skipped["bf16"]


def test_probe_failure_falls_back_to_fp32() -> None:
    """A precision whose probe misses the cosine bar is not used: fp32 runs, and the fallback is logged."""
    with structlog.testing.capture_logs() as logs:
        embedder = Embedder(EmbeddingConfig(precision="onnx-int8"), probe_min_cosine=1.01)
    assert embedder.precision == "fp32" and embedder.probe_cosine == 1.0
    fallback = next(e for e in logs if e["event"] == "embed_precision_fallback")
    assert fallback["precision"] == "onnx-int8" and 0.99 <= fallback["mean_cosine"] < 1.01
    assert "below 1.01" in fallback["reason"]
    loaded = next(e for e in logs if e["event"] == "model_loaded")
    assert loaded["precision"] == "fp32" and loaded["probe_cosine"] == 1.0
    assert loaded["candidates"]["onnx-int8"]["mean_cosine"] == fallback["mean_cosine"]
    text = "a fallback still gives the plain model's vectors"
    np.testing.assert_allclose(embedder.encode([text])[0], embedder.model.encode(text), atol=1e-5)


def test_candidate_with_bad_vectors_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    """A candidate that runs but gives wrong vectors fails the probe against the real fp32 model."""
    rng = np.random.default_rng(0)

    def broken(self: Embedder, precision: str) -> Any:
        return lambda ids, mask: rng.standard_normal((ids.shape[0], self.dim)).astype(np.float32)

    monkeypatch.setattr(Embedder, "_make_backend", broken)
    with structlog.testing.capture_logs() as logs:
        embedder = Embedder(EmbeddingConfig(precision="bf16"))
    assert embedder.precision == "fp32"
    fallback = next(e for e in logs if e["event"] == "embed_precision_fallback")
    assert fallback["precision"] == "bf16" and fallback["mean_cosine"] < 0.5


def test_sorted_batches_return_vectors_in_input_order(embedder: Embedder) -> None:
    """Texts of very different lengths, encoded in length-sorted batches, come back in their order, close to fp32."""
    texts = [
        "ok",
        " ".join(f"Paragraphe {i} : l'agent résume la conversation d'hier." for i in range(30)),
        "How do I search my notes by meaning?",
        "",
        " ".join(f"Sentence {i} about the storm poem and its summary." for i in range(12)),
        "Bonjour !",
        "the sourdough recipe, again",
    ]
    reference = np.stack([embedder.model.encode(t, normalize_embeddings=True) for t in texts])
    fp32 = Embedder(EmbeddingConfig(precision="fp32", batch_size=2))  # several batches, cut by length
    similarity = fp32.encode(texts) @ reference.T
    assert np.all(np.diag(similarity) > 0.99)
    assert list(similarity.argmax(axis=1)) == list(range(len(texts)))
    similarity = embedder.encode(texts) @ reference.T  # whatever "auto" chose here
    assert np.diag(similarity).mean() >= 0.99
    assert list(similarity.argmax(axis=1)) == list(range(len(texts)))


@pytest.mark.parametrize("max_batch", [1, 3, 64])
def test_length_batches_cover_everything_in_order(max_batch: int) -> None:
    """Batches are contiguous, cover every text once and hold at most max_batch texts."""
    lengths = sorted([256, 256, 255, 200, 120, 118, 40, 39, 12, 5, 3, 3], reverse=True)
    cuts = length_batches(lengths, max_batch)
    assert cuts[0][0] == 0 and cuts[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(cuts))
    assert all(0 < end - first <= max_batch for first, end in cuts)


def test_length_batches_do_not_pad_short_texts_to_long_ones() -> None:
    """A few long texts and many short ones are not put in one batch padded to the longest."""
    lengths = [256] * 4 + [8] * 60
    cuts = length_batches(lengths, 64)
    padded = sum(lengths[first] * (end - first) for first, end in cuts)
    assert padded <= 1.05 * sum(lengths)


def test_stale_onnx_builds_are_pruned(tmp_path: Path) -> None:
    """Builds unused for 30 days go (a library upgrade leaves one behind); recent ones and the current stay."""
    builds = tmp_path / "onnx"
    current, recent, stale = (builds / name for name in ("model-current", "model-recent", "model-stale"))
    for folder in (current, recent, stale):
        folder.mkdir(parents=True)
        (folder / "int8.onnx").write_bytes(b"x")
    month_ago = time.time() - 31 * 86_400
    os.utime(stale, (month_ago, month_ago))
    os.utime(current, (month_ago, month_ago))  # old, but in use now
    os.utime(recent, (time.time() - 86_400,) * 2)
    assert prune_stale_builds(current) == [stale]
    assert sorted(p.name for p in builds.iterdir()) == ["model-current", "model-recent"]
    assert current.stat().st_mtime > month_ago + 30 * 86_400  # marked as used
