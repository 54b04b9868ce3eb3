"""Search at 200,000 chunks: latency per mode, and recall@10 of the HNSW index.

Baseline: exact vector search, the same query through the same code with
index scans disabled (a sequential scan computing every distance), on a
connection of its own that never prepares statements (a plan cached by a
prepared statement would keep using the index).  Each
mode's p50/p95 latency is printed with its ratio to the baseline, and
recall@10 of the vector mode is the overlap of its top 10 hits with the
exact search's top 10.  Latency is memoryd's own search path
(``search_query``: the settings, the candidate queries, the fusion and the
snippets) on a warm server, each query its own transaction; encoding the
query with the model is timed apart, since it does not depend on the
database's size.

The data.  Encoding 200,000 real chunks would take about an hour on a
2-core CPU, so the vectors are made from real ones: 4,000 sentences from
bench/generate.py (English and French) are encoded with the real model,
and each chunk is 1 to 4 of them, a sentence and its nearest neighbours
among the 4,000 (a chunk is about one topic), its text their text joined
and its vector the normalised mean of their vectors plus a little Gaussian
noise, as mean pooling over the joined text would roughly give.  So the
vectors have the shape of real embeddings (anisotropic, clustered by topic)
rather than of uniform noise, and every vector is distinct.  Chunks are
grouped into texts of 1 to 4 chunks, 90% messages and 10% summaries, 40
texts to a conversation, and written with binary COPY; the full-text
columns are computed by PostgreSQL as on any insert.  Queries are 200
held-out sentences, encoded with the real model.  Text and hybrid modes
are timed twice: with the sentences as generated (each ends with a number
in parentheses, a rare word matching a few dozen texts), and with that
number removed, so that every word of the query is in thousands of texts
(the worst case for text search).

    .venv/bin/python -m bench.search [--chunks 200000] [--queries 200]
"""

from __future__ import annotations

import argparse
import random
import re
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb

from bench._common import fresh_database, percentile, server_dsn, timed
from bench.generate import sentence
from memoryd.config import EmbeddingConfig, LogConfig
from memoryd.db import apply_migrations
from memoryd.embed import Embedder
from memoryd.log import configure_logging
from memoryd.search import (
    MIN_EF_SEARCH,
    Mode,
    SearchFilters,
    SearchHit,
    SearchQuery,
    explain_query,
    search_query,
    selects_few_chunks,
)
from memoryd.vectors import ensure_vector_index, hnsw_index_name

BASE_SENTENCES = 4_000
NEIGHBOURS = 30
NOISE = 0.015  # per dimension; a unit embedding has about 0.05 per dimension
TEXTS_PER_CONVERSATION = 40
K = 10

Vectors = np.ndarray[Any, np.dtype[np.float32]]


def distinct_sentences(rng: random.Random, count: int, exclude: set[str]) -> list[str]:
    out: list[str] = []
    seen = set(exclude)
    while len(out) < count:
        text = sentence(rng, french=rng.random() < 0.4)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def make_chunks(sentences: list[str], vectors: Vectors, chunks: int, seed: int) -> tuple[list[str], Vectors]:
    """Chunk texts and vectors: a sentence and some of its nearest neighbours, mean-pooled, with noise."""
    rng = np.random.default_rng(seed)
    sims = vectors @ vectors.T
    neighbours = np.argsort(-sims, axis=1)[:, 1 : NEIGHBOURS + 1]
    sizes = rng.choice([1, 2, 3, 4], size=chunks, p=[0.25, 0.35, 0.25, 0.15])
    topics = rng.integers(0, len(sentences), size=chunks)
    texts: list[str] = []
    out = np.empty((chunks, vectors.shape[1]), dtype=np.float32)
    for i in range(chunks):
        picks = [int(topics[i])]
        if sizes[i] > 1:
            picks += [int(j) for j in rng.choice(neighbours[topics[i]], size=sizes[i] - 1, replace=False)]
        texts.append(" ".join(sentences[j] for j in picks))
        out[i] = vectors[picks].mean(axis=0)
    out += np.asarray(rng.normal(0.0, NOISE, size=out.shape), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return texts, out


def bench_source(conv_id: int) -> str:
    """Three machines share the database: "gpu-box" holds 2% of the conversations, "laptop" and "desktop" the rest."""
    if conv_id % 50 == 0:
        return "gpu-box"
    return "laptop" if conv_id % 2 else "desktop"


def load(conn: psycopg.Connection[Any], texts: list[str], vectors: Vectors, model: str, seed: int) -> tuple[int, int]:
    """Write conversations, messages, summaries and embeddings with binary COPY; returns (messages, summaries)."""
    rng = random.Random(seed)
    chunk = 0
    messages = summaries = 0
    rows_conv: list[tuple[Any, ...]] = []
    rows_msg: list[tuple[Any, ...]] = []
    rows_sum: list[tuple[Any, ...]] = []
    rows_emb: list[tuple[Any, ...]] = []
    conv_id = 0
    while chunk < len(texts):
        conv_id += 1
        day = date(2025, 1, 1) + timedelta(days=rng.randint(0, 330))
        seq = 0
        for n in range(TEXTS_PER_CONVERSATION):
            if chunk >= len(texts):
                break
            count = min(len(texts) - chunk, rng.choices([1, 2, 3, 4], weights=[70, 15, 10, 5])[0])
            parts = texts[chunk : chunk + count]
            content = "\n\n".join(parts)
            content_hash = f"h{chunk}"
            is_summary = n % 10 == 9
            if is_summary:
                summaries += 1
                ref = summaries
                rows_sum.append(
                    (ref, conv_id, 1, f"s{n}", Jsonb([max(0, seq - 9)]), content, len(content), content_hash)
                )
            else:
                messages += 1
                ref = messages
                rows_msg.append((ref, conv_id, seq, "user" if seq % 2 == 0 else "assistant", content, content_hash))
                seq += 1
            start = 0
            for c, part in enumerate(parts):
                rows_emb.append(
                    (
                        conv_id,
                        "summary" if is_summary else "message",
                        None if is_summary else ref,
                        ref if is_summary else None,
                        c,
                        start,
                        start + len(part),
                        model,
                        vectors.shape[1],
                        vectors[chunk + c],
                        content_hash,
                    )
                )
                start += len(part) + 2
            chunk += count
        rows_conv.append((conv_id, f"{day.isoformat()}__bench_{conv_id:06d}", f"Bench {conv_id}", day))
    with conn.cursor() as cur:
        with cur.copy(
            "COPY conversations (id, source, slug, title, created_date, total_chars, total_lines, source_path,"
            " source_format, content_hash) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int8", "text", "text", "text", "date", "int8", "int8", "text", "text", "text"])
            for cid, slug, title, day in rows_conv:
                copy.write_row((cid, bench_source(cid), slug, title, day, 0, 0, slug, "jsonl", slug))
        with cur.copy(
            "COPY messages (id, conversation_id, seq, role, content, content_hash) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int8", "int8", "int4", "text", "text", "text"])
            for row in rows_msg:
                copy.write_row(row)
        with cur.copy(
            "COPY summaries (id, conversation_id, level, key, covers, content, char_count, content_hash,"
            " source_path) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int8", "int8", "int4", "text", "jsonb", "text", "int4", "text", "text"])
            for row in rows_sum:
                copy.write_row((*row, "bench"))
        with cur.copy(
            "COPY embeddings (conversation_id, ref_type, message_id, summary_id, chunk, chunk_start,"
            " chunk_end, model, dim, vector, content_hash) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int8", "text", "int8", "int8", "int4", "int4", "int4", "text", "int4", "vector", "text"])
            for row in rows_emb:
                copy.write_row(row)
    return messages, summaries


def run_queries(
    conn: psycopg.Connection[Any],
    queries: list[SearchQuery],
    mode: Mode,
    *,
    exact: bool = False,
    filters: SearchFilters | None = None,
) -> tuple[list[float], list[list[SearchHit]]]:
    """Each query in its own transaction; returns latencies (ms) and hits.

    ``exact`` needs a connection with ``prepare_threshold=None``: a prepared
    statement keeps the plan it was prepared with, index scan included.
    """
    assert not exact or conn.prepare_threshold is None
    latencies: list[float] = []
    results: list[list[SearchHit]] = []
    for query in queries:
        with conn.transaction():
            if exact:
                conn.execute("SET LOCAL enable_indexscan = off")
            started = time.perf_counter()
            hits = search_query(conn, query, k=K, mode=mode, filters=filters)
            latencies.append((time.perf_counter() - started) * 1000)
        results.append(hits)
    return latencies, results


def report(name: str, latencies: list[float], baseline: list[float] | None) -> None:
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    line = f"{name:<34} p50 {p50:8.2f} ms   p95 {p95:8.2f} ms"
    if baseline is not None:
        line += f"   p50 ratio {p50 / percentile(baseline, 50):.3f}x   p95 ratio {p95 / percentile(baseline, 95):.3f}x"
    print(line, flush=True)


def recall(approx: list[list[SearchHit]], exact: list[list[SearchHit]]) -> float:
    found = total = 0
    for a, e in zip(approx, exact, strict=True):
        truth = {(h.kind, h.ref_id) for h in e}
        found += len(truth & {(h.kind, h.ref_id) for h in a})
        total += len(truth)
    return found / total if total else 0.0


def make_corpus(
    embedder: Embedder, chunks: int, queries: int, seed: int, cache: Path | None
) -> tuple[list[str], Vectors, list[SearchQuery], list[float]]:
    """Chunk texts and vectors, and held-out queries with their encoding times in ms (see the module docstring)."""
    rng = random.Random(seed)
    base = distinct_sentences(rng, BASE_SENTENCES, set())
    held_out = distinct_sentences(rng, queries, set(base))
    with timed() as t_encode:
        if cache is not None and cache.exists():
            base_vectors = np.load(cache)
        else:
            base_vectors = embedder.encode(base)
            if cache is not None:
                np.save(cache, base_vectors)
    query_vectors: list[Vectors] = []
    encode_ms: list[float] = []
    for text in held_out:
        started = time.perf_counter()
        query_vectors.append(embedder.encode([text])[0])
        encode_ms.append((time.perf_counter() - started) * 1000)
    texts, vectors = make_chunks(base, base_vectors, chunks, seed)
    print(
        f"data: {len(base)} real sentences encoded in {t_encode[0]:.1f} s,"
        f" {chunks} chunks made from them, {len(held_out)} held-out queries",
        flush=True,
    )
    return (
        texts,
        vectors,
        [SearchQuery(t, v, embedder.name, embedder.dim) for t, v in zip(held_out, query_vectors, strict=True)],
        encode_ms,
    )


def fill_database(
    conn: psycopg.Connection[Any], texts: list[str], vectors: Vectors, embedder: Embedder, seed: int
) -> str:
    """Migrate, COPY the corpus in, build the indexes once, VACUUM ANALYZE; leaves ``conn`` in autocommit mode.

    Returns the line that says what was loaded and how long each step took.
    """
    apply_migrations(conn)
    register_vector(conn)
    gin = [
        row[0]
        for row in conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname IN ('messages_tsv', 'summaries_tsv')")
    ]
    conn.execute("DROP INDEX messages_tsv, summaries_tsv")  # built once after the load, not row by row
    conn.execute("SET maintenance_work_mem = '1GB'")
    conn.commit()
    with timed() as t_load:
        messages, summaries = load(conn, texts, vectors, embedder.name, seed)
        conn.commit()
    with timed() as t_gin:
        for indexdef in gin:
            conn.execute(indexdef)
        conn.commit()
    with timed() as t_hnsw:
        ensure_vector_index(conn, embedder.name, embedder.dim)
        conn.commit()
    # VACUUM cannot run in a transaction, and each query below must be
    # one: `conn.transaction()` in autocommit mode is a real BEGIN/COMMIT.
    conn.autocommit = True
    conn.execute("VACUUM ANALYZE")
    size = conn.execute(
        "SELECT pg_size_pretty(pg_relation_size(%s::regclass))", (hnsw_index_name(embedder.name),)
    ).fetchone()
    return (
        f"load: {messages} messages + {summaries} summaries, {len(texts)} chunks, COPY in {t_load[0]:.1f} s,"
        f" full-text indexes in {t_gin[0]:.1f} s, HNSW index (m=16, ef_construction=128) in {t_hnsw[0]:.1f} s"
        f" ({size[0] if size else '?'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache", type=Path, help="keep the encoded sentences in this .npy file between runs")
    args = parser.parse_args()
    configure_logging(LogConfig(level="warning"))
    embedder = Embedder(EmbeddingConfig())
    texts, vectors, queries, encode_ms = make_corpus(embedder, args.chunks, args.queries, args.seed, args.cache)
    common = [SearchQuery(re.sub(r"\s*\(\d+\)", "", q.text), q.vector, q.model, q.dim) for q in queries]
    with server_dsn() as admin, fresh_database(admin) as dsn, psycopg.connect(dsn) as conn:
        print(fill_database(conn, texts, vectors, embedder, args.seed), flush=True)
        for label, plan_filters in (("", None), (", --source laptop", SearchFilters(sources=("laptop",)))):
            with conn.transaction():
                plan = explain_query(conn, queries[0], k=K, filters=plan_filters)
            uses = f"Index Scan using {hnsw_index_name(embedder.name)}" in plan
            print(f"plan: vector query{label} uses the HNSW index: {uses}", flush=True)
        # Warm the caches with a pass of every mode, as a running daemon's server would be.
        for mode in ("vector", "text", "hybrid"):
            run_queries(conn, queries, mode)
        exact_conn = psycopg.connect(dsn, autocommit=True, prepare_threshold=None)
        register_vector(exact_conn)
        exact_ms, exact_hits = run_queries(exact_conn, queries, "vector", exact=True)
        vector_ms, vector_hits = run_queries(conn, queries, "vector")
        text_ms, _ = run_queries(conn, queries, "text")
        hybrid_ms, _ = run_queries(conn, queries, "hybrid")
        text_common_ms, _ = run_queries(conn, common, "text")
        hybrid_common_ms, _ = run_queries(conn, common, "hybrid")
        filtered = [
            run_filtered(conn, exact_conn, queries, name, filters)
            for name, filters in (
                ("one month (--since/--until)", SearchFilters(since=date(2025, 6, 1), until=date(2025, 6, 30))),
                ("one day (--since/--until)", SearchFilters(since=date(2025, 6, 2), until=date(2025, 6, 2))),
                ("summaries (--level 1)", SearchFilters(levels=(1,))),
                ("one source of three (--source laptop)", SearchFilters(sources=("laptop",))),
                ("a small source (--source gpu-box)", SearchFilters(sources=("gpu-box",))),
            )
        ]
        exact_conn.close()
    print(f"k = {K}, hnsw.ef_search = {MIN_EF_SEARCH}, {len(queries)} queries each, warm:")
    report("exact vector search (baseline)", exact_ms, None)
    report("vector (HNSW)", vector_ms, exact_ms)
    report("text", text_ms, exact_ms)
    report("hybrid", hybrid_ms, exact_ms)
    report("text, common words only", text_common_ms, exact_ms)
    report("hybrid, common words only", hybrid_common_ms, exact_ms)
    for result in filtered:
        print(
            f"filtered to {result.name}, {result.share:.1%} of the chunks"
            f" ({'exact' if result.exact else 'HNSW with iterative scans'}):"
        )
        report("exact vector search (baseline)", result.exact_ms, None)
        report("vector", result.vector_ms, result.exact_ms)
        report("hybrid", result.hybrid_ms, result.exact_ms)
        print(
            f"    recall@{K} {recall(result.vector_hits, result.exact_hits):.3f};"
            f" searches returning fewer than {K} hits: {sum(len(h) < K for h in result.vector_hits)}"
            f" (exact: {sum(len(h) < K for h in result.exact_hits)})"
        )
    report("query encoding (model, apart)", encode_ms, None)
    print(f"recall@{K} of vector search (HNSW) against exact search: {recall(vector_hits, exact_hits):.3f}")


@dataclass
class Filtered:
    name: str
    share: float  # of the chunks the filter keeps
    exact: bool  # whether memoryd searches it exactly (search.selects_few_chunks)
    exact_ms: list[float]
    exact_hits: list[list[SearchHit]]
    vector_ms: list[float]
    vector_hits: list[list[SearchHit]]
    hybrid_ms: list[float]


def run_filtered(
    conn: psycopg.Connection[Any],
    exact_conn: psycopg.Connection[Any],
    queries: list[SearchQuery],
    name: str,
    filters: SearchFilters,
) -> Filtered:
    """One filter: exact baseline, vector and hybrid, after a warm-up pass."""
    row = conn.execute(
        "SELECT avg((c.created_date BETWEEN COALESCE(%(since)s, '-infinity'::date)"
        " AND COALESCE(%(until)s, 'infinity'::date)"
        " AND (%(level)s::int IS NULL OR s.level IS NOT DISTINCT FROM %(level)s)"
        " AND (cardinality(%(sources)s::text[]) = 0 OR c.source = ANY(%(sources)s)))::int)"
        " FROM embeddings AS e JOIN conversations AS c ON c.id = e.conversation_id"
        " LEFT JOIN summaries AS s ON s.id = e.summary_id",
        {
            "since": filters.since,
            "until": filters.until,
            "level": filters.levels[0] if filters.levels else None,
            "sources": list(filters.sources),
        },
    ).fetchone()
    with conn.transaction():
        exact = selects_few_chunks(conn, filters)
    run_queries(conn, queries, "vector", filters=filters)
    exact_ms, exact_hits = run_queries(exact_conn, queries, "vector", exact=True, filters=filters)
    vector_ms, vector_hits = run_queries(conn, queries, "vector", filters=filters)
    hybrid_ms, _ = run_queries(conn, queries, "hybrid", filters=filters)
    share = float(row[0]) if row and row[0] is not None else 0.0
    return Filtered(name, share, exact, exact_ms, exact_hits, vector_ms, vector_hits, hybrid_ms)


if __name__ == "__main__":
    main()
