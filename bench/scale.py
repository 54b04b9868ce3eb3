"""Scale on paper: per-chunk costs at 20,000, 100,000 and 200,000 chunks, extrapolated to 1M and 10M.

For each size, a fresh database is filled the way bench/search.py fills
one (the same corpus: real sentences encoded by the real model, chunks made
from them; binary COPY; full-text indexes built once after the load), then:

* the model's HNSW index is built by memoryd (``vectors.ensure_vector_index``,
  with the ``maintenance_work_mem`` that ``hnsw_build_memory`` gives it),
  timed, and pgvector's notice that the graph no longer fits in memory is
  recorded; at ``--spill-at`` chunks it is built a second time with
  PostgreSQL's default 64 MB, the baseline that shows what spilling costs;
* sizes: the HNSW index, the embeddings table (heap + TOAST) with its other
  indexes, and the text tables (messages, summaries: text + tsvector) with
  their indexes, each divided by the number of chunks;
* search p50/p95 through memoryd's own path (``search_query``), vector and
  hybrid, k = 10, warm, next to exact vector search (index scans off) on the
  same queries: the baseline.

Sizes and build times are printed per million chunks (a linear
extrapolation: an HNSW build grows a little faster than linearly, about
N log N); search p95 is fitted as a + b·log10(N) through the measured points
(a graph walk visits about log N layers of neighbours) and evaluated at 1M
and 10M, valid only while the index stays in memory.

    .venv/bin/python -m bench.scale [--sizes 20000,100000,200000] [--queries 100] [--cache base.npy]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from bench._common import fresh_database, percentile, server_dsn, timed
from bench.search import Vectors, load, make_corpus, run_queries
from memoryd import vectors as vector_index
from memoryd.config import EmbeddingConfig, LogConfig
from memoryd.db import apply_migrations
from memoryd.embed import Embedder
from memoryd.log import configure_logging
from memoryd.search import SearchQuery
from memoryd.vectors import drop_vector_index, ensure_vector_index, hnsw_build_memory, hnsw_index_name

MILLION = 1_000_000
DEFAULT_MAINTENANCE_WORK_MEM = 64 << 20  # PostgreSQL's default, the spilled baseline


@dataclass
class Point:
    """What one size measured."""

    chunks: int
    build_s: float
    build_memory: int  # bytes of maintenance_work_mem memoryd gave the build
    spilled_after: int | None  # tuples in memory when pgvector said the graph no longer fit
    spill_build_s: float | None  # the same build with 64 MB, when measured
    spill_spilled_after: int | None
    hnsw_bytes: int
    embeddings_bytes: int  # heap + TOAST + other indexes of the embeddings table
    text_bytes: int  # messages + summaries, with their indexes
    exact_ms: list[float]
    vector_ms: list[float]
    hybrid_ms: list[float]


def build_index(conn: psycopg.Connection[Any], model: str, dim: int, *, memory: int | None) -> tuple[float, int | None]:
    """Build the model's HNSW index; seconds, and the tuple count of pgvector's spill notice if it spilled.

    ``memory=None`` lets memoryd choose; otherwise memoryd's ceiling is
    lowered to ``memory`` bytes for this build (the baseline).
    """
    notices: list[str] = []

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        notices.append(diag.message_primary or "")

    drop_vector_index(conn, model)
    conn.commit()
    conn.add_notice_handler(on_notice)
    ceiling = vector_index.HNSW_BUILD_MEMORY_MAX
    if memory is not None:  # memoryd's own build, with its ceiling lowered to ``memory``
        vector_index.HNSW_BUILD_MEMORY_MAX = memory
    try:
        with timed() as took:
            ensure_vector_index(conn, model, dim)
            conn.commit()
    finally:
        vector_index.HNSW_BUILD_MEMORY_MAX = ceiling
        conn.remove_notice_handler(on_notice)
    spilled = next((n for n in (_tuples_in(m) for m in notices) if n is not None), None)
    return took[0], spilled


def _tuples_in(notice: str) -> int | None:
    """pgvector: 'hnsw graph no longer fits into maintenance_work_mem after 117053 tuples'."""
    if "no longer fits" not in notice:
        return None
    digits = [word for word in notice.split() if word.isdigit()]
    return int(digits[0]) if digits else -1


def sizes(conn: psycopg.Connection[Any], model: str) -> tuple[int, int, int]:
    """Bytes of the HNSW index, of the embeddings table with its other indexes, and of the text tables."""
    row = conn.execute(
        "SELECT pg_relation_size(%s::regclass),"
        " pg_total_relation_size('embeddings') - pg_relation_size(%s::regclass),"
        " pg_total_relation_size('messages') + pg_total_relation_size('summaries')",
        (hnsw_index_name(model), hnsw_index_name(model)),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def measure(
    admin: str, texts: list[str], vectors: Vectors, queries: list[SearchQuery], embedder: Embedder, spill: bool
) -> Point:
    """Fill a fresh database with these chunks and measure it (see the module docstring)."""
    chunks = len(texts)
    with fresh_database(admin) as dsn, psycopg.connect(dsn) as conn:
        apply_migrations(conn)
        register_vector(conn)
        gin = [
            row[0]
            for row in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE indexname IN ('messages_tsv', 'summaries_tsv')"
            )
        ]
        conn.execute("DROP INDEX messages_tsv, summaries_tsv")  # built once after the load, as bench.search does
        conn.commit()
        load(conn, texts, vectors, embedder.name, seed=1)
        conn.commit()
        conn.execute("SET maintenance_work_mem = '1GB'")
        for indexdef in gin:
            conn.execute(indexdef)
        conn.execute("RESET maintenance_work_mem")
        conn.commit()
        spill_s = spill_after = None
        if spill:
            spill_s, spill_after = build_index(conn, embedder.name, embedder.dim, memory=DEFAULT_MAINTENANCE_WORK_MEM)
        build_s, spilled = build_index(conn, embedder.name, embedder.dim, memory=None)
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
        hnsw, embeddings, text = sizes(conn, embedder.name)
        for mode in ("vector", "hybrid"):  # warm, as a running daemon's server would be
            run_queries(conn, queries, mode)
        with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as exact_conn:
            register_vector(exact_conn)
            exact_ms, _ = run_queries(exact_conn, queries, "vector", exact=True)
        vector_ms, _ = run_queries(conn, queries, "vector")
        hybrid_ms, _ = run_queries(conn, queries, "hybrid")
    return Point(
        chunks=chunks,
        build_s=build_s,
        build_memory=hnsw_build_memory(chunks, embedder.dim),
        spilled_after=spilled,
        spill_build_s=spill_s,
        spill_spilled_after=spill_after,
        hnsw_bytes=hnsw,
        embeddings_bytes=embeddings,
        text_bytes=text,
        exact_ms=exact_ms,
        vector_ms=vector_ms,
        hybrid_ms=hybrid_ms,
    )


def log_fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares a + b·log10(N) through (N, value) points."""
    xs = np.array([math.log10(n) for n, _ in points])
    ys = np.array([v for _, v in points])
    if len(points) < 2:
        return float(ys[0]), 0.0
    b, a = np.polyfit(xs, ys, 1)
    return float(a), float(b)


def per_million(value: float, chunks: int) -> float:
    return value / chunks * MILLION


def report(points: list[Point], dim: int) -> None:
    mib = 1 << 20
    print("\nmeasured, and per million chunks (linear):")
    for p in points:
        spill = f"spilled after {p.spilled_after} tuples" if p.spilled_after else "fit in memory"
        print(
            f"{p.chunks:>8} chunks: HNSW {p.hnsw_bytes / mib:8.1f} MiB ({p.hnsw_bytes / p.chunks:6.0f} B/chunk,"
            f" {per_million(p.hnsw_bytes, p.chunks) / mib:7.0f} MiB per 1M); embeddings table"
            f" {p.embeddings_bytes / p.chunks:6.0f} B/chunk ({per_million(p.embeddings_bytes, p.chunks) / mib:6.0f}"
            f" MiB per 1M); texts {p.text_bytes / p.chunks:6.0f} B/chunk"
            f" ({per_million(p.text_bytes, p.chunks) / mib:6.0f} MiB per 1M)",
            flush=True,
        )
        print(
            f"{'':>16}build {p.build_s:7.1f} s with maintenance_work_mem {p.build_memory / mib:.0f} MiB ({spill}):"
            f" {per_million(p.build_s, p.chunks) / 60:6.1f} min per 1M"
        )
        if p.spill_build_s is not None:
            spilled = f"spilled after {p.spill_spilled_after} tuples" if p.spill_spilled_after else "fit"
            print(
                f"{'':>16}baseline build with 64 MiB ({spilled}): {p.spill_build_s:7.1f} s,"
                f" {p.spill_build_s / p.build_s:.2f}x the build with enough memory"
            )
        for name, ms in (("vector", p.vector_ms), ("hybrid", p.hybrid_ms)):
            print(
                f"{'':>16}{name:<6} p50 {percentile(ms, 50):7.2f} ms  p95 {percentile(ms, 95):7.2f} ms;"
                f" exact vector search (baseline) p95 {percentile(p.exact_ms, 95):8.2f} ms:"
                f" {percentile(ms, 95) / percentile(p.exact_ms, 95):.3f}x"
            )
    print("\nsearch p95 fitted as a + b*log10(N), valid while the index stays in memory:")
    for name, attr in (("vector", "vector_ms"), ("hybrid", "hybrid_ms")):
        measured = [(p.chunks, percentile(getattr(p, attr), 95)) for p in points]
        a, b = log_fit(measured)
        if b <= 0:  # a p95 that falls as N grows is noise (a busy machine), not a trend to extrapolate
            print(f"  {name:<6} no upward trend measured (noise); largest p95 {max(ms for _, ms in measured):.1f} ms")
            continue
        print(f"  {name:<6} a={a:.2f} b={b:.2f}: 1M {a + b * 6:6.1f} ms, 10M {a + b * 7:6.1f} ms")
    exact = [(p.chunks, percentile(p.exact_ms, 95)) for p in points]
    print("  exact (linear in N): " + ", ".join(f"{per_million(ms, n):.0f} ms per 1M from {n}" for n, ms in exact))
    largest = points[-1]
    for target in (MILLION, 10 * MILLION):
        need = hnsw_build_memory(target, dim)
        print(
            f"at {target:>10,} chunks: HNSW ~{largest.hnsw_bytes / largest.chunks * target / (1 << 30):5.1f} GiB,"
            f" embeddings table ~{largest.embeddings_bytes / largest.chunks * target / (1 << 30):5.1f} GiB,"
            f" texts ~{largest.text_bytes / largest.chunks * target / (1 << 30):5.1f} GiB;"
            f" build ~{largest.build_s / largest.chunks * target / 60:5.0f} min (linear, if it fit);"
            f" memoryd would give the build {need / (1 << 20):.0f} MiB (capped)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20000,100000,200000", help="chunk counts, comma-separated")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--spill-at", type=int, default=100_000, help="also build with 64 MB at this size (0: never)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache", help="keep the encoded sentences in this .npy file between runs")
    args = parser.parse_args()
    configure_logging(LogConfig(level="warning"))
    counts = sorted(int(n) for n in args.sizes.split(","))
    load1, load5, load15 = os.getloadavg()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs,"
        f" load average {load1:.1f} {load5:.1f} {load15:.1f} at start",
        flush=True,
    )
    embedder = Embedder(EmbeddingConfig())
    texts, vectors, queries, _ = make_corpus(
        embedder, counts[-1], args.queries, args.seed, Path(args.cache) if args.cache else None
    )
    points: list[Point] = []
    started = time.perf_counter()
    with server_dsn() as admin:
        with psycopg.connect(admin, autocommit=True) as conn:
            settings = dict(
                conn.execute(
                    "SELECT name, setting || COALESCE(unit, '') FROM pg_settings WHERE name IN"
                    " ('shared_buffers', 'max_parallel_maintenance_workers', 'server_version')"
                ).fetchall()
            )
            version = conn.execute(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
            ).fetchone()
        print(f"server: {settings}, pgvector {version[0] if version else '?'}", flush=True)
        for count in counts:
            point = measure(admin, texts[:count], vectors[:count], queries, embedder, spill=count == args.spill_at)
            points.append(point)
            print(
                f"{count} chunks done after {time.perf_counter() - started:.0f} s;"
                f" load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    report(points, embedder.dim)
    print(f"load average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
