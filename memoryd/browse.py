"""Reading the memory around what a search found: context of hits, conversation windows, recent conversations.

An agent rarely wants one message alone: the turns around it and the
summary that covers it say what it was about.  Every query here takes a
whole list of hits at once (``unnest ... WITH ORDINALITY``), so a search
with context costs three more queries whatever its k.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from typing import Any

import psycopg

from memoryd.results import Context, ConversationInfo, ConversationView, Hit, SummaryRef, Turn
from memoryd.search import SearchHit

# A hit's own text is cut here: a pasted log can be megabytes, and an agent
# reading ten hits should not receive them whole (Memory.conversation does).
HIT_TEXT_CHARS = 4_000
# Each turn or summary shown around a hit is cut here.
CONTEXT_TEXT_CHARS = 1_000
# Turns returned by one conversation call at most; a window asks for the rest.
MAX_TURNS = 1_000
# Turns on each side of ``around`` when no window is given.
DEFAULT_WINDOW = 5

KINDS = ("message", "summary")


def parse_hit_id(hit_id: str) -> tuple[str, int]:
    """``"message:123"`` → ("message", 123); ValueError names what was expected."""
    kind, _, number = hit_id.partition(":")
    if kind not in KINDS or not number.isdigit():
        raise ValueError(f"a hit id is 'message:<number>' or 'summary:<number>', not {hit_id!r}")
    return kind, int(number)


def with_context(conn: psycopg.Connection[Any], found: Sequence[SearchHit], context: int) -> list[Hit]:
    """The search's hits as :class:`Hit` values: whole text, timestamp and ``context`` turns each side."""
    refs = [(h.kind, h.ref_id) for h in found]
    hits = hits_by_ref(conn, refs, context)
    by_ref = {(h.kind, int(h.id.partition(":")[2])): h for h in hits}
    out: list[Hit] = []
    for f in found:
        base = by_ref.get((f.kind, f.ref_id))
        if base is None:  # deleted since the search read it
            continue
        out.append(replace(base, score=f.score, snippet=f.snippet, vector_rank=f.vector_rank, text_rank=f.text_rank))
    return out


def hits_by_ref(conn: psycopg.Connection[Any], refs: Sequence[tuple[str, int]], context: int) -> list[Hit]:
    """Messages and summaries by (kind, id), in that order, with their context; absent rows are left out.

    Score and ranks are those of no search (0, None); the snippet is the start of the text.
    """
    if not refs:
        return []
    rows = conn.execute(
        "SELECT p.n, p.kind, p.ref_id, c.slug, c.title, c.created_date, m.seq, (s.covers->>0)::int, s.level,"
        " m.role, m.ts, left(COALESCE(m.content, s.content), %(cap)s),"
        " length(COALESCE(m.content, s.content)) > %(cap)s, m.speaker, c.source"
        " FROM unnest(%(kinds)s::text[], %(ids)s::bigint[]) WITH ORDINALITY AS p(kind, ref_id, n)"
        " LEFT JOIN messages AS m ON p.kind = 'message' AND m.id = p.ref_id"
        " LEFT JOIN summaries AS s ON p.kind = 'summary' AND s.id = p.ref_id"
        " JOIN conversations AS c ON c.id = COALESCE(m.conversation_id, s.conversation_id)"
        " ORDER BY p.n",
        {"kinds": [k for k, _ in refs], "ids": [i for _, i in refs], "cap": HIT_TEXT_CHARS},
    ).fetchall()
    message_ids = [int(r[2]) for r in rows if r[1] == "message"]
    summary_ids = [int(r[2]) for r in rows if r[1] == "summary"]
    around = _turns_around(conn, message_ids, context) if context > 0 else {}
    covering = _covering_summaries(conn, message_ids) if context > 0 else {}
    covered = _covered_turns(conn, summary_ids, 2 * context + 1) if context > 0 else {}
    hits: list[Hit] = []
    for _, kind, ref_id, slug, title, created, seq, first_covered, level, role, ts, text, cut, speaker, source in rows:
        ref_id = int(ref_id)
        if kind == "message":
            before, after = around.get(ref_id, ((), ()))
            ctx = Context(before=before, after=after, summaries=covering.get(ref_id, ()))
        else:
            ctx = Context(covered=covered.get(ref_id, ()))
        hits.append(
            Hit(
                id=f"{kind}:{ref_id}",
                kind=kind,
                slug=slug,
                title=title,
                date=created,
                seq=seq if kind == "message" else first_covered,
                level=level,
                role=role,
                ts=ts,
                score=0.0,
                text=text,
                snippet=" ".join(text[:240].split()),
                truncated=bool(cut),
                context=ctx,
                speaker=speaker,
                source=source,
            )
        )
    return hits


def _turn(seq: int, role: str, ts: str | None, text: str, cut: bool, speaker: str | None = None) -> Turn:
    return Turn(seq=int(seq), role=role, ts=ts, text=text, truncated=bool(cut), speaker=speaker)


def _turns_around(
    conn: psycopg.Connection[Any], message_ids: Sequence[int], n: int
) -> dict[int, tuple[tuple[Turn, ...], tuple[Turn, ...]]]:
    """For each message, the ``n`` turns before it and the ``n`` after it."""
    if not message_ids:
        return {}
    rows = conn.execute(
        "SELECT h.id, h.seq, m.seq, m.role, m.ts, left(m.content, %(cap)s), length(m.content) > %(cap)s, m.speaker"
        " FROM messages AS h"
        " JOIN messages AS m ON m.conversation_id = h.conversation_id"
        "  AND m.seq BETWEEN h.seq - %(n)s AND h.seq + %(n)s AND m.id <> h.id"
        " WHERE h.id = ANY(%(ids)s) ORDER BY h.id, m.seq",
        {"ids": list(message_ids), "n": n, "cap": CONTEXT_TEXT_CHARS},
    ).fetchall()
    before: dict[int, list[Turn]] = defaultdict(list)
    after: dict[int, list[Turn]] = defaultdict(list)
    for hit_id, hit_seq, seq, role, ts, text, cut, speaker in rows:
        (before if seq < hit_seq else after)[int(hit_id)].append(_turn(seq, role, ts, text, cut, speaker))
    return {i: (tuple(before[i]), tuple(after[i])) for i in set(before) | set(after)}


def _covering_summaries(conn: psycopg.Connection[Any], message_ids: Sequence[int]) -> dict[int, tuple[SummaryRef, ...]]:
    """For each message, the summaries whose ``covers`` include its seq, lowest level first."""
    if not message_ids:
        return {}
    rows = conn.execute(
        "SELECT h.id, s.level, s.key, s.covers, left(s.content, %(cap)s), length(s.content) > %(cap)s"
        " FROM messages AS h"
        " JOIN summaries AS s ON s.conversation_id = h.conversation_id AND s.covers @> to_jsonb(h.seq)"
        " WHERE h.id = ANY(%(ids)s) ORDER BY h.id, s.level, s.key",
        {"ids": list(message_ids), "cap": CONTEXT_TEXT_CHARS},
    ).fetchall()
    out: dict[int, list[SummaryRef]] = defaultdict(list)
    for hit_id, level, key, covers, text, cut in rows:
        out[int(hit_id)].append(_summary_ref(level, key, covers, text, cut))
    return {i: tuple(refs) for i, refs in out.items()}


def _summary_ref(level: int, key: str, covers: Any, text: str, cut: bool) -> SummaryRef:
    return SummaryRef(
        level=int(level), key=key, covers=tuple(int(c) for c in covers or ()), text=text, truncated=bool(cut)
    )


def _covered_turns(conn: psycopg.Connection[Any], summary_ids: Sequence[int], n: int) -> dict[int, tuple[Turn, ...]]:
    """For each summary, the first ``n`` messages it covers."""
    if not summary_ids:
        return {}
    rows = conn.execute(
        "SELECT s.id, m.seq, m.role, m.ts, left(m.content, %(cap)s), length(m.content) > %(cap)s, m.speaker"
        " FROM summaries AS s"
        " CROSS JOIN LATERAL (SELECT m.seq, m.role, m.ts, m.content, m.speaker FROM messages AS m"
        "  WHERE m.conversation_id = s.conversation_id"
        "   AND m.seq = ANY(ARRAY(SELECT jsonb_array_elements_text(s.covers)::int))"
        "  ORDER BY m.seq LIMIT %(n)s) AS m"
        " WHERE s.id = ANY(%(ids)s) ORDER BY s.id, m.seq",
        {"ids": list(summary_ids), "n": n, "cap": CONTEXT_TEXT_CHARS},
    ).fetchall()
    out: dict[int, list[Turn]] = defaultdict(list)
    for summary_id, seq, role, ts, text, cut, speaker in rows:
        out[int(summary_id)].append(_turn(seq, role, ts, text, cut, speaker))
    return {i: tuple(turns) for i, turns in out.items()}


# --- conversations ------------------------------------------------------------

_INFO_COLUMNS = (
    "c.id, c.slug, c.title, c.created_date, c.tags, to_char(c.updated_at AT TIME ZONE 'UTC',"
    ' \'YYYY-MM-DD"T"HH24:MI:SS"Z"\'),'
    " (SELECT count(*) FROM messages AS m WHERE m.conversation_id = c.id),"
    " (SELECT count(*) FROM summaries AS s WHERE s.conversation_id = c.id), c.source"
)


def _info(row: Sequence[Any]) -> ConversationInfo:
    _, slug, title, created, tags, updated, messages, summaries, source = row
    return ConversationInfo(
        slug=slug,
        title=title,
        date=created,
        messages=int(messages),
        summaries=int(summaries),
        tags=tuple(tags or ()),
        updated_at=updated,
        source=source,
    )


class AmbiguousSlug(ValueError):
    """A slug stored by several sources, asked for without naming one."""

    def __init__(self, slug: str, sources: Sequence[str]) -> None:
        super().__init__(
            f"slug {slug!r} exists in several sources ({', '.join(sources)}): pass source= (--source) to choose one"
        )
        self.sources = tuple(sources)


def conversation_view(
    conn: psycopg.Connection[Any],
    slug: str,
    *,
    around: int | None = None,
    window: int | None = None,
    source: str | None = None,
) -> ConversationView | None:
    """A conversation by slug (None if absent): all of it, or ``window`` turns each side of ``around``.

    Without ``around``, ``window`` is the number of turns from the start.
    At most MAX_TURNS turns come back (``truncated`` says when more exist).
    Without ``source``, a slug that several sources hold raises
    :class:`AmbiguousSlug` naming them, rather than picking one: the same
    call answers the same on every machine.
    """
    rows = conn.execute(
        f"SELECT {_INFO_COLUMNS} FROM conversations AS c WHERE c.slug = %s AND (%s::text IS NULL OR c.source = %s)"
        " ORDER BY c.source",
        (slug, source, source),
    ).fetchall()
    if not rows:
        return None
    if len(rows) > 1:
        raise AmbiguousSlug(slug, [r[-1] for r in rows])
    row = rows[0]
    if around is not None:
        width = DEFAULT_WINDOW if window is None else window
        first, last = max(0, around - width), around + width
    else:
        first, last = 0, (window - 1 if window is not None else MAX_TURNS - 1)
    last = min(last, first + MAX_TURNS - 1)
    turns = [
        Turn(seq=int(seq), role=role, ts=ts, text=text, speaker=speaker)
        for seq, role, ts, text, speaker in conn.execute(
            "SELECT seq, role, ts, content, speaker FROM messages WHERE conversation_id = %s AND seq BETWEEN %s AND %s"
            " ORDER BY seq",
            (row[0], first, last),
        )
    ]
    whole = around is None and window is None
    summaries = [
        _summary_ref(level, key, covers, text, False)
        for level, key, covers, text in conn.execute(
            "SELECT s.level, s.key, s.covers, s.content FROM summaries AS s WHERE s.conversation_id = %(id)s"
            " AND (%(whole)s OR EXISTS (SELECT 1 FROM jsonb_array_elements_text(s.covers) AS x(seq)"
            "  WHERE x.seq::int BETWEEN %(first)s AND %(last)s))"
            " ORDER BY s.level, s.key",
            {"id": row[0], "whole": whole, "first": first, "last": last},
        )
    ]
    info = _info(row)
    shown_last = turns[-1].seq if turns else first - 1
    more_after = whole and info.messages > shown_last + 1
    return ConversationView(
        info=info, turns=tuple(turns), summaries=tuple(summaries), first_seq=first, truncated=more_after
    )


def recent_conversations(
    conn: psycopg.Connection[Any], limit: int, since: date | None = None
) -> list[ConversationInfo]:
    """The latest conversations by date (undated ones last), then by last change."""
    rows = conn.execute(
        f"SELECT {_INFO_COLUMNS} FROM conversations AS c"
        " WHERE %(since)s::date IS NULL OR c.created_date >= %(since)s::date"
        " ORDER BY c.created_date DESC NULLS LAST, c.updated_at DESC, c.slug LIMIT %(limit)s",
        {"since": since, "limit": limit},
    ).fetchall()
    return [_info(r) for r in rows]
