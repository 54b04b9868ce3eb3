"""Search by meaning: the query is embedded and matched against the HNSW index.

Filters (slug, role, summary level, dates) are applied inside the index scan,
with pgvector's iterative scans, so a selective filter still returns k
results instead of the few that happened to be among the first candidates.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

import psycopg
from psycopg import sql

from daemon.embed import Embedder

SNIPPET_CHARS = 240


@dataclass(frozen=True, slots=True)
class SearchFilters:
    slugs: tuple[str, ...] = ()
    role: str | None = None
    level: int | None = None
    since: date | None = None
    until: date | None = None
    kind: str | None = None  # "message" | "summary" | None for both


@dataclass(frozen=True, slots=True)
class SearchHit:
    score: float  # cosine similarity, 1 is identical
    kind: str  # "message" | "summary"
    slug: str
    title: str
    created_date: date | None
    role: str | None
    level: int | None
    seq: int | None  # the message's seq; for a summary, the first covered seq
    ref_id: int
    snippet: str

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_date"] = self.created_date.isoformat() if self.created_date else None
        return data


def _nearest_query(model: str, dim: int, filters: SearchFilters) -> tuple[sql.Composed, dict[str, Any]]:
    """The candidate scan, shaped so the planner uses the model's partial HNSW index.

    The index predicate and cast are literals (a bind parameter cannot prove a
    partial index applies); filters are scalar sub-selects, which stay
    per-row filters of the index scan instead of turning into joins that
    would lose its ordering.
    """
    conditions: list[sql.Composable] = [sql.SQL("e.model = {}").format(sql.Literal(model))]
    params: dict[str, Any] = {}
    if filters.slugs:
        conditions.append(
            sql.SQL("e.conversation_id = ANY(ARRAY(SELECT id FROM conversations WHERE slug = ANY(%(slugs)s)))")
        )
        params["slugs"] = list(filters.slugs)
    kind = filters.kind
    if filters.role is not None:
        kind = "message"
        conditions.append(sql.SQL("(SELECT m.role FROM messages AS m WHERE m.id = e.message_id) = %(role)s"))
        params["role"] = filters.role
    if filters.level is not None:
        kind = "summary"
        conditions.append(sql.SQL("(SELECT s.level FROM summaries AS s WHERE s.id = e.summary_id) = %(level)s"))
        params["level"] = filters.level
    if kind is not None:
        conditions.append(sql.SQL("e.ref_type = %(kind)s"))
        params["kind"] = kind
    if filters.since is not None:
        conditions.append(
            sql.SQL("(SELECT c.created_date FROM conversations AS c WHERE c.id = e.conversation_id) >= %(since)s")
        )
        params["since"] = filters.since
    if filters.until is not None:
        conditions.append(
            sql.SQL("(SELECT c.created_date FROM conversations AS c WHERE c.id = e.conversation_id) <= %(until)s")
        )
        params["until"] = filters.until
    distance = sql.SQL("(e.vector::vector({dim})) <=> %(query)s::vector({dim})").format(dim=sql.Literal(dim))
    query = sql.SQL(
        "WITH candidates AS ("
        " SELECT e.ref_type, e.message_id, e.summary_id, e.conversation_id, e.chunk_start, e.chunk_end,"
        " {distance} AS distance FROM embeddings AS e WHERE {conditions}"
        " ORDER BY {distance} LIMIT %(candidates)s),"
        " best AS (SELECT DISTINCT ON (ref_type, COALESCE(message_id, summary_id)) * FROM candidates"
        " ORDER BY ref_type, COALESCE(message_id, summary_id), distance)"
        " SELECT 1 - b.distance, b.ref_type, c.slug, c.title, c.created_date, m.role, s.level,"
        " COALESCE(m.seq, (s.covers->>0)::int), COALESCE(b.message_id, b.summary_id),"
        " substr(COALESCE(m.content, s.content), b.chunk_start + 1, b.chunk_end - b.chunk_start)"
        " FROM best AS b JOIN conversations AS c ON c.id = b.conversation_id"
        " LEFT JOIN messages AS m ON m.id = b.message_id LEFT JOIN summaries AS s ON s.id = b.summary_id"
        " ORDER BY b.distance LIMIT %(k)s"
    ).format(distance=distance, conditions=sql.SQL(" AND ").join(conditions))
    return query, params


def search(
    conn: psycopg.Connection[Any],
    embedder: Embedder,
    text: str,
    *,
    k: int = 10,
    filters: SearchFilters | None = None,
) -> list[SearchHit]:
    """The k messages or summaries closest in meaning to ``text``."""
    query, params = _prepare(conn, embedder, text, k, filters or SearchFilters())
    rows = conn.execute(query, params).fetchall()
    return [
        SearchHit(
            score=float(score),
            kind=kind,
            slug=slug,
            title=title,
            created_date=created,
            role=role,
            level=level,
            seq=seq,
            ref_id=int(ref_id),
            snippet=_snippet(chunk_text, text),
        )
        for score, kind, slug, title, created, role, level, seq, ref_id, chunk_text in rows
    ]


def explain(
    conn: psycopg.Connection[Any], embedder: Embedder, text: str, *, k: int = 10, filters: SearchFilters | None = None
) -> str:
    """The plan of exactly the query :func:`search` runs."""
    query, params = _prepare(conn, embedder, text, k, filters or SearchFilters())
    rows = conn.execute(sql.SQL("EXPLAIN ") + query, params).fetchall()
    return "\n".join(row[0] for row in rows)


def _prepare(
    conn: psycopg.Connection[Any], embedder: Embedder, text: str, k: int, filters: SearchFilters
) -> tuple[sql.Composed, dict[str, Any]]:
    if k < 1:
        raise ValueError("k must be >= 1")
    vector = embedder.encode([text])[0]
    candidates = max(40, k * 4)
    # Settings last until the end of the caller's transaction only.
    conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(min(1000, candidates)),))
    conn.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
    query, params = _nearest_query(embedder.name, embedder.dim, filters)
    params.update(query=vector, candidates=candidates, k=k)
    return query, params


_WORD = re.compile(r"\w{3,}")
_SENTENCE_START = re.compile(r"(?:^|(?<=[.!?])\s+|\n\s*\n)(?=\S)")


def _snippet(chunk: str, query: str) -> str:
    """The part of the matched chunk most likely to show why it matched.

    A chunk is up to a few hundred tokens; the snippet starts at its sentence
    sharing the most word stems with the query (its first sentence when none
    does), which is cheap and usually where the answer is.
    """
    stems = {w[:5] for w in _WORD.findall(query.lower())}
    best_start, best_score = 0, 0
    starts = [m.start() for m in _SENTENCE_START.finditer(chunk)] or [0]
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(chunk)
        score = len(stems & {w[:5] for w in _WORD.findall(chunk[start:end].lower())})
        if score > best_score:
            best_start, best_score = start, score
    flat = " ".join(chunk[best_start:].split())
    prefix = "…" if best_start > 0 else ""
    return prefix + (flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1].rstrip() + "…")
