"""The vector index: its name, its build, and the expression search must order by to use it."""

from __future__ import annotations

from psycopg import sql

from memoryd import vectors
from memoryd.db import Database


def test_hnsw_index_name_is_stable_identifier() -> None:
    """Model names with slashes map to a fixed, valid index name."""
    name = vectors.hnsw_index_name("sentence-transformers/all-MiniLM-L6-v2")
    assert name == vectors.hnsw_index_name("sentence-transformers/all-MiniLM-L6-v2")
    assert name.startswith("embeddings_hnsw_") and name.replace("_", "").isalnum()


def test_hnsw_build_memory_fits_the_graph_within_bounds() -> None:
    """Enough maintenance_work_mem for the graph (pgvector needed 2.4 kB per 384-dim chunk), within 64 MB..1 GB."""
    assert vectors.hnsw_build_memory(0, 384) == 64 << 20
    assert vectors.hnsw_build_memory(100_000, 384) == 100_000 * 2560
    assert vectors.hnsw_build_memory(10_000_000, 384) <= 1 << 30
    assert vectors.hnsw_build_memory(10_000_000, 384) >= 64 << 20


def test_vector_index_is_built_in_autocommit_mode_without_leaking_its_memory_setting(db: Database) -> None:
    """The build's SET LOCAL needs a transaction: on an autocommit connection too, and the setting ends with it."""
    with db.connection() as conn:
        conn.autocommit = True
        before = conn.execute("SHOW maintenance_work_mem").fetchone()
        vectors.ensure_vector_index(conn, "test-memory", 8)
        after = conn.execute("SHOW maintenance_work_mem").fetchone()
        vectors.ensure_vector_index(conn, "test-memory", 8)  # already there: nothing to do
        indexes = conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE indexname = %s", (vectors.hnsw_index_name("test-memory"),)
        ).fetchone()
    assert indexes == (1,)
    assert before == after


def test_search_distance_is_served_by_the_index(db: Database) -> None:
    """Ordering by vectors.distance under the model's predicate is an index scan of that model's HNSW index."""
    with db.connection() as conn:
        vectors.ensure_vector_index(conn, "test-shared", 8)
        conn.execute("SET LOCAL enable_seqscan = off")
        conn.execute("SET LOCAL enable_bitmapscan = off")  # an empty table: only the order can choose
        plan = conn.execute(
            sql.SQL("EXPLAIN SELECT e.id FROM embeddings AS e WHERE {} ORDER BY {} LIMIT 5").format(
                vectors.model_predicate("test-shared", "e"), vectors.distance(8, sql.Placeholder("q"), "e")
            ),
            {"q": "[1,0,0,0,0,0,0,0]"},
        ).fetchall()
    assert f"Index Scan using {vectors.hnsw_index_name('test-shared')}" in "\n".join(r[0] for r in plan)
