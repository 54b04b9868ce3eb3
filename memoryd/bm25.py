"""Okapi BM25 over the full-text index: how well a message or summary matches the query's words.

PostgreSQL's ``ts_rank`` counts every query word alike: "went" weighs as
much as "Mexico", so a turn repeating common words outranks the one naming
the rare thing asked about.  BM25 weighs each word by its inverse document
frequency (IDF) and saturates repeated words.  Measured on bench/retrieval.py
(REALTALK, 726 questions; README "Retrieval quality"): text mode hit@1 /
@10 0.295 / 0.591 with ``ts_rank``, 0.397 / 0.689 with BM25; hybrid 0.322 /
0.656 before, 0.398 / 0.712 after.

What is counted, from the generated ``tsv`` columns (sql/006): a lexeme's
term frequency is its positions of weight A (the content), a text's length
is its number of distinct lexemes (``length(tsv)``, kept in the tsvector
header, so no text is read twice), and a name of weight D (the message's
speaker) that the query names adds SPEAKER_WEIGHT times its IDF once.  Each
word of the query is stemmed in English and in French, and counts once, by
the better of its two lexemes (:func:`word_numbers`): summing both weighed
"Kate" ('kat', 'kate') twice and "Elise" ('elis') once; counted once, hybrid
hit@5 0.635 -> 0.653, hit@10 0.712 -> 0.723 (text weighing 0.7).

Statistics, per table (messages and summaries are ranked in one list, each
by its own table's statistics):

- rows and mean length: exact while a table is small (under
  EXACT_STATS_ROWS rows), else the planner's row count and the mean length of
  a repeatable sample, kept STATS_TTL_S per database;
- document frequency of a query word: the planner's most-common-element
  estimate when the word is one (ANALYZE keeps them), else counted through
  the GIN index, at most DF_COUNT_CAP rows (a word absent from those
  statistics is rarer than that, unless they are stale).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

# k1 (saturation of a repeated word) and b (how much a longer text is
# penalised), tried with `bench.retrieval --sweep` (text mode, REALTALK):
# hit@1 / @10 0.399 / 0.694 with these (Anserini's defaults), 0.380 / 0.683
# with the textbook 1.2 / 0.75, whose length penalty sinks the long turn that
# tells the story below a short one that repeats a word; b 0.2: 0.406 /
# 0.693, k1 0.6 or 1.2: within 0.005.
K1 = 0.9
B = 0.4
# A speaker the query names adds this times the name's IDF, as much as two
# words of the content: "What did Kate say about Mexico?" prefers Kate's
# turns about Mexico.  0.5 / 1 / 1.5 / 2 / 3: hit@10 0.682 / 0.690 / 0.694 /
# 0.694 / 0.694, hit@1 0.388 / 0.394 / 0.393 / 0.399 / 0.399.
SPEAKER_WEIGHT = 2.0
TABLES = ("messages", "summaries")
STATS_TTL_S = 300.0
# Read exactly on every search below this many rows: 0.3 ms at 1,000, 0.9 ms
# at 5,000 (bench/retrieval.py's database).  Above, the planner's row count
# (kept by autovacuum's ANALYZE) is off by at most a few percent, or by the
# rows of a bulk load until autovacuum next runs: IDF moves with log N.
EXACT_STATS_ROWS = 1_000
SAMPLE_ROWS = 10_000
DF_COUNT_CAP = 2_000


@dataclass(frozen=True, slots=True)
class Bm25:
    """The ranking's parameters (benchmarks try others)."""

    k1: float = K1
    b: float = B
    speaker: float = SPEAKER_WEIGHT


DEFAULT = Bm25()


@dataclass(frozen=True, slots=True)
class TableStats:
    rows: float
    mean_length: float
    estimated_rows: dict[str, float]  # lexeme -> rows holding it, from pg_stats (empty while the table is small)

    @property
    def exact(self) -> bool:
        return self.rows < EXACT_STATS_ROWS


# Each table's lexemes in the planner's most-common-element statistics of its
# tsvector column (kept by ANALYZE and autovacuum), with the rows estimated to
# hold them.  The frequencies array ends with three more (minimum, maximum,
# null frequency): unnested beside the shorter lexemes array they pair with NULL.
_ESTIMATES_SQL = """
SELECT u.elem, u.freq * greatest(c.reltuples, 0)
FROM pg_stats AS st
JOIN pg_class AS c ON c.oid = format('%%I.%%I', st.schemaname, st.tablename)::regclass
CROSS JOIN LATERAL unnest(st.most_common_elems::text::text[], st.most_common_elem_freqs) AS u(elem, freq)
WHERE st.schemaname = current_schema() AND st.tablename = %(table)s AND st.attname = 'tsv' AND u.elem IS NOT NULL
"""
_stats_cache: dict[tuple[str, ...], tuple[float, TableStats]] = {}


def _read_small(conn: psycopg.Connection[Any], tables: Sequence[str]) -> dict[str, TableStats]:
    """Exact statistics of ``tables``, in one statement reading at most EXACT_STATS_ROWS rows of each.

    A table with more rows is left out, for :func:`_read_large`.
    """
    parts = [
        sql.SQL(
            "SELECT {name}, count(*), avg(n) FROM (SELECT length(tsv) AS n FROM {table} LIMIT %(cap)s) AS {alias}"
        ).format(name=sql.Literal(table), table=sql.Identifier(table), alias=sql.Identifier(f"{table}_rows"))
        for table in tables
    ]
    rows = conn.execute(sql.SQL(" UNION ALL ").join(parts), {"cap": EXACT_STATS_ROWS}).fetchall()
    return {
        str(table): TableStats(float(n), float(mean or 0.0), {}) for table, n, mean in rows if n < EXACT_STATS_ROWS
    }


def _read_large(conn: psycopg.Connection[Any], table: str) -> TableStats:
    """The planner's row count, the mean length of a repeatable sample and the common lexemes' estimates."""
    row = conn.execute("SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = to_regclass(%s)", (table,)).fetchone()
    planned = max(float(row[0]) if row else 0.0, EXACT_STATS_ROWS)  # the planner may not have seen it grow yet
    percent = min(100.0, 100.0 * SAMPLE_ROWS / planned)
    sampled = conn.execute(
        sql.SQL("SELECT avg(length(tsv)) FROM {} TABLESAMPLE SYSTEM (%s) REPEATABLE (0)").format(sql.Identifier(table)),
        (percent,),
    ).fetchone()
    mean = float(sampled[0]) if sampled and sampled[0] is not None else 0.0
    estimated = {str(lexeme): float(n) for lexeme, n in conn.execute(_ESTIMATES_SQL, {"table": table})}
    return TableStats(planned, mean, estimated)


def table_stats(conn: psycopg.Connection[Any]) -> dict[str, TableStats]:
    """Rows, mean length and common lexemes of messages and summaries; see the module's docstring."""
    info = conn.info
    database = (info.host, str(info.port), info.dbname, info.user)
    now = time.monotonic()
    stats: dict[str, TableStats] = {}
    for table in TABLES:
        cached = _stats_cache.get((*database, table))
        if cached is not None and cached[0] > now:
            stats[table] = cached[1]
    missing = [table for table in TABLES if table not in stats]
    if missing:
        stats.update(_read_small(conn, missing))
    for table in missing:
        if table not in stats:  # a small table changes fast and is read again next time; a large one is kept
            stats[table] = _read_large(conn, table)
            _stats_cache[(*database, table)] = (now + STATS_TTL_S, stats[table])
    return {table: stats[table] for table in TABLES}


# The query's words stemmed both ways (as the tsv columns are, sql/002 and
# 006), each lexeme with the positions of the words it stems.
_QUERY_LEXEMES_SQL = """
SELECT u.lexeme, u.positions FROM unnest(to_tsvector('memoryd_en', %(text)s)) AS u
UNION ALL
SELECT u.lexeme, u.positions FROM unnest(to_tsvector('memoryd_fr', %(text)s)) AS u
"""


def query_lexemes(conn: psycopg.Connection[Any], text: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The lexemes of ``text`` (stop words dropped, sorted) and the query word each stems (:func:`word_numbers`)."""
    numbers = word_numbers((str(lex), positions) for lex, positions in conn.execute(_QUERY_LEXEMES_SQL, {"text": text}))
    lexemes = tuple(sorted(numbers))
    return lexemes, tuple(numbers[lex] for lex in lexemes)


def word_numbers(stemmed: Iterable[tuple[str, Sequence[int]]]) -> dict[str, int]:
    """Each lexeme's word: lexemes stemmed from a word at the same position share a number.

    Every word is stemmed in English and in French: "skiing" gives 'ski' and
    'skiing', "era" gives 'era' twice.  Counting each lexeme would weigh a
    word whose two stems differ twice, by chance of spelling ("Kate": 'kat'
    and 'kate'); a word counts once, by its best lexeme.  A lexeme stemmed
    from two words joins them ("like" and "liked").
    """
    parent: dict[str, str] = {}

    def root(lex: str) -> str:
        while parent[lex] != lex:
            parent[lex] = parent[parent[lex]]
            lex = parent[lex]
        return lex

    at: dict[int, str] = {}
    for lex, positions in stemmed:
        parent.setdefault(lex, lex)
        for position in positions:
            other = at.setdefault(position, lex)
            parent[root(lex)] = root(other)
    roots = sorted({root(lex) for lex in parent})
    number = {r: n for n, r in enumerate(roots, start=1)}
    return {lex: number[root(lex)] for lex in parent}


def any_of(lexemes: Sequence[str]) -> str:
    """A tsquery matching any of ``lexemes``, taken as they are (no second normalisation)."""
    return " | ".join("'" + lex.replace("\\", "\\\\").replace("'", "''") + "'" for lex in lexemes)


def _idf(stats: TableStats, df: float) -> float:
    n = max(stats.rows, df)
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


def document_frequencies(
    conn: psycopg.Connection[Any], stats: dict[str, TableStats], tables: Sequence[str], lexemes: Sequence[str]
) -> dict[str, list[float]]:
    """For each table, the rows holding each lexeme: estimated when pg_stats lists it, else counted.

    One statement counts, through the GIN indexes, the lexemes missing from
    the estimates of any of ``tables``, at most DF_COUNT_CAP rows each where
    a table is large.
    """
    missing = [lex for lex in lexemes if any(lex not in stats[table].estimated_rows for table in tables)]
    counted: dict[str, dict[str, float]] = {table: {} for table in tables}
    if missing:
        columns = [
            sql.SQL(
                "(SELECT count(*) FROM (SELECT FROM {table} WHERE tsv @@ q.query::tsquery LIMIT {cap}) AS {alias})"
            ).format(
                table=sql.Identifier(table),
                cap=sql.Literal(None if stats[table].exact else DF_COUNT_CAP),
                alias=sql.Identifier(f"{table}_hits"),
            )
            for table in tables
        ]
        rows = conn.execute(
            sql.SQL("SELECT {} FROM unnest(%(queries)s::text[]) WITH ORDINALITY AS q(query, n) ORDER BY q.n").format(
                sql.SQL(", ").join(columns)
            ),
            {"queries": [any_of([lex]) for lex in missing]},
        ).fetchall()
        for lex, row in zip(missing, rows, strict=True):
            for table, n in zip(tables, row, strict=True):
                counted[table][lex] = float(n)
    return {
        table: [stats[table].estimated_rows.get(lex, counted[table].get(lex, 0.0)) for lex in lexemes]
        for table in tables
    }


@functools.lru_cache(maxsize=16)
def score(alias: str, table: str, params: Bm25) -> sql.SQL:
    """The BM25 score of the row ``alias`` (its ``tsv``) for the query words, rendered once per arguments.

    Reads the parameters ``lexemes`` (text[]), ``words`` (int[], the query
    word each lexeme stems), ``speaker_q`` (any of them at weight D),
    ``idf_<table>`` (float8[], in the order of ``lexemes``) and
    ``mean_<table>``.  Each query word counts once, by its best-scoring
    lexeme (see :func:`word_numbers`); grouping them costs about a fifth
    more than a plain sum, and one aggregate over all the rows' lexemes
    instead of one per row was slower still.  Only the query's lexemes are
    unnested (marked B by ``setweight``, kept by ``ts_filter``): unnesting a
    whole tsvector cost four times ``ts_rank``, this about twice.  A message naming a speaker the
    query names has its content (A) and speaker (D) lexemes filtered apart,
    so a name said in the content counts as content; other rows, and
    summaries (no speaker), skip that filter.  Composing it took 0.1 ms a
    search, so it is rendered to one SQL string and kept.
    """
    idf = sql.SQL("({idf}::float8[])[array_position(%(lexemes)s::text[], u.lexeme)]").format(
        idf=sql.Placeholder(f"idf_{table}")
    )
    word = sql.SQL("(%(words)s::int[])[array_position(%(lexemes)s::text[], u.lexeme)]")
    tsv = sql.SQL("{alias}.tsv").format(alias=sql.Identifier(alias))
    words = sql.SQL("%(lexemes)s::text[]")

    def content(vector: sql.Composable) -> sql.Composed:
        return sql.SQL(
            "(SELECT COALESCE(sum(w.best), 0) FROM (SELECT max({idf} * cardinality(u.positions) * {k1_plus_1}"
            " / (cardinality(u.positions) + {k1} * (1 - {b} + {b} * length({tsv}) / {mean}))) AS best"
            " FROM unnest(ts_filter(setweight({vector}, 'b', {words}), '{{b}}')) AS u GROUP BY {word}) AS w)"
        ).format(
            word=word,
            idf=idf,
            k1=sql.Literal(params.k1),
            k1_plus_1=sql.Literal(params.k1 + 1),
            b=sql.Literal(params.b),
            tsv=tsv,
            mean=sql.Placeholder(f"mean_{table}"),
            vector=vector,
            words=words,
        )

    if table != "messages":
        return sql.SQL(content(tsv).as_string())
    speaker = sql.SQL(
        "(SELECT COALESCE(sum(w.best), 0) FROM (SELECT max({idf}) AS best"
        " FROM unnest(ts_filter(setweight(ts_filter({tsv}, '{{d}}'), 'c', {words}), '{{c}}')) AS u"
        " GROUP BY {word}) AS w)"
    ).format(idf=idf, tsv=tsv, words=words, word=word)
    scored = sql.SQL(
        "(CASE WHEN {tsv} @@ %(speaker_q)s::tsquery THEN {named} + {weight} * {speaker} ELSE {plain} END)"
    ).format(
        tsv=tsv,
        named=content(sql.SQL("ts_filter({tsv}, '{{a}}')").format(tsv=tsv)),
        weight=sql.Literal(params.speaker),
        speaker=speaker,
        plain=content(tsv),
    )
    return sql.SQL(scored.as_string())


def score_params(
    stats: dict[str, TableStats],
    frequencies: dict[str, list[float]],
    lexemes: Sequence[str],
    words: Sequence[int],
) -> dict[str, Any]:
    """The parameters :func:`score` reads, from :func:`document_frequencies` of ``lexemes``.

    ``words`` numbers the query word of each lexeme (:func:`word_numbers`).
    IDF is ``ln(1 + (N - df + 0.5) / (df + 0.5))``, N the table's rows.
    """
    params: dict[str, Any] = {
        "lexemes": list(lexemes),
        "words": list(words),
        "speaker_q": " | ".join(f"{any_of([lex])}:D" for lex in lexemes),
    }
    for table, table_frequencies in frequencies.items():
        params[f"idf_{table}"] = [_idf(stats[table], df) for df in table_frequencies]
        params[f"mean_{table}"] = max(1.0, stats[table].mean_length)
    return params
