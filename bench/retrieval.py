"""Retrieval quality on real conversations: does search find the turns that answer a question?

The data is REALTALK (Lee et al. 2025, arXiv:2502.13270), prepared in
``../shared/retrieval-bench/`` (see its README): 219 dated sessions of ten
21-day chats between two people, 8,944 messages and 726 questions, each
labelled with the messages that answer it.  It has no licence of its own, so
it is read from there and converted into a work folder outside the
repository, never copied into it; where the folder is absent the bench says
so and exits 0.

Each question is searched within its own chat (a slug filter), messages
only, k = 25, and scored on the labelled (slug, seq) pairs: hit@k counts a
question when any answering message is in the top k, MRR is 1 / rank of the
first one (0 when absent from the top 25).  Figures are printed overall and
per category (multi-hop, temporal, commonsense) for memoryd's three modes and
two baselines computed in the same process on the same messages:

- plain BM25 (k1 = 1.2, b = 0.75; lower-cased word tokens, no stemming),
  statistics over the question's own chat;
- exact dense search with the same model in fp32 (numpy, every chunk of
  every message in scope, a message scored by its best chunk).

Ingesting and embedding 8,944 messages takes minutes on a 2-core CPU, so a
``--work`` folder keeps the converted data, an embedded PostgreSQL and the
fp32 vectors between runs: a second run only searches.  ``--dsn`` uses an
existing database instead of the embedded one.  ``--sweep`` also prints the
BM25 parameters and fusion weights tried (how they were chosen).

    .venv/bin/python -m bench.retrieval [--data ../shared/retrieval-bench] [--work DIR] [--dsn DSN] [--sweep]
        [--speaker-prefix]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import timed, tree_config
from memoryd import bm25
from memoryd.config import EmbeddingConfig, LogConfig
from memoryd.db import Database, EmbeddedServer
from memoryd.embed import Embedder, embed_pending
from memoryd.filters import SearchFilters
from memoryd.log import configure_logging
from memoryd.search import MODES, SearchQuery, search_query
from memoryd.sync import Syncer

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "retrieval-bench"
KS = (1, 5, 10, 25)
DEPTH = max(KS)
BM25_K1 = 1.2
BM25_B = 0.75
_TOKEN = re.compile(r"\w+")

Key = tuple[str, int]  # (slug, seq)
Vectors = np.ndarray[Any, np.dtype[np.float32]]


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    text: str
    category: str
    scope: tuple[str, ...]
    relevant: frozenset[Key]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    slug: str
    seq: int
    role: str
    content: str


def load_questions(path: Path) -> list[Question]:
    questions: list[Question] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            q = json.loads(line)
            questions.append(
                Question(
                    q["id"],
                    q["question"],
                    q["category"],
                    tuple(q["scope"]),
                    frozenset((slug, int(seq)) for slug, seq in q["relevant"]),
                )
            )
    return questions


def convert(data: Path, out: Path, *, speaker_prefix: bool = False) -> None:
    """Run the data set's own converter once (its output is byte-identical for the same input).

    Each message keeps its ``speaker``, which memoryd stores and embeds.
    ``speaker_prefix``: the converter's ``--speaker-prefix`` writes "Name: "
    into the content instead, and the ``speaker`` keys are dropped, as
    memoryd before sql/006 saw such data (the comparison of README
    "Retrieval quality").
    """
    if (out / "queries.jsonl").is_file():
        return
    flags = ["--speaker-prefix"] if speaker_prefix else []
    subprocess.run(
        [sys.executable, str(data / "convert.py"), str(out), "--force", *flags], check=True, capture_output=True
    )
    if speaker_prefix:
        for path in (out / "conversations").glob("*/messages.jsonl"):
            lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            path.write_text(
                "".join(json.dumps({k: v for k, v in m.items() if k != "speaker"}) + "\n" for m in lines),
                encoding="utf-8",
            )


@contextmanager
def work_folder(path: Path | None) -> Iterator[Path]:
    """The kept ``--work`` folder, or a temporary one removed at the end."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    temp = Path(tempfile.mkdtemp(prefix="memoryd-retrieval-"))
    try:
        yield temp
    finally:
        shutil.rmtree(temp, ignore_errors=True)


@contextmanager
def database_dsn(work: Path, dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    server = EmbeddedServer(work / "pg")
    try:
        yield server.start()
    finally:
        server.stop()


# --- scoring --------------------------------------------------------------------


def rank_of_first(ranked: Sequence[Key], relevant: frozenset[Key]) -> int | None:
    return next((n for n, key in enumerate(ranked[:DEPTH], start=1) if key in relevant), None)


def scores(ranks: Sequence[int | None]) -> list[float]:
    """hit@k for each k of KS, then MRR."""
    n = max(1, len(ranks))
    hits = [sum(1 for r in ranks if r is not None and r <= k) / n for k in KS]
    return [*hits, sum(1.0 / r for r in ranks if r is not None) / n]


def print_table(title: str, rows: dict[str, list[int | None]]) -> None:
    print(f"\n{title}")
    print(f"| method | {' | '.join(f'hit@{k}' for k in KS)} | MRR |")
    print(f"| --- | {' | '.join('---' for _ in KS)} | --- |")
    for name, ranks in rows.items():
        print(f"| {name} | {' | '.join(f'{v:.3f}' for v in scores(ranks))} |")


def report(questions: Sequence[Question], results: dict[str, list[int | None]]) -> None:
    print_table(f"all questions ({len(questions)})", results)
    for category in sorted({q.category for q in questions}):
        picked = [i for i, q in enumerate(questions) if q.category == category]
        print_table(f"{category} ({len(picked)})", {m: [r[i] for i in picked] for m, r in results.items()})


# --- baselines ------------------------------------------------------------------


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def bm25_rankings(questions: Sequence[Question], messages: Sequence[StoredMessage]) -> list[list[Key]]:
    """Plain BM25 over the messages of each question's scope, statistics per scope."""
    by_slug: dict[str, list[int]] = defaultdict(list)
    for i, m in enumerate(messages):
        by_slug[m.slug].append(i)
    doc_tokens = [Counter(tokens(m.content)) for m in messages]
    doc_len = [sum(c.values()) for c in doc_tokens]
    cache: dict[tuple[str, ...], tuple[list[int], dict[str, float], float]] = {}
    out: list[list[Key]] = []
    for q in questions:
        if q.scope not in cache:
            docs = [i for slug in q.scope for i in by_slug.get(slug, [])]
            df: Counter[str] = Counter()
            for i in docs:
                df.update(doc_tokens[i].keys())
            n = len(docs)
            idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
            cache[q.scope] = (docs, idf, sum(doc_len[i] for i in docs) / max(1, n))
        docs, idf, avg = cache[q.scope]
        terms = set(tokens(q.text))
        scored = []
        for i in docs:
            tf = doc_tokens[i]
            s = 0.0
            for t in terms:
                f = tf.get(t, 0)
                if f:
                    s += idf[t] * f * (BM25_K1 + 1) / (f + BM25_K1 * (1 - BM25_B + BM25_B * doc_len[i] / avg))
            if s > 0:
                scored.append((-s, i))
        scored.sort()
        out.append([(messages[i].slug, messages[i].seq) for _, i in scored[:DEPTH]])
    return out


def dense_vectors(embedder: Embedder, texts: Sequence[str], cache: Path) -> tuple[Vectors, list[int]]:
    """Every chunk's fp32 vector and the text each belongs to, kept in ``cache`` between runs."""
    owners: list[int] = []
    pieces: list[str] = []
    for i, text in enumerate(texts):
        for span in embedder.chunk(text):
            owners.append(i)
            pieces.append(text[span.start : span.end])
    if cache.is_file():
        vectors: Vectors = np.load(cache)
        if vectors.shape[0] == len(pieces):
            return vectors, owners
    vectors = embedder.encode(pieces)
    np.save(cache, vectors)
    return vectors, owners


def dense_rankings(
    questions: Sequence[Question],
    messages: Sequence[StoredMessage],
    chunk_vectors: Vectors,
    owners: Sequence[int],
    query_vectors: Vectors,
) -> list[list[Key]]:
    """Exact cosine search over every chunk in scope, a message scored by its best chunk."""
    owner = np.asarray(owners)
    slug_of = np.asarray([messages[i].slug for i in owners])
    out: list[list[Key]] = []
    for q, qv in zip(questions, query_vectors, strict=True):
        rows = np.flatnonzero(np.isin(slug_of, list(q.scope)))
        sims = chunk_vectors[rows] @ qv
        best: dict[int, float] = {}
        for row, sim in zip(owner[rows], sims, strict=True):
            if sim > best.get(int(row), -2.0):
                best[int(row)] = float(sim)
        ranked = sorted(best, key=lambda i: -best[i])[:DEPTH]
        out.append([(messages[i].slug, messages[i].seq) for i in ranked])
    return out


# --- memoryd --------------------------------------------------------------------


def stored_messages(db: Database) -> list[StoredMessage]:
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT c.slug, m.seq, m.role, m.content FROM messages AS m"
            " JOIN conversations AS c ON c.id = m.conversation_id ORDER BY c.slug, m.seq"
        ).fetchall()
    return [StoredMessage(slug, int(seq), role, content) for slug, seq, role, content in rows]


def memoryd_rankings(
    db: Database, embedder: Embedder, questions: Sequence[Question], query_vectors: Vectors, mode: str
) -> list[list[Key]]:
    out: list[list[Key]] = []
    with db.connection() as conn:
        for q, qv in zip(questions, query_vectors, strict=True):
            query = SearchQuery(q.text, qv, embedder.name, embedder.dim)
            filters = SearchFilters(slugs=q.scope, kinds=("message",))
            hits = search_query(conn, query, k=DEPTH, filters=filters, mode=mode)  # type: ignore[arg-type]
            out.append([(h.slug, h.seq) for h in hits if h.seq is not None])
            conn.rollback()  # each question its own transaction, as a caller's would be
    return out


def ranks(questions: Sequence[Question], rankings: Sequence[Sequence[Key]]) -> list[int | None]:
    return [rank_of_first(r, q.relevant) for q, r in zip(questions, rankings, strict=True)]


# BM25 parameters tried for text mode: (k1, b, speaker weight); the first is
# memoryd's (memoryd/bm25.py), a repeat of it is dropped.
BM25_TRIED = tuple(
    dict.fromkeys(
        (
            (bm25.K1, bm25.B, bm25.SPEAKER_WEIGHT),
            (1.2, 0.75, 2.0),
            (0.6, 0.4, 2.0),
            (1.2, 0.4, 2.0),
            (0.9, 0.2, 2.0),
            (0.9, 0.75, 2.0),
            (0.9, 0.4, 0.5),
            (0.9, 0.4, 1.0),
            (0.9, 0.4, 1.5),
            (0.9, 0.4, 2.0),
            (0.9, 0.4, 3.0),
        )
    )
)
TEXT_WEIGHTS_TRIED = (0.5, 0.6, 0.7, 0.75, 0.8, 0.9)


def sweep(db: Database, embedder: Embedder, questions: Sequence[Question], query_vectors: Vectors) -> None:
    """Text mode for other BM25 parameters, and hybrid for other weights of the text list.

    The fusion's weights are tried on the same candidate lists as search_query
    makes (vector 1 - text weight; the dated lists at half their list's).
    """
    from memoryd import search as s

    with db.connection() as conn:
        keys = {
            int(i): (slug, int(seq))
            for i, slug, seq in conn.execute(
                "SELECT m.id, c.slug, m.seq FROM messages AS m JOIN conversations AS c ON c.id = m.conversation_id"
            )
        }
        text_rows: dict[tuple[float, float, float], list[list[Key]]] = {tried: [] for tried in BM25_TRIED}
        per_question: list[dict[str, list[s.Candidate]]] = []
        for q, qv in zip(questions, query_vectors, strict=True):
            query = SearchQuery(q.text, qv, embedder.name, embedder.dim)
            filters = SearchFilters(slugs=q.scope, kinds=("message",))
            words = s.text_query(conn, q.text)
            for tried, rankings in text_rows.items():
                found = s.text_candidates(conn, words, filters, candidates=s.CANDIDATES, ranking=bm25.Bm25(*tried))
                rankings.append([keys[c.ref_id] for c in found])
            lists = {"vector": s.vector_candidates(conn, query, filters, texts=s.CANDIDATES)}
            lists["text"] = s.text_candidates(conn, words, filters, candidates=s.CANDIDATES) if words.selective else []
            lists.update(s._dated_lists(conn, query, words, filters, s.CANDIDATES))
            per_question.append({name: s.normalized(found) for name, found in lists.items()})
            conn.rollback()
    print_table(
        "text mode, BM25 parameters tried (k1, b, speaker weight)",
        {f"k1 {k1}, b {b}, speaker {w}": ranks(questions, rankings) for (k1, b, w), rankings in text_rows.items()},
    )
    rows: dict[str, list[int | None]] = {}
    for text_weight in TEXT_WEIGHTS_TRIED:
        for dated in (False, True):
            vector_weight = round(1 - text_weight, 2)
            weights = {
                **s.FUSION_WEIGHTS,
                "text": text_weight,
                "vector": vector_weight,
                "text_dated": text_weight / 2,
                "vector_dated": vector_weight / 2,
            }
            ranked = []
            for lists in per_question:
                kept = {n: c for n, c in lists.items() if dated or not n.endswith("_dated")}
                ranked.append([keys[f.ref_id] for f in s.fuse(kept, weights=weights) if f.kind == "message"])
            rows[f"text {text_weight}, vector {vector_weight}, dates {'on' if dated else 'off'}"] = ranks(
                questions, ranked
            )
    print_table("hybrid, fusion weights tried (normalised scores)", rows)


def run(data: Path, work: Path, dsn: str | None, with_sweep: bool, speaker_prefix: bool = False) -> None:
    out = work / ("realtalk-speaker-prefix" if speaker_prefix else "realtalk")
    with timed() as t_convert:
        convert(data, out, speaker_prefix=speaker_prefix)
    questions = load_questions(out / "queries.jsonl")
    embedder = Embedder(EmbeddingConfig())
    with database_dsn(work, dsn) as server_dsn, Database(tree_config(out, server_dsn).database) as db:
        config = tree_config(out, server_dsn)
        with timed() as t_ingest:
            Syncer(db, config).reconcile()
        with timed() as t_embed:
            embedded = embed_pending(db, embedder)
        messages = stored_messages(db)
        print(
            f"REALTALK: {len({m.slug for m in messages})} conversations, {len(messages):,} messages,"
            f" {len(questions)} questions; convert {t_convert[0]:.1f} s, ingest {t_ingest[0]:.1f} s,"
            f" embed {t_embed[0]:.1f} s ({embedded.texts:,} texts, precision {embedder.precision})"
        )
        query_vectors = embedder.encode([q.text for q in questions])
        results: dict[str, list[int | None]] = {}
        for mode in MODES:
            with timed() as t_mode:
                results[f"memoryd {mode}"] = ranks(
                    questions, memoryd_rankings(db, embedder, questions, query_vectors, mode)
                )
            print(f"memoryd {mode}: {len(questions)} questions in {t_mode[0]:.1f} s")
        if with_sweep:
            sweep(db, embedder, questions, query_vectors)
    results["plain BM25"] = ranks(questions, bm25_rankings(questions, messages))
    fp32 = Embedder(EmbeddingConfig(precision="fp32"))
    chunk_vectors, owners = dense_vectors(fp32, [m.content for m in messages], work / "dense-fp32.npy")
    fp32_queries = fp32.encode([q.text for q in questions])
    results["exact dense, fp32"] = ranks(
        questions, dense_rankings(questions, messages, chunk_vectors, owners, fp32_queries)
    )
    report(questions, results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the retrieval-bench folder")
    parser.add_argument("--work", type=Path, help="a folder kept between runs (converted data, database, vectors)")
    parser.add_argument("--dsn", help="an existing database instead of an embedded one in --work")
    parser.add_argument("--sweep", action="store_true", help="also print the fusion weights tried")
    parser.add_argument(
        "--speaker-prefix",
        action="store_true",
        help="names written into the content (convert.py --speaker-prefix) instead of a speaker field;"
        " use another --work folder",
    )
    args = parser.parse_args(argv)
    if not (args.data / "convert.py").is_file():
        print(f"retrieval bench skipped: {args.data} is absent (see bench/retrieval.py)")
        return 0
    configure_logging(LogConfig(level="warning"))
    with work_folder(args.work) as work:
        run(args.data, work, args.dsn, args.sweep, args.speaker_prefix)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
