"""Search by meaning, by words, or both fused (the default).

- ``vector``: the query is embedded and matched against the chunks' vectors
  through the model's partial HNSW index; the chunks of one message or
  summary are merged, its best chunk counting.  Score: cosine similarity of
  that chunk (1 is identical).
- ``text``: PostgreSQL full-text search over whole messages and summaries,
  stemmed as both English and French with accents folded (see
  ``sql/002_fulltext.sql``).  Score: Okapi BM25 (memoryd/bm25.py).
- ``hybrid``: both candidate lists, each ``max(CANDIDATES, k)`` texts long,
  fused by a weighted sum of their min-max normalised scores (the best of a
  list 1, its last 0; FUSION_WEIGHTS: text 0.75, vector 0.25), divided by the
  weights of the lists made, so a hit at the top of every list scores 1; the
  rank in each list is kept on the hit.  The vector list finds paraphrases,
  the text list the exact rare word (a code, a surname) that an embedding
  blurs; a query whose words are all common (see ``TEXT_SCAN_LIMIT``) has no
  text list.  Two more kinds of lists join the fusion: when the query names
  days ("on 3 Jan 2024", "last May": memoryd.querydates) and no date filter
  is set, both scans again within those days; and for each list holding
  summaries, the messages they cover, at their summary's score, so a summary
  that matches lifts the turns it was written from.

Filters (source, slug, role, summary level, dates, kind) are applied inside
both scans.  The vector scan has two strategies:

- through the HNSW index, with pgvector's iterative index scans, so a
  filter still returns k results instead of the few that happened to be
  among the first candidates;
- exact: every chunk the filter selects, found through the B-tree indexes,
  sorted by distance.  It is taken when a slug or date filter selects at most
  EXACT_MAX_CHUNKS chunks (a day out of a year: the index would have to walk
  most of its graph to find them, about 200 ms at 200,000 chunks, against a
  few ms), and when the index scan comes back short because it stopped at
  ``hnsw.max_scan_tuples`` before finding k matching chunks (a rare role or
  summary level).

The text scan filters before it limits.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import psycopg
from psycopg import sql

from memoryd import bm25
from memoryd.filters import SearchFilters
from memoryd.querydates import day_ranges
from memoryd.vectors import distance as vector_distance
from memoryd.vectors import model_predicate

if TYPE_CHECKING:
    from memoryd.embed import Embedder

Mode = Literal["vector", "text", "hybrid"]
MODES: tuple[Mode, ...] = ("vector", "text", "hybrid")

SNIPPET_CHARS = 240
# Each candidate list's weight in the fusion: ``weight * normalised score``.
# Chosen on bench/retrieval.py (REALTALK, 726 questions; README "Retrieval
# quality", ``--sweep``).  Scores, not ranks: the text list's BM25 says how
# far its first hit stands above the next, which weighted reciprocal rank
# fusion threw away (its best, text 2 with k = 10, hit@1 0.372 against text
# alone's 0.397).  Text 0.5 / 0.6 / 0.7 / 0.75 / 0.8 / 0.9 (vector the rest):
# hit@1 0.358 / 0.390 / 0.401 / 0.406 / 0.404 / 0.398, hit@10 0.725 / 0.727
# / 0.723 / 0.716 / 0.719 / 0.718.  0.75 is the one at or above both modes at
# every k in every category (0.7: multi-hop hit@1 a question below text),
# with the widest margin over text at hit@1, where a data set with weaker
# vectors would pull hybrid below text first.
# ``*_dated``: the same scans within the days the query names
# (memoryd.querydates), half their list's weight: a preference, not a filter;
# ``*_covered``: the messages that the summaries of a list cover, at their
# summary's score, half its list's weight.
FUSION_WEIGHTS: dict[str, float] = {
    "text": 0.75,
    "vector": 0.25,
    "text_dated": 0.375,
    "vector_dated": 0.125,
    "text_covered": 0.375,
    "vector_covered": 0.125,
}
# The HNSW candidate list (hnsw.ef_search) is never shorter than this.  At
# 200,000 chunks, with the index of vectors.ensure_vector_index, 100 gives a
# recall@10 of 0.99 against exact search in about 4 ms, 40 only 0.97
# (bench/search.py).
MIN_EF_SEARCH = 100
MAX_EF_SEARCH = 1000  # pgvector's limit
# Texts in each candidate list (``max(CANDIDATES, k)``).  The same for every
# k up to it, so a larger k only extends the ranking: with lists sized by k,
# `--k 25` changed the top 10 of 822 of 1,536 real queries against `--k 10`.
# The vector scan starts at twice as many chunks, which costs no more than
# fewer would: the HNSW candidate list is MIN_EF_SEARCH long anyway.
CANDIDATES = 50
# Chunks scanned at most when a few long texts crowd the vector candidates.
MAX_VECTOR_CANDIDATES = 10_000
# A slug or date filter selecting at most this many chunks is searched
# exactly.  Measured at 200,000 chunks (bench/search.py, 2-core CPU): exact
# distances over 10,000 chunks fetched by conversation take about as long as
# an iterative index scan for a filter that keeps 5% of the chunks.
EXACT_MAX_CHUNKS = 10_000
# Rows ranked at most per table by one text query, whatever the words: the
# bound on its cost (BM25 costs about 6 µs a row, 2-core CPU).  Candidates are
# the rows holding the query's rarest words, taken rarest first while their
# rows add up to at most this many (memoryd/bm25.py counts them): a row that
# holds none of them can only win on common words, which say little, and
# ranking every row a common word is in would cost tens of milliseconds.  The
# common words still count in the rank of the rows selected.  A query made of
# common words only selects the rows holding all of them in text mode, and
# has no text list in hybrid mode.
TEXT_SCAN_LIMIT = 1_000
# Of those, the best PRERANK_PER_CANDIDATE times the candidates wanted by
# ``ts_rank`` (about 2 µs a row: how many query words a row holds, no IDF)
# are ranked by BM25 (about 6 µs).  On bench/retrieval.py, where 305 of 726
# questions select more than 100 rows, the figures are the same to the third
# decimal with 2 (100 rows for 50 candidates) as with every row ranked.
PRERANK_PER_CANDIDATE = 2
# Snippets of hits found by words only come from this much of the text.
PASSAGE_CHARS = 20_000
# A snippet in a sentence longer than itself (a text without punctuation)
# starts this many characters before the sentence's first word of the query.
SNIPPET_LEAD_CHARS = 40


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """What one search looks for: the text, and its vector for the vector and hybrid modes."""

    text: str
    vector: np.ndarray[Any, np.dtype[np.float32]] | None = None
    model: str = ""
    dim: int = 0


@dataclass(frozen=True, slots=True)
class SearchHit:
    score: float  # vector: cosine similarity; text: BM25; hybrid: the fused normalised scores, 0 to 1
    kind: str  # "message" | "summary"
    slug: str
    title: str
    created_date: date | None
    role: str | None
    level: int | None
    seq: int | None  # the message's seq; for a summary, the first covered seq
    ref_id: int
    snippet: str
    vector_rank: int | None = None  # 1-based rank in the vector candidates, None if absent
    text_rank: int | None = None  # 1-based rank in the text candidates, None if absent
    source: str = ""  # the conversation's source ([source] name of the machine that stored it)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One message or summary found by one mode, best first."""

    kind: str
    ref_id: int
    score: float
    chunk_start: int | None = None  # the best chunk, for vector candidates
    chunk_end: int | None = None
    rank: int | None = None  # its rank in the list when several share one (messages of one summary)


@dataclass(slots=True)
class Fused:
    """One message or summary in the final ranking, with its rank in each list that holds it."""

    kind: str
    ref_id: int
    score: float = 0.0
    ranks: dict[str, int] = field(default_factory=dict)
    chunk: tuple[int, int] | None = None


def search(
    conn: psycopg.Connection[Any],
    embedder: Embedder | None,
    text: str,
    *,
    k: int = 10,
    filters: SearchFilters | None = None,
    mode: Mode = "hybrid",
) -> list[SearchHit]:
    """The k messages or summaries that best match ``text``; ``embedder`` may be None in text mode."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "text":
        query = SearchQuery(text)
    else:
        if embedder is None:
            raise ValueError(f"{mode} search needs the embedding model")
        query = SearchQuery(text, embedder.encode_queries([text])[0], embedder.name, embedder.dim)
    return search_query(conn, query, k=k, filters=filters, mode=mode)


def search_query(
    conn: psycopg.Connection[Any],
    query: SearchQuery,
    *,
    k: int = 10,
    filters: SearchFilters | None = None,
    mode: Mode = "hybrid",
) -> list[SearchHit]:
    """:func:`search` with the query already embedded (benchmarks time the database part alone)."""
    if k < 1:
        raise ValueError("k must be >= 1")
    filters = filters or SearchFilters()
    candidates = max(CANDIDATES, k)
    lists: dict[str, list[Candidate]] = {}
    words: TextQuery | None = None
    if mode in ("vector", "hybrid"):
        lists["vector"] = vector_candidates(conn, query, filters, texts=candidates)
    if mode in ("text", "hybrid"):
        words = text_query(conn, query.text)
        # Common words only: in hybrid mode, meaning ranks those texts better, and far cheaper.
        lists["text"] = (
            text_candidates(conn, words, filters, candidates=candidates) if mode == "text" or words.selective else []
        )
    if mode == "hybrid":
        if words is not None:
            lists.update(_dated_lists(conn, query, words, filters, candidates))
        lists = {name: normalized(found) for name, found in lists.items()}
        lists.update(_covered_lists(conn, lists, filters))
        fused = fuse(lists)
    else:
        fused = [Fused(c.kind, c.ref_id, c.score, {mode: n}, _chunk_of(c)) for n, c in enumerate(lists[mode], start=1)]
    return _hits(conn, fused[:k], query.text)


def normalized(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The list with its scores min-max scaled to [0, 1]: its best 1, its last 0 (all 1 when they are equal).

    A list's scores are comparable only to each other (a cosine, a BM25 sum),
    so each is scaled within its own list before lists are added.
    """
    if not candidates:
        return []
    high = max(c.score for c in candidates)
    low = min(c.score for c in candidates)
    span = high - low
    return [
        Candidate(c.kind, c.ref_id, (c.score - low) / span if span > 0 else 1.0, c.chunk_start, c.chunk_end, c.rank)
        for c in candidates
    ]


def fuse(lists: dict[str, list[Candidate]], *, weights: dict[str, float] | None = None) -> list[Fused]:
    """The weighted sum of each hit's scores in ``lists`` (already normalized), best first.

    A list's weight comes from ``weights`` (default FUSION_WEIGHTS; 1 for a
    list it does not name); the sum is divided by the weights of the lists
    given, so a hit first in every list scores 1.  Ties go to the hit with
    the better best rank, then to a fixed order, so results never shuffle
    between runs.
    """
    weights = FUSION_WEIGHTS if weights is None else weights
    total = sum(weights.get(name, 1.0) for name, found in lists.items() if found) or 1.0
    merged: dict[tuple[str, int], Fused] = {}
    for name, candidates in lists.items():
        weight = weights.get(name, 1.0) / total
        for n, c in enumerate(candidates, start=1):
            entry = merged.setdefault((c.kind, c.ref_id), Fused(c.kind, c.ref_id))
            entry.score += weight * c.score
            entry.ranks[name] = c.rank or n
            if entry.chunk is None:
                entry.chunk = _chunk_of(c)
    return sorted(merged.values(), key=lambda f: (-f.score, min(f.ranks.values()), f.kind, f.ref_id))


def _dated_lists(
    conn: psycopg.Connection[Any], query: SearchQuery, words: TextQuery, filters: SearchFilters, candidates: int
) -> dict[str, list[Candidate]]:
    """The vector and text candidates again, within the days the query names ("on 3 Jan 2024", "last May").

    A soft preference, not a filter: fused with the unfiltered lists, texts of
    those days (a day either side, see querydates.DAY_MARGIN) rank higher.
    Nothing is added when the query names no day or the caller already
    filters by date.
    """
    if filters.dated:
        return {}
    ranges = day_ranges(query.text)
    if not ranges:
        return {}
    dated = replace(filters, since=ranges[0].widened().first, until=ranges[-1].widened().last)
    lists: dict[str, list[Candidate]] = {}
    if query.vector is not None:
        lists["vector_dated"] = vector_candidates(conn, query, dated, texts=candidates)
    if words.selective:
        lists["text_dated"] = text_candidates(conn, words, dated, candidates=candidates)
    return lists


def _covered_lists(
    conn: psycopg.Connection[Any], lists: dict[str, list[Candidate]], filters: SearchFilters
) -> dict[str, list[Candidate]]:
    """For each list holding summaries, the messages they cover, each at its summary's score and rank.

    So a summary that matches the question lifts the turns it was written
    from, which hold the details.  The covered messages pass the same
    filters (roles, dates) as any candidate; a message covered by several
    summaries keeps its best summary's.
    """
    if not filters.includes_messages:
        return {}
    ranked = {
        name: {c.ref_id: (n, c.score) for n, c in enumerate(found, start=1) if c.kind == "summary"}
        for name, found in lists.items()
        if name in ("vector", "text")
    }
    ids = sorted({i for summaries in ranked.values() for i in summaries})
    if not ids:
        return {}
    params: dict[str, Any] = {"ids": ids}
    conditions: list[sql.Composable] = [sql.SQL("s.id = ANY(%(ids)s)")]
    if filters.roles:
        conditions.append(sql.SQL("m.role = ANY(%(roles)s)"))
        params["roles"] = list(filters.roles)
    if filters.dated:
        conditions.append(
            sql.SQL("COALESCE(m.day, (SELECT c.created_date FROM conversations AS c WHERE c.id = s.conversation_id)) ")
            + _IN_DAY_RANGE
        )
        _date_params(filters, params)
    rows = conn.execute(
        sql.SQL(
            "SELECT s.id, m.id FROM summaries AS s"
            " CROSS JOIN LATERAL jsonb_array_elements_text(s.covers) AS covered(seq)"
            " JOIN messages AS m ON m.conversation_id = s.conversation_id AND m.seq = covered.seq::int"
            " WHERE {} ORDER BY s.id, m.seq"
        ).format(sql.SQL(" AND ").join(conditions)),
        params,
    ).fetchall()
    covers: dict[int, list[int]] = {}
    for summary_id, message_id in rows:
        covers.setdefault(int(summary_id), []).append(int(message_id))
    out: dict[str, list[Candidate]] = {}
    for name, summaries in ranked.items():
        best: dict[int, tuple[int, float]] = {}
        for summary_id, found in summaries.items():
            for message_id in covers.get(summary_id, []):
                best[message_id] = min(found, best.get(message_id, found))
        if best:
            ordered = sorted(best.items(), key=lambda item: (item[1][0], item[0]))
            out[f"{name}_covered"] = [Candidate("message", i, score, rank=rank) for i, (rank, score) in ordered]
    return out


def _chunk_of(c: Candidate) -> tuple[int, int] | None:
    return (c.chunk_start, c.chunk_end) if c.chunk_start is not None and c.chunk_end is not None else None


# --- vector -------------------------------------------------------------------


def _conversation_set(filters: SearchFilters, params: dict[str, Any]) -> sql.Composable | None:
    """The ids of the conversations the slug filters select, as a sub-select (None: every conversation).

    Sources narrow the slugs selected; alone they select nothing here (see
    :func:`_source_condition`).
    """
    if not filters.selects_conversations:
        return None
    params["slugs"] = list(filters.slugs)
    params["slug_prefix"] = filters.slug_prefix
    slugs: sql.Composable = sql.SQL("(slug = ANY(%(slugs)s) OR starts_with(slug, %(slug_prefix)s))")
    if filters.sources:
        params["sources"] = list(filters.sources)
        slugs = sql.SQL("{} AND source = ANY(%(sources)s)").format(slugs)
    return sql.SQL("SELECT id FROM conversations WHERE {}").format(slugs)


def _source_condition(filters: SearchFilters, column: sql.Composable, params: dict[str, Any]) -> sql.Composable:
    """The sources, without slug filters, as a per-row check of the row's conversation: one primary-key lookup.

    Not a list of conversation ids: a source may hold most of them, and a
    scalar array is searched row by row.
    """
    params["sources"] = list(filters.sources)
    return sql.SQL("(SELECT c.source FROM conversations AS c WHERE c.id = {col}) = ANY(%(sources)s)").format(
        col=column
    )


def _conversation_conditions(
    filters: SearchFilters, column: sql.Composable
) -> tuple[list[sql.Composable], dict[str, Any]]:
    """The slug and source filters as a per-row condition on a conversation id column.

    A scalar array, not a join: in the vector scan it stays a filter of the
    HNSW index scan instead of turning into a join that would lose its order.
    """
    params: dict[str, Any] = {}
    selected = _conversation_set(filters, params)
    if selected is None:
        return ([_source_condition(filters, column, params)] if filters.sources else []), params
    return [sql.SQL("{col} = ANY(ARRAY({selected}))").format(col=column, selected=selected)], params


# A day within the --since/--until range (either may be absent).
_IN_DAY_RANGE = sql.SQL(
    "BETWEEN COALESCE(%(since)s::date, '-infinity'::date) AND COALESCE(%(until)s::date, 'infinity'::date)"
)
# A chunk's day: its message's own day, else its conversation's date.
_CHUNK_DAY = sql.SQL(
    "COALESCE((SELECT m.day FROM messages AS m WHERE m.id = e.message_id),"
    " (SELECT c.created_date FROM conversations AS c WHERE c.id = e.conversation_id))"
)
# A chunk's role or summary level, checked row by row: one primary-key lookup each.
_CHUNK_ROLE_IS = sql.SQL("(SELECT m.role FROM messages AS m WHERE m.id = e.message_id) = ANY(%(roles)s)")
_CHUNK_LEVEL_IS = sql.SQL("(SELECT s.level FROM summaries AS s WHERE s.id = e.summary_id) = ANY(%(levels)s)")


def _date_params(filters: SearchFilters, params: dict[str, Any]) -> None:
    params["since"] = filters.since
    params["until"] = filters.until


def _chunk_kind_condition(
    filters: SearchFilters, params: dict[str, Any], role: sql.Composable, level: sql.Composable
) -> sql.Composable | None:
    """Which messages and summaries a chunk may come from (roles, levels, kinds), or None for all.

    A single kind without roles or levels is ``e.ref_type = %(kind)s``; a role
    or level already implies the kind, and saying it again would let the
    planner prefer the (ref_type, ...) B-tree to the HNSW index.
    """
    if filters.roles:
        params["roles"] = list(filters.roles)
    if filters.levels:
        params["levels"] = list(filters.levels)
    parts: list[sql.Composable] = []
    if filters.includes_messages:
        parts.append(role if filters.roles else sql.SQL("e.ref_type = 'message'"))
    if filters.includes_summaries:
        parts.append(level if filters.levels else sql.SQL("e.ref_type = 'summary'"))
    if len(parts) == 2 and not filters.roles and not filters.levels:
        return None
    if len(parts) == 1 and not filters.roles and not filters.levels:
        params["kind"] = "message" if filters.includes_messages else "summary"
        return sql.SQL("e.ref_type = %(kind)s")
    return parts[0] if len(parts) == 1 else sql.SQL("({})").format(sql.SQL(" OR ").join(parts))


def _nearest_query(model: str, dim: int, filters: SearchFilters, *, exact: bool) -> tuple[sql.Composed, dict[str, Any]]:
    """The candidate scan: through the model's partial HNSW index, or ``exact``.

    Through the index, the index predicate and cast are literals (a bind
    parameter cannot prove a partial index applies) and filters are per-row
    conditions of the index scan.  Exact, the filtered chunks are gathered
    first (a materialized CTE: no HNSW order to follow) and then sorted.
    Either way the chunks are merged per message or summary (its closest
    chunk), and re-sorted: iterative scans in ``relaxed_order`` may return
    them slightly out of order.  The last column counts the chunks scanned,
    so the caller can tell a short list from an exhausted one.
    """
    params: dict[str, Any] = {}
    conditions: list[sql.Composable] = [model_predicate(model, "e")]
    if exact:
        conditions.extend(_exact_conditions(filters, params))
    else:
        conversation, extra = _conversation_conditions(filters, sql.SQL("e.conversation_id"))
        conditions.extend(conversation)
        params.update(extra)
        if filters.dated:
            conditions.append(_CHUNK_DAY + sql.SQL(" ") + _IN_DAY_RANGE)
            _date_params(filters, params)
        kind = _chunk_kind_condition(filters, params, _CHUNK_ROLE_IS, _CHUNK_LEVEL_IS)
        if kind is not None:
            conditions.append(kind)
    distance = vector_distance(dim, sql.Placeholder("query"), "e")
    select = sql.SQL(
        "SELECT e.ref_type, COALESCE(e.message_id, e.summary_id) AS ref_id, e.chunk_start, e.chunk_end,"
        " {distance} AS distance FROM embeddings AS e WHERE {conditions}"
    ).format(distance=distance, conditions=sql.SQL(" AND ").join(conditions))
    if exact:
        scan = sql.SQL(
            "matching AS MATERIALIZED ({select}),"
            " candidates AS MATERIALIZED (SELECT * FROM matching ORDER BY distance LIMIT %(candidates)s)"
        ).format(select=select)
    else:
        scan = sql.SQL("candidates AS MATERIALIZED ({select} ORDER BY {distance} LIMIT %(candidates)s)").format(
            select=select, distance=distance
        )
    query = sql.SQL(
        "WITH {scan},"
        " best AS (SELECT DISTINCT ON (ref_type, ref_id) * FROM candidates ORDER BY ref_type, ref_id, distance)"
        " SELECT ref_type, ref_id, 1 - distance, chunk_start, chunk_end, (SELECT count(*) FROM candidates)"
        " FROM best ORDER BY distance, ref_type, ref_id"
    ).format(scan=scan)
    return query, params


def _exact_conditions(filters: SearchFilters, params: dict[str, Any]) -> list[sql.Composable]:
    """The filters as conditions the B-tree indexes of ``embeddings`` can serve.

    Conversations (slugs; for dates, those dated in the range or holding a
    message of a day in it) select chunks by ``conversation_id``.  A role,
    level or day is then a per-row check of the few chunks left; without a
    conversation filter, a role or level selects its messages or summaries
    first, by id.
    """
    conditions = _exact_conversation_conditions(filters, params)
    if conditions:
        role, level = _CHUNK_ROLE_IS, _CHUNK_LEVEL_IS
    else:
        role = sql.SQL("e.message_id = ANY(ARRAY(SELECT m.id FROM messages AS m WHERE m.role = ANY(%(roles)s)))")
        level = sql.SQL("e.summary_id = ANY(ARRAY(SELECT s.id FROM summaries AS s WHERE s.level = ANY(%(levels)s)))")
    if filters.dated:
        conditions.append(_CHUNK_DAY + sql.SQL(" ") + _IN_DAY_RANGE)
    kind = _chunk_kind_condition(filters, params, role, level)
    if kind is not None:
        conditions.append(kind)
    return conditions


def _exact_conversation_conditions(filters: SearchFilters, params: dict[str, Any]) -> list[sql.Composable]:
    """The conversations whose chunks the source, slug and date filters may keep, by ``e.conversation_id``."""
    conditions: list[sql.Composable] = []
    selected = _conversation_set(filters, params)
    if selected is None and filters.sources:
        params["sources"] = list(filters.sources)
        selected = sql.SQL("SELECT id FROM conversations WHERE source = ANY(%(sources)s)")
    if selected is not None:
        conditions.append(sql.SQL("e.conversation_id = ANY(ARRAY({}))").format(selected))
    if filters.dated:
        _date_params(filters, params)
        conditions.append(
            sql.SQL(
                "e.conversation_id = ANY(ARRAY("
                "SELECT c.id FROM conversations AS c WHERE c.created_date {range}"
                " UNION SELECT m.conversation_id FROM messages AS m WHERE m.day {range}))"
            ).format(range=_IN_DAY_RANGE)
        )
    return conditions


def selects_few_chunks(conn: psycopg.Connection[Any], filters: SearchFilters) -> bool:
    """Whether the source, slug and date filters leave at most EXACT_MAX_CHUNKS chunks (counted, up to one more)."""
    params: dict[str, Any] = {"cap": EXACT_MAX_CHUNKS + 1}
    conditions = _exact_conversation_conditions(filters, params)
    if not conditions:
        return False
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM (SELECT FROM embeddings AS e WHERE {} LIMIT %(cap)s) AS n").format(
            sql.SQL(" AND ").join(conditions)
        ),
        params,
    ).fetchone()
    return row is not None and int(row[0]) <= EXACT_MAX_CHUNKS


def _prepare_vector(
    conn: psycopg.Connection[Any], query: SearchQuery, filters: SearchFilters, candidates: int, *, exact: bool
) -> tuple[sql.Composed, dict[str, Any]]:
    if query.vector is None:
        raise ValueError("vector search needs the query's vector")
    if not exact:
        # Settings last until the end of the caller's transaction only.
        conn.execute(
            "SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)",
            (str(min(MAX_EF_SEARCH, max(MIN_EF_SEARCH, candidates))),),
        )
    sql_query, params = _nearest_query(query.model, query.dim, filters, exact=exact)
    params.update(query=query.vector, candidates=candidates)
    return sql_query, params


def _filtered(filters: SearchFilters) -> bool:
    return filters != SearchFilters()


def vector_candidates(
    conn: psycopg.Connection[Any], query: SearchQuery, filters: SearchFilters, *, texts: int
) -> list[Candidate]:
    """The ``texts`` messages and summaries with the closest chunks, closest first.

    Twice as many chunks are scanned; when they merge into fewer texts (one
    long message can fill the list with its chunks) and more chunks exist,
    the scan is repeated four times longer.  A filtered index scan that ends
    short is done again exactly (see the module's docstring).
    """
    exact = selects_few_chunks(conn, filters)
    chunks = 2 * texts
    while True:
        sql_query, params = _prepare_vector(conn, query, filters, chunks, exact=exact)
        rows = conn.execute(sql_query, params).fetchall()
        scanned = int(rows[0][5]) if rows else 0
        if len(rows) < texts and scanned < chunks and not exact and _filtered(filters):
            exact = True  # the index scan may have given up (hnsw.max_scan_tuples): ask exactly
            continue
        if len(rows) >= texts or scanned < chunks or chunks >= MAX_VECTOR_CANDIDATES:
            return [
                Candidate(kind, int(ref_id), float(score), start, end)
                for kind, ref_id, score, start, end, _ in rows[:texts]
            ]
        chunks = min(MAX_VECTOR_CANDIDATES, chunks * 4)


def explain(
    conn: psycopg.Connection[Any], embedder: Embedder, text: str, *, k: int = 10, filters: SearchFilters | None = None
) -> str:
    """The plan of the vector candidate query :func:`search` runs."""
    query = SearchQuery(text, embedder.encode([text])[0], embedder.name, embedder.dim)
    return explain_query(conn, query, k=k, filters=filters)


def explain_query(
    conn: psycopg.Connection[Any], query: SearchQuery, *, k: int = 10, filters: SearchFilters | None = None
) -> str:
    """:func:`explain` with the query already embedded."""
    filters = filters or SearchFilters()
    exact = selects_few_chunks(conn, filters)
    sql_query, params = _prepare_vector(conn, query, filters, 2 * max(CANDIDATES, k), exact=exact)
    rows = conn.execute(sql.SQL("EXPLAIN ") + sql_query, params).fetchall()
    return "\n".join(row[0] for row in rows)


# --- text ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TextQuery:
    """The query's words as the full-text index sees them, with the statistics that weigh them."""

    text: str
    lexemes: tuple[str, ...]  # every lexeme, both stemmings, stop words dropped
    selective: tuple[str, ...]  # the rarest, in at most TEXT_SCAN_LIMIT rows together: they select candidates
    weights: dict[str, Any] = field(default_factory=dict)  # the words' BM25 weights (bm25.score_params)

    @property
    def any_word(self) -> str:
        """The tsquery of any of the words (the ``ts_rank`` before BM25)."""
        return bm25.any_of(self.lexemes)


def text_query(conn: psycopg.Connection[Any], text: str) -> TextQuery:
    """The query's lexemes, as both configurations of sql/002_fulltext.sql reduce them."""
    lexemes, words = bm25.query_lexemes(conn, text)
    if not lexemes:
        return TextQuery(text, (), ())
    stats = bm25.table_stats(conn)
    frequencies = bm25.document_frequencies(conn, stats, bm25.TABLES, lexemes)
    rows = {lex: sum(f[n] for f in frequencies.values()) for n, lex in enumerate(lexemes)}
    selective: list[str] = []
    total = 0.0
    for lex in sorted(lexemes, key=lambda lex: (rows[lex], lex)):
        total += rows[lex]
        if total > TEXT_SCAN_LIMIT:
            break
        selective.append(lex)
    return TextQuery(text, lexemes, tuple(sorted(selective)), bm25.score_params(stats, frequencies, lexemes, words))


def text_candidates(
    conn: psycopg.Connection[Any],
    query: TextQuery,
    filters: SearchFilters,
    *,
    candidates: int,
    ranking: bm25.Bm25 = bm25.DEFAULT,
) -> list[Candidate]:
    """Messages and summaries by BM25 of the query's words (memoryd/bm25.py), best first.

    Rows are selected by the query's selective words (any of them); when all
    its words are common, by all of them together (in English or in French
    stemming).  They are ranked by all the words: at most TEXT_SCAN_LIMIT
    rows of each table are read, the best PRERANK_PER_CANDIDATE times
    ``candidates`` of them by ``ts_rank`` ranked by BM25.
    """
    if not query.lexemes:
        return []
    params: dict[str, Any] = {
        "text": query.text,
        "scan": TEXT_SCAN_LIMIT,
        "candidates": candidates,
        "any_q": query.any_word,
        "prerank": PRERANK_PER_CANDIDATE * candidates,
    }
    if query.selective:
        match = sql.SQL("%(match_q)s::tsquery")
        params["match_q"] = bm25.any_of(query.selective)
    else:
        match = sql.SQL("(plainto_tsquery('memoryd_en', %(text)s) || plainto_tsquery('memoryd_fr', %(text)s))")
    parts: list[sql.Composable] = []
    for part_kind, table in (("message", "messages"), ("summary", "summaries")):
        if not (filters.includes_messages if part_kind == "message" else filters.includes_summaries):
            continue
        alias = sql.Identifier(table[0])
        conditions, extra = _conversation_conditions(filters, sql.SQL("{}.conversation_id").format(alias))
        params.update(extra)
        conditions.insert(0, sql.SQL("{}.tsv @@ {}").format(alias, match))
        if part_kind == "message" and filters.roles:
            conditions.append(sql.SQL("m.role = ANY(%(roles)s)"))
            params["roles"] = list(filters.roles)
        if part_kind == "summary" and filters.levels:
            conditions.append(sql.SQL("s.level = ANY(%(levels)s)"))
            params["levels"] = list(filters.levels)
        if filters.dated:
            conversation_date = sql.SQL(
                "(SELECT c.created_date FROM conversations AS c WHERE c.id = {}.conversation_id)"
            ).format(alias)
            day = (
                sql.SQL("COALESCE(m.day, {})").format(conversation_date)
                if part_kind == "message"
                else conversation_date
            )
            conditions.append(day + sql.SQL(" ") + _IN_DAY_RANGE)
            _date_params(filters, params)
        parts.append(
            sql.SQL(
                "SELECT {kind} AS kind, x.id, {score} AS rank FROM"
                " (SELECT y.id, y.tsv FROM (SELECT {alias}.id, {alias}.tsv FROM {table} AS {alias} WHERE {conditions}"
                " LIMIT %(scan)s) AS y ORDER BY ts_rank(y.tsv, %(any_q)s::tsquery) DESC, y.id LIMIT %(prerank)s) AS x"
            ).format(
                kind=sql.Literal(part_kind),
                score=bm25.score("x", table, ranking),
                alias=alias,
                table=sql.Identifier(table),
                conditions=sql.SQL(" AND ").join(conditions),
            )
        )
    if not parts:
        return []
    params.update(query.weights)
    union = sql.SQL(" UNION ALL ").join(parts)
    statement = sql.SQL("SELECT kind, id, rank FROM ({}) AS t ORDER BY rank DESC, kind, id LIMIT %(candidates)s")
    rows = conn.execute(statement.format(union), params)
    return [Candidate(kind, int(ref_id), float(rank)) for kind, ref_id, rank in rows]


# --- hits ---------------------------------------------------------------------


def _hits(conn: psycopg.Connection[Any], picks: Sequence[Fused], text: str) -> list[SearchHit]:
    """The context of each pick: conversation, role or level, and a snippet.

    A pick found better by meaning shows its best chunk; one found better by
    words, the passage of its text (its first PASSAGE_CHARS) where the words
    are, found by :func:`_snippet`.  PostgreSQL's ``ts_headline`` did that
    before, at about 0.2 ms for a 230-character message (it parses and stems
    every word): half of the snippets' cost at 200,000 chunks, 1.5 ms of a
    hybrid search's p95.
    """
    if not picks:
        return []
    chunks = [_shown_chunk(p) for p in picks]
    rows = conn.execute(
        "SELECT p.n, c.slug, c.title, c.created_date, m.role, s.level, COALESCE(m.seq, (s.covers->>0)::int), c.source,"
        " CASE WHEN p.chunk_start IS NOT NULL"
        "  THEN substr(COALESCE(m.content, s.content), p.chunk_start + 1, p.chunk_end - p.chunk_start)"
        "  ELSE left(COALESCE(m.content, s.content), %(passage)s) END"
        " FROM unnest(%(kinds)s::text[], %(ids)s::bigint[], %(starts)s::int[], %(ends)s::int[])"
        "  WITH ORDINALITY AS p(kind, ref_id, chunk_start, chunk_end, n)"
        " LEFT JOIN messages AS m ON p.kind = 'message' AND m.id = p.ref_id"
        " LEFT JOIN summaries AS s ON p.kind = 'summary' AND s.id = p.ref_id"
        " JOIN conversations AS c ON c.id = COALESCE(m.conversation_id, s.conversation_id)"
        " ORDER BY p.n",
        {
            "passage": PASSAGE_CHARS,
            "kinds": [p.kind for p in picks],
            "ids": [p.ref_id for p in picks],
            "starts": [c[0] if c else None for c in chunks],
            "ends": [c[1] if c else None for c in chunks],
        },
    ).fetchall()
    hits: list[SearchHit] = []
    for n, slug, title, created, role, level, seq, source, passage in rows:
        pick = picks[n - 1]  # a row deleted since the candidates were read is simply absent
        hits.append(
            SearchHit(
                score=pick.score,
                kind=pick.kind,
                slug=slug,
                title=title,
                created_date=created,
                role=role,
                level=level,
                seq=seq,
                ref_id=pick.ref_id,
                snippet=_snippet(passage or "", text),
                vector_rank=pick.ranks.get("vector"),
                text_rank=pick.ranks.get("text"),
                source=source,
            )
        )
    return hits


def _shown_chunk(pick: Fused) -> tuple[int, int] | None:
    """The chunk to show, or None for the passage where the words are: whichever list ranked the pick better."""
    text_rank, vector_rank = pick.ranks.get("text"), pick.ranks.get("vector")
    if text_rank is not None and (vector_rank is None or text_rank < vector_rank):
        return None
    return pick.chunk


_WORD = re.compile(r"\w{3,}")
_SENTENCE_END = re.compile(r"(?:[.!?]\s+|\n\s*\n)(?=\S)")  # and the next one starts


def _snippet(text: str, query: str) -> str:
    """The part of a hit's chunk or passage most likely to show why it matched.

    It starts at the sentence sharing the most word stems (their first five
    letters) with the query, its first sentence when none does, which is
    cheap and usually where the answer is.  In a sentence longer than the
    snippet (a text without punctuation), it starts just before the first
    such word.
    """
    stems = {w[:5] for w in _WORD.findall(query.lower())}
    starts = [0, *(m.end() for m in _SENTENCE_END.finditer(text))]
    found: dict[int, set[str]] = {}  # sentence -> the query's stems in it
    first: dict[int, int] = {}  # sentence -> where the first of them is
    for word in _WORD.finditer(text):  # one pass, whatever the query's length
        stem = word.group()[:5].lower()
        if stem in stems:
            sentence = bisect.bisect_right(starts, word.start()) - 1
            found.setdefault(sentence, set()).add(stem)
            first.setdefault(sentence, word.start())
    best_start = 0
    if found:
        best = max(found, key=lambda n: (len(found[n]), -n))
        best_start = starts[best]
        best_end = starts[best + 1] if best + 1 < len(starts) else len(text)
        at = first[best]
        if best_end - best_start > SNIPPET_CHARS and at - best_start > SNIPPET_LEAD_CHARS:
            lead = text.find(" ", at - SNIPPET_LEAD_CHARS, at)
            best_start = lead + 1 if lead >= 0 else at
    window = text[best_start : best_start + 4 * SNIPPET_CHARS]  # whitespace collapsed below: enough, and no more
    flat = " ".join(window.split())
    cut = len(flat) > SNIPPET_CHARS or best_start + len(window) < len(text)
    prefix = "…" if best_start > 0 else ""
    return prefix + (flat[: SNIPPET_CHARS - 1].rstrip() + "…" if cut else flat)
