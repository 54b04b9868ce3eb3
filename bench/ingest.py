"""Bulk ingest: 100,000 messages stored with their (precomputed) vectors, vs langchain-postgres.

Both sides store the same texts and the same precomputed 384-dimension
vectors on the same server, without running any model:

- memoryd: ``memoryd ingest`` of the conversation folders (new slugs go in
  with binary COPY, 500 per transaction), then the vectors written the way
  ``memoryd embed`` writes them (claim pending texts, binary COPY), the HNSW
  index built once after the load (what a first bulk load does);
- baseline: ``PGVector.add_embeddings`` of langchain-postgres, in batches of
  1,000 (one call with 100,000 rows would exceed PostgreSQL's 65,535 bind
  parameters), no index (its default).

Also measured: writing the same vectors into a table whose HNSW index
already exists (what a bulk load would cost without deferring the index),
and the floor: one binary COPY of the same texts and vectors into two bare
tables (no index, no full text, no parsing), the least any storing of this
data can cost on this server.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python -m bench.ingest [--messages 100000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import fresh_database, server_dsn, timed, tree_config
from bench.generate import conversation
from memoryd.config import LogConfig
from memoryd.db import Database
from memoryd.log import configure_logging
from memoryd.store import ChunkVector, ClaimCursor, claim_pending, write_embeddings
from memoryd.sync import Syncer
from memoryd.vectors import ensure_vector_index

MODEL = "bench-precomputed"
DIM = 384
PER_CONVERSATION = 20


def write_folders(root: Path, total: int) -> list[str]:
    import random

    rng = random.Random(5)
    texts: list[str] = []
    for n in range(total // PER_CONVERSATION):
        slug, turns = conversation(rng, n, messages=PER_CONVERSATION)
        folder = root / "conversations" / slug
        folder.mkdir(parents=True)
        (folder / "messages.jsonl").write_text(
            "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in turns), encoding="utf-8"
        )
        texts.extend(t["content"] for t in turns)
    return texts


def vector_for(content: str, table: np.ndarray[Any, np.dtype[np.float32]]) -> np.ndarray[Any, np.dtype[np.float32]]:
    return table[hash(content) % len(table)]


def store_vectors(db: Database, table: np.ndarray[Any, np.dtype[np.float32]]) -> int:
    """Give every pending text its precomputed vector, as `memoryd embed` writes them (claims after a cursor)."""
    written = 0
    cursor = ClaimCursor()

    def batch(conn: Any, after: ClaimCursor) -> tuple[int, ClaimCursor]:
        texts = claim_pending(conn, MODEL, 5000, after)
        rows = [ChunkVector(t, 0, 0, len(t.content), vector_for(t.content, table)) for t in texts]
        return write_embeddings(conn, MODEL, rows), after.after(texts)

    while True:
        n, cursor = db.run(batch, cursor)
        if n == 0:
            return written
        written += n


def langchain_load(dsn: str, texts: list[str], table: np.ndarray[Any, np.dtype[np.float32]]) -> None:
    from langchain_core.embeddings import Embeddings
    from langchain_postgres import PGVector
    from psycopg.conninfo import conninfo_to_dict

    class Precomputed(Embeddings):
        """The vectors are given; the model must never be called."""

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            raise AssertionError("not used")

        def embed_query(self, text: str) -> list[float]:
            raise AssertionError("not used")

    params = conninfo_to_dict(dsn)
    url = (
        f"postgresql+psycopg://{params.get('user', 'postgres')}:{params.get('password', '')}@/{params['dbname']}"
        f"?host={params['host']}" + (f"&port={params['port']}" if params.get("port") else "")
    )
    store = PGVector(embeddings=Precomputed(), connection=url, collection_name="bench", embedding_length=DIM)
    for first in range(0, len(texts), 1000):
        chunk = texts[first : first + 1000]
        store.add_embeddings(chunk, [vector_for(t, table).tolist() for t in chunk])


def copy_floor(dsn: str, texts: list[str], table: np.ndarray[Any, np.dtype[np.float32]]) -> float:
    """Seconds for one binary COPY of the texts and their vectors into bare tables: no index, no full text."""
    import psycopg
    from pgvector.psycopg import register_vector

    with psycopg.connect(dsn) as conn:
        register_vector(conn)
        conn.execute(
            "CREATE TABLE floor_texts (id int8, conversation int8, seq int4, content text);"
            f" CREATE TABLE floor_vectors (id int8, vector vector({DIM}))"
        )
        conn.commit()
        with timed() as t, conn.cursor() as cur:
            with cur.copy("COPY floor_texts FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "int8", "int4", "text"])
                for n, text in enumerate(texts):
                    copy.write_row((n, n // PER_CONVERSATION, n % PER_CONVERSATION, text))
            with cur.copy("COPY floor_vectors FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "vector"])
                for n, text in enumerate(texts):
                    copy.write_row((n, vector_for(text, table)))
            conn.commit()
    return t[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    configure_logging(LogConfig(level="warning"))
    rng = np.random.default_rng(0)
    table = rng.standard_normal((4096, DIM)).astype(np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory(prefix="memoryd-bench-") as tmp, server_dsn() as admin:
        root = Path(tmp)
        texts = write_folders(root, args.messages)
        (root / "summaries").mkdir()
        megabytes = sum(len(t.encode()) for t in texts) / 1e6
        with fresh_database(admin) as dsn, fresh_database(admin) as dsn_indexed, fresh_database(admin) as dsn_lc:
            config = tree_config(root, dsn)
            with Database(config.database) as db:
                with timed() as t_store:
                    report = Syncer(db, config).reconcile()
                with timed() as t_vectors:
                    vectors = store_vectors(db, table)
                with timed() as t_index:
                    db.run(ensure_vector_index, MODEL, DIM)
            assert report.wrote == args.messages // PER_CONVERSATION and vectors == len(texts)

            indexed = tree_config(root, dsn_indexed)
            with Database(indexed.database) as db:
                Syncer(db, indexed).reconcile()
                db.run(ensure_vector_index, MODEL, DIM)
                with timed() as t_vectors_indexed:
                    store_vectors(db, table)

            with timed() as t_lc:
                langchain_load(dsn_lc, texts, table)
            t_floor = copy_floor(dsn_lc, texts, table)

    ours = t_store[0] + t_vectors[0]
    n = len(texts)
    print(f"{n} messages ({megabytes:.0f} MB of text) in {n // PER_CONVERSATION} conversations, {DIM}-dim vectors")
    print(
        f"memoryd:   store {t_store[0]:6.1f} s + vectors {t_vectors[0]:6.1f} s = {ours:6.1f} s"
        f"  -> {n / ours:8.0f} messages/s   (+ HNSW index build after the load {t_index[0]:.1f} s)"
    )
    print(
        f"baseline:  langchain-postgres PGVector.add_embeddings {t_lc[0]:6.1f} s  -> {n / t_lc[0]:8.0f} messages/s"
        f"   speed ratio {t_lc[0] / ours:.1f}x"
    )
    print(
        f"floor:     one binary COPY of the same texts and vectors into bare tables {t_floor:6.1f} s"
        f"  -> {n / t_floor:8.0f} messages/s   (langchain-postgres / floor: {t_lc[0] / t_floor:.1f}x)"
    )
    load_then_index = t_vectors[0] + t_index[0]
    print(
        f"vectors into a table whose HNSW index already exists: {t_vectors_indexed[0]:.1f} s"
        f" vs {load_then_index:.1f} s load-then-index  (ratio {t_vectors_indexed[0] / load_then_index:.1f}x)"
    )


if __name__ == "__main__":
    main()
