"""The one owner of how vectors are indexed and compared.

The model's partial HNSW index is built on an expression,
``(vector::vector(dim))`` with ``vector_cosine_ops``, restricted to
``model = '<name>'``.  PostgreSQL uses that index for a query only when the
query orders by the very same expression with the matching operator, and the
model appears as a literal the planner can prove the partial predicate from.
When two copies of that text drift (a cast written differently, another
operator), the planner silently falls back to a sequential scan: so the index
DDL and the distance expression search orders by are both written here, and
nowhere else.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import psycopg
from psycopg import sql

# The operator of the index's opclass (vector_cosine_ops): cosine distance, 1 - cosine similarity.
DISTANCE_OPERATOR = "<=>"
INDEX_OPCLASS = "vector_cosine_ops"
# ef_construction = 128 (pgvector's default is 64): at 200,000 chunks the
# default graph gave a recall@10 of 0.94 against exact search, this one 0.99,
# for about 1.5 times the build time (bench/search.py).
INDEX_M = 16
INDEX_EF_CONSTRUCTION = 128


def hnsw_index_name(model: str) -> str:
    """A stable, valid identifier for a model's index (model names hold / and -)."""
    return "embeddings_hnsw_" + hashlib.sha256(model.encode()).hexdigest()[:12]


def indexed_vector(dim: int, alias: str | None = None) -> sql.Composed:
    """The expression the HNSW index is built on: the column cast to its model's dimension."""
    column: sql.Composable = sql.Identifier(alias, "vector") if alias else sql.Identifier("vector")
    return sql.SQL("({column}::vector({dim}))").format(column=column, dim=sql.Literal(dim))


def distance(dim: int, query: sql.Composable, alias: str | None = None) -> sql.Composed:
    """The cosine distance between a stored vector and ``query``, as the HNSW index can order by it."""
    return sql.SQL("{vector} {op} {query}::vector({dim})").format(
        vector=indexed_vector(dim, alias), op=sql.SQL(DISTANCE_OPERATOR), query=query, dim=sql.Literal(dim)
    )


def model_predicate(model: str, alias: str | None = None) -> sql.Composed:
    """The partial index's predicate; a literal, since a bind parameter cannot prove the index applies."""
    column: sql.Composable = sql.Identifier(alias, "model") if alias else sql.Identifier("model")
    return sql.SQL("{column} = {model}").format(column=column, model=sql.Literal(model))


def ensure_vector_index(conn: psycopg.Connection[Any], model: str, dim: int) -> None:
    """Create the model's partial HNSW cosine index if it does not exist yet.

    DDL takes no bind parameters, so the model name and dimension are quoted
    as literals by psycopg's ``sql`` module, never formatted into the string.
    The build gets the memory its graph needs (see ``hnsw_build_memory``).
    """
    name = hnsw_index_name(model)
    if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone() != (None,):
        return
    with conn.transaction():  # SET LOCAL and the lock hold until its end, in autocommit mode too
        # Two workers starting at once would both find no index and both create it: the second
        # CREATE INDEX IF NOT EXISTS then fails on pg_class's unique key.  One at a time, looking again.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))
        if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone() != (None,):
            return
        row = conn.execute("SELECT count(*) FROM embeddings WHERE model = %s", (model,)).fetchone()
        conn.execute(
            "SELECT set_config('maintenance_work_mem', %s, true)",
            (f"{hnsw_build_memory(int(row[0]) if row else 0, dim) // 1024}kB",),
        )
        conn.execute(
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {name} ON embeddings USING hnsw ({vector} {opclass})"
                " WITH (m = {m}, ef_construction = {ef}) WHERE {predicate}"
            ).format(
                name=sql.Identifier(name),
                vector=indexed_vector(dim),
                opclass=sql.SQL(INDEX_OPCLASS),
                m=sql.Literal(INDEX_M),
                ef=sql.Literal(INDEX_EF_CONSTRUCTION),
                predicate=model_predicate(model),
            )
        )


# The memory an HNSW build may take, at least and at most.  pgvector builds
# the graph in maintenance_work_mem (PostgreSQL's default: 64 MB) and, once
# it no longer fits, goes on on disk, several times slower; a graph with
# m = 16 takes about its vectors plus 1 kB per chunk.  At most an eighth of
# this machine's memory (the embedded server's, or a proxy for a remote one)
# and 1 GB.
HNSW_BUILD_MEMORY_MIN = 64 << 20
HNSW_BUILD_MEMORY_MAX = 1 << 30


def hnsw_build_memory(chunks: int, dim: int) -> int:
    """Bytes of maintenance_work_mem for building the index over ``chunks`` vectors of ``dim``."""
    try:
        eighth = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 8
    except (AttributeError, OSError, ValueError):
        eighth = HNSW_BUILD_MEMORY_MAX
    ceiling = max(HNSW_BUILD_MEMORY_MIN, min(HNSW_BUILD_MEMORY_MAX, eighth))
    return min(ceiling, max(HNSW_BUILD_MEMORY_MIN, chunks * (dim * 4 + 1024)))


def drop_vector_index(conn: psycopg.Connection[Any], model: str) -> None:
    conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(hnsw_index_name(model))))
