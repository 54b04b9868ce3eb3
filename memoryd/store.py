"""Every write to the database, and the reads that decide them.

Each function takes a connection whose transaction the caller owns: ``sync``
stores one slug per transaction, so a slug is either fully stored or not at
all, and a retry after a failure starts from a clean state.  Unchanged
content is never rewritten: rows keep their ids (and so their embeddings)
unless their content changed.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from memoryd.errors import ParseError
from memoryd.recipe import RECIPE, STALE_RECIPE
from memoryd.recipe import input_hash as recipe_input_hash
from memoryd.records import Conversation, Message, Summary


@dataclass
class SlugChanges:
    """What storing one slug did, for logs and tests."""

    conversation: str = "absent"  # inserted | updated | unchanged | deleted | kept | absent | failed
    messages_inserted: int = 0
    messages_deleted: int = 0
    messages_moved: int = 0
    messages_updated: int = 0
    summaries_inserted: int = 0
    summaries_deleted: int = 0
    summaries_updated: int = 0
    summaries_waiting: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def wrote(self) -> bool:
        return self.conversation in ("inserted", "updated", "deleted") or any(
            (
                self.messages_inserted,
                self.messages_deleted,
                self.messages_moved,
                self.messages_updated,
                self.summaries_inserted,
                self.summaries_deleted,
                self.summaries_updated,
            )
        )


def _slug_lock_key(source: str, slug: str) -> int:
    """One lock per (source, slug): the same slug of two sources is two conversations."""
    return int.from_bytes(hashlib.sha256(f"{source}\0{slug}".encode()).digest()[:8], "big", signed=True)


def lock_slug(conn: psycopg.Connection[Any], source: str, slug: str) -> None:
    """Serialise every writer of one slug of one source (daemon, one-shot ingest) until commit."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_slug_lock_key(source, slug),))


@dataclass(frozen=True, slots=True)
class NewSlug:
    """A slug seen for the first time, parsed without any problem: bulk-insertable."""

    conversation: Conversation
    summaries: list[Summary]
    conversation_fp: str | None
    summaries_fp: str | None


def insert_new_slugs(conn: psycopg.Connection[Any], source: str, items: Sequence[NewSlug]) -> list[str]:
    """Insert many never-seen slugs with binary COPY: the first load of a large tree.

    Locks every slug first (in a fixed order, so two writers cannot deadlock),
    then skips any that another writer stored meanwhile; those are returned
    absent from the result and go through the per-slug path.  Conversation
    ids are reserved from the identity sequence so that messages and
    summaries can be copied in the same pass.
    """
    if not items:
        return []
    keys = sorted({_slug_lock_key(source, item.conversation.slug) for item in items})
    conn.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k ORDER BY k", (keys,))
    existing = {
        row[0]
        for row in conn.execute(
            "SELECT slug FROM conversations WHERE source = %(source)s AND slug = ANY(%(s)s)"
            " UNION SELECT slug FROM folder_state WHERE source = %(source)s AND slug = ANY(%(s)s)",
            {"source": source, "s": [item.conversation.slug for item in items]},
        )
    }
    fresh = [item for item in items if item.conversation.slug not in existing]
    if not fresh:
        return []
    ids = [
        row[0]
        for row in conn.execute(
            "SELECT nextval(pg_get_serial_sequence('conversations', 'id')) FROM generate_series(1, %s)", (len(fresh),)
        )
    ]
    with conn.cursor() as cur:
        # COPY writes identity columns as given (like OVERRIDING SYSTEM VALUE).
        with cur.copy(
            "COPY conversations (id, source, slug, title, created_date, tags, total_chars, total_lines, source_path,"
            " source_format, content_hash) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int8", "text", "text", "text", "date", "text[]", "int8", "int8", "text", "text", "text"])
            for conv_id, item in zip(ids, fresh, strict=True):
                c = item.conversation
                copy.write_row(
                    (
                        conv_id,
                        source,
                        c.slug,
                        c.title,
                        c.created_date,
                        list(c.tags),
                        c.total_chars,
                        c.total_lines,
                        str(c.source_path),
                        c.source_format,
                        c.source_hash,
                    )
                )
        _copy_messages(
            cur, ((cid, m) for cid, item in zip(ids, fresh, strict=True) for m in item.conversation.messages)
        )
        _copy_summaries(cur, ((cid, s) for cid, item in zip(ids, fresh, strict=True) for s in item.summaries))
        with cur.copy(
            "COPY folder_state (source, slug, conversation_fingerprint, summaries_fingerprint)"
            " FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["text", "text", "text", "text"])
            for item in fresh:
                copy.write_row((source, item.conversation.slug, item.conversation_fp, item.summaries_fp))
    return [item.conversation.slug for item in fresh]


# --- conversations and messages -------------------------------------------


def upsert_conversation(
    conn: psycopg.Connection[Any], source: str, conv: Conversation, changes: SlugChanges, *, recheck: bool = False
) -> int:
    """Insert or update the conversation row and diff its messages.

    Messages of a conversation whose files did not change are not compared,
    unless ``recheck`` (``ingest --force``): then rows changed behind
    memoryd's back, as ``memoryd verify`` reports them, are repaired too.
    """
    row = conn.execute(
        "SELECT id, content_hash, source_path FROM conversations WHERE source = %s AND slug = %s FOR UPDATE",
        (source, conv.slug),
    ).fetchone()
    values = (
        conv.title,
        conv.created_date,
        list(conv.tags),
        conv.total_chars,
        conv.total_lines,
        str(conv.source_path),
        conv.source_format,
        conv.source_hash,
    )
    if row is None:
        (conv_id,) = _fetch_one(
            conn,
            "INSERT INTO conversations (title, created_date, tags, total_chars, total_lines,"
            " source_path, source_format, content_hash, slug, source)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (*values, conv.slug, source),
        )
        changes.conversation = "inserted"
    else:
        conv_id, stored_hash, stored_path = row
        if stored_hash == conv.source_hash and stored_path == str(conv.source_path):
            changes.conversation = "unchanged"
            if recheck:
                _sync_messages(conn, int(conv_id), conv.messages, changes)
            return int(conv_id)
        conn.execute(
            "UPDATE conversations SET title = %s, created_date = %s, tags = %s, total_chars = %s,"
            " total_lines = %s, source_path = %s, source_format = %s, content_hash = %s, updated_at = now()"
            " WHERE id = %s",
            (*values, conv_id),
        )
        changes.conversation = "updated"
    _sync_messages(conn, int(conv_id), conv.messages, changes)
    return int(conv_id)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    seq: int
    content_hash: str
    role: str
    ts: str | None
    speaker: str | None = None


@dataclass
class MessagePlan:
    """How to turn the stored messages into the parsed ones with the fewest writes."""

    delete: list[int] = field(default_factory=list)
    update: list[tuple[int, Message]] = field(default_factory=list)  # id -> new seq/role/ts/speaker
    moved: int = 0
    insert: list[Message] = field(default_factory=list)


def plan_messages(stored: Sequence[StoredMessage], parsed: Sequence[Message]) -> MessagePlan:
    """Match parsed messages to stored rows: same seq and content first, then same content elsewhere.

    A row matched by content keeps its id, so an insertion early in a
    transcript moves the later rows instead of re-creating (and re-embedding)
    them.
    """
    plan = MessagePlan()
    by_seq = {row.seq: row for row in stored}
    used: set[int] = set()
    unmatched: list[Message] = []
    for msg in parsed:
        row = by_seq.get(msg.seq)
        if row is not None and row.content_hash == msg.content_hash:
            used.add(row.id)
            if (row.role, row.ts, row.speaker) != (msg.role, msg.ts, msg.speaker):
                plan.update.append((row.id, msg))
        else:
            unmatched.append(msg)
    spare: dict[str, list[StoredMessage]] = defaultdict(list)
    for row in stored:
        if row.id not in used:
            spare[row.content_hash].append(row)
    for msg in unmatched:
        candidates = spare.get(msg.content_hash)
        if candidates:
            row = candidates.pop(0)
            used.add(row.id)
            plan.update.append((row.id, msg))
            plan.moved += 1
        else:
            plan.insert.append(msg)
    plan.delete = [row.id for row in stored if row.id not in used]
    return plan


def _sync_messages(
    conn: psycopg.Connection[Any], conv_id: int, messages: Sequence[Message], changes: SlugChanges
) -> None:
    stored = [
        StoredMessage(*row)
        for row in conn.execute(
            "SELECT id, seq, content_hash, role, ts, speaker FROM messages WHERE conversation_id = %s", (conv_id,)
        )
    ]
    plan = plan_messages(stored, messages)
    if plan.delete:
        conn.execute("DELETE FROM messages WHERE id = ANY(%s)", (plan.delete,))
    if plan.update:
        conn.execute(
            "UPDATE messages AS m SET seq = u.seq, role = u.role, ts = u.ts, speaker = u.speaker"
            " FROM unnest(%s::bigint[], %s::int[], %s::text[], %s::text[], %s::text[]) AS u(id, seq, role, ts, speaker)"
            " WHERE m.id = u.id",
            (
                [row_id for row_id, _ in plan.update],
                [m.seq for _, m in plan.update],
                [m.role for _, m in plan.update],
                [m.ts for _, m in plan.update],
                [m.speaker for _, m in plan.update],
            ),
        )
        _speakers_changed(conn, stored, plan.update)
    if plan.insert:
        with conn.cursor() as cur:
            _copy_messages(cur, ((conv_id, m) for m in plan.insert))
    changes.messages_deleted += len(plan.delete)
    changes.messages_inserted += len(plan.insert)
    changes.messages_moved += plan.moved
    changes.messages_updated += len(plan.update) - plan.moved


def _speakers_changed(
    conn: psycopg.Connection[Any], stored: Sequence[StoredMessage], update: Sequence[tuple[int, Message]]
) -> None:
    """Mark the vectors of messages whose speaker changed as of no recipe, so they are embedded again.

    Their encoded input (memoryd.recipe) changed while their content did
    not; the old vectors keep serving search until the new ones replace them.
    """
    before = {row.id: row.speaker for row in stored}
    changed = [row_id for row_id, m in update if before.get(row_id) != m.speaker]
    if changed:
        conn.execute(
            "UPDATE embeddings SET recipe = %s WHERE message_id = ANY(%s) AND recipe <> %s",
            (STALE_RECIPE, changed, STALE_RECIPE),
        )


def _copy_messages(cur: psycopg.Cursor[Any], rows: Iterable[tuple[int, Message]]) -> None:
    """Binary COPY of new messages: the one way messages are inserted."""
    with cur.copy(
        "COPY messages (conversation_id, seq, role, ts, content, content_hash, speaker) FROM STDIN WITH (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["int8", "int4", "text", "text", "text", "text", "text"])
        for conv_id, m in rows:
            copy.write_row((conv_id, m.seq, m.role, m.ts, m.content, m.content_hash, m.speaker))


def _copy_summaries(cur: psycopg.Cursor[Any], rows: Iterable[tuple[int, Summary]]) -> None:
    """Binary COPY of new summaries: the one way summaries are inserted."""
    with cur.copy(
        "COPY summaries (conversation_id, level, key, covers, content, char_count, topics, content_hash,"
        " source_path) FROM STDIN WITH (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["int8", "int4", "text", "jsonb", "text", "int4", "text[]", "text", "text"])
        for conv_id, s in rows:
            copy.write_row(
                (
                    conv_id,
                    s.level,
                    s.key,
                    Jsonb(list(s.covers)),
                    s.content,
                    len(s.content),
                    list(s.topics),
                    s.content_hash,
                    str(s.source_path),
                )
            )


def conversation_id(conn: psycopg.Connection[Any], source: str, slug: str) -> int | None:
    row = conn.execute("SELECT id FROM conversations WHERE source = %s AND slug = %s", (source, slug)).fetchone()
    return int(row[0]) if row else None


def delete_conversation(conn: psycopg.Connection[Any], source: str, slug: str) -> bool:
    """Delete a conversation of ``source``; messages, summaries and embeddings go with it (ON DELETE CASCADE)."""
    return conn.execute("DELETE FROM conversations WHERE source = %s AND slug = %s", (source, slug)).rowcount > 0


# --- summaries -------------------------------------------------------------


def sync_summaries(
    conn: psycopg.Connection[Any],
    conv_id: int,
    parsed: Mapping[Path, list[Summary] | ParseError],
    changes: SlugChanges,
) -> None:
    """Make the conversation's summaries match the summary files.

    Summaries from a file that failed to parse are kept as they were: bad
    input never removes what was stored before.
    """
    failed_paths = {str(p) for p, result in parsed.items() if isinstance(result, ParseError)}
    wanted: dict[tuple[int, str], Summary] = {}
    for result in parsed.values():
        if not isinstance(result, ParseError):
            for parsed_summary in result:
                wanted[(parsed_summary.level, parsed_summary.key)] = parsed_summary
    stored = conn.execute(
        "SELECT id, level, key, content_hash, covers, topics, source_path FROM summaries WHERE conversation_id = %s",
        (conv_id,),
    ).fetchall()
    delete: list[int] = []
    seen: set[tuple[int, str]] = set()
    for row_id, level, key, stored_hash, covers, topics, source_path in stored:
        summary = wanted.get((level, key))
        if summary is None:
            if source_path not in failed_paths:
                delete.append(row_id)
            continue
        if summary.content_hash != stored_hash:
            delete.append(row_id)  # re-inserted below with a new id, so its embeddings go
            continue
        seen.add((level, key))
        if (list(covers), list(topics), source_path) != (
            list(summary.covers),
            list(summary.topics),
            str(summary.source_path),
        ):
            conn.execute(
                "UPDATE summaries SET covers = %s, topics = %s, source_path = %s WHERE id = %s",
                (Jsonb(list(summary.covers)), list(summary.topics), str(summary.source_path), row_id),
            )
            changes.summaries_updated += 1
    if delete:
        conn.execute("DELETE FROM summaries WHERE id = ANY(%s)", (delete,))
        changes.summaries_deleted += len(delete)
    inserts = [s for ident, s in wanted.items() if ident not in seen]
    if inserts:
        with conn.cursor() as cur:
            _copy_summaries(cur, ((conv_id, summary) for summary in inserts))
        changes.summaries_inserted += len(inserts)


# --- folder state and errors ------------------------------------------------


def folder_states(conn: psycopg.Connection[Any], source: str) -> dict[str, tuple[str | None, str | None]]:
    """Fingerprints of every slug's folders of ``source`` at its last sync."""
    rows = conn.execute(
        "SELECT slug, conversation_fingerprint, summaries_fingerprint FROM folder_state WHERE source = %s", (source,)
    )
    return {slug: (conv_fp, sum_fp) for slug, conv_fp, sum_fp in rows}


IN_PROGRESS = "in-progress:"


def in_progress_fingerprint(fingerprint: str | None) -> str:
    """A folder state that no disk fingerprint equals: the next reconcile syncs the slug again.

    Marks a slug stored while its transcript was still being written;
    ``memoryd status`` counts them.
    """
    return IN_PROGRESS + (fingerprint or "")


def record_folder_state(
    conn: psycopg.Connection[Any], source: str, slug: str, conversation_fp: str | None, summaries_fp: str | None
) -> None:
    """Remember what the folders looked like; forget slugs that have no folder left."""
    if conversation_fp is None and summaries_fp is None:
        conn.execute("DELETE FROM folder_state WHERE source = %s AND slug = %s", (source, slug))
        return
    conn.execute(
        "INSERT INTO folder_state (source, slug, conversation_fingerprint, summaries_fingerprint)"
        " VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (source, slug) DO UPDATE SET conversation_fingerprint = EXCLUDED.conversation_fingerprint,"
        " summaries_fingerprint = EXCLUDED.summaries_fingerprint, synced_at = now()"
        " WHERE (folder_state.conversation_fingerprint, folder_state.summaries_fingerprint)"
        " IS DISTINCT FROM (EXCLUDED.conversation_fingerprint, EXCLUDED.summaries_fingerprint)",
        (source, slug, conversation_fp, summaries_fp),
    )


def record_problems(
    conn: psycopg.Connection[Any], source: str, slug: str, problems: Mapping[str, tuple[str, str]]
) -> list[str]:
    """Make ``ingest_errors`` for this slug hold exactly ``problems`` (path -> (severity, message)).

    Returns the paths whose problem is new or changed, so the caller logs each
    problem once rather than at every rescan.
    """
    stored = {
        path: (severity, error)
        for path, severity, error in conn.execute(
            "SELECT path, severity, error FROM ingest_errors WHERE source = %s AND slug = %s", (source, slug)
        )
    }
    gone = [path for path in stored if path not in problems]
    if gone:
        conn.execute("DELETE FROM ingest_errors WHERE source = %s AND path = ANY(%s)", (source, gone))
    fresh: list[str] = []
    for path, (severity, error) in problems.items():
        if stored.get(path) == (severity, error):
            continue
        fresh.append(path)
        conn.execute(
            "INSERT INTO ingest_errors (source, path, slug, severity, error) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (source, path) DO UPDATE SET slug = EXCLUDED.slug, severity = EXCLUDED.severity,"
            " error = EXCLUDED.error, last_seen = now(), count = ingest_errors.count + 1",
            (source, path, slug, severity, error),
        )
    return fresh


def standing_errors(
    conn: psycopg.Connection[Any], source: str, slugs: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """``(path, error)`` of every file of ``source`` whose last read failed (all slugs, or only ``slugs``), by path.

    What ``memoryd ingest`` reports and exits 1 on: an error stands until the
    file is fixed, whether or not this run re-read it.
    """
    if slugs is None:
        rows = conn.execute(
            "SELECT path, error FROM ingest_errors WHERE source = %s AND severity = 'error' ORDER BY path", (source,)
        )
    else:
        rows = conn.execute(
            "SELECT path, error FROM ingest_errors WHERE source = %s AND severity = 'error' AND slug = ANY(%s)"
            " ORDER BY path",
            (source, list(slugs)),
        )
    return [(path, error) for path, error in rows]


# --- embeddings ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingText:
    """A message or summary that has no embedding of the current recipe for the model yet."""

    ref_type: str  # "message" | "summary"
    ref_id: int
    conversation_id: int
    content: str
    content_hash: str
    speaker: str | None = None

    @property
    def input_hash(self) -> str | None:
        """What the current recipe encodes for it (memoryd.recipe); None: its content alone."""
        return recipe_input_hash(self.content_hash, self.speaker)

    @property
    def input_key(self) -> str:
        """The key its vectors are shared and cached by: the input hash, else the content hash."""
        return self.input_hash or self.content_hash


@dataclass(frozen=True, slots=True)
class ClaimCursor:
    """Where the previous claim of a run stopped: claim after these ids.

    Without it each claim would walk past every text already embedded before
    reaching a pending one, and a run over N texts would cost O(N²): a first
    embedding of 20,000 messages spent most of its time there.
    """

    message_id: int = 0
    summary_id: int = 0

    def after(self, texts: Sequence[PendingText]) -> ClaimCursor:
        """The cursor past ``texts`` (as claimed: messages then summaries, each by id)."""
        messages = [t.ref_id for t in texts if t.ref_type == "message"]
        summaries = [t.ref_id for t in texts if t.ref_type == "summary"]
        return ClaimCursor(max(messages, default=self.message_id), max(summaries, default=self.summary_id))


def claim_pending(
    conn: psycopg.Connection[Any], model: str, limit: int, cursor: ClaimCursor | None = None
) -> list[PendingText]:
    """Lock up to ``limit`` texts without an embedding of ``model`` and the current recipe, after ``cursor``, by id.

    ``FOR UPDATE SKIP LOCKED``: several workers (or processes) sharing one
    database each take different texts, and a text being deleted or edited
    waits for its embedding transaction instead of racing it.  Texts behind
    the cursor (skipped while locked, or edited since) are found by a claim
    from the start, which the caller makes before it stops.

    The conversation row is locked here too (``FOR KEY SHARE``, what the
    foreign-key check of the later COPY would take): a sync holds it ``FOR
    UPDATE`` while it deletes messages, and taking it only at COPY time made
    the two transactions wait for each other ("deadlock detected", issue 14).
    Claimed this way, the embedder takes every lock it needs at once, without
    waiting (SKIP LOCKED), so it is never part of a lock cycle: a sync in
    progress makes it skip that conversation's texts until the next claim.
    """
    cursor = cursor or ClaimCursor()
    while True:
        claimed = _claim_rows(conn, model, limit, cursor)
        kept = drop_embedded(conn, model, claimed)
        if kept or not claimed:
            return kept
        cursor = cursor.after(claimed)  # all embedded meanwhile by another worker: look further


def _has_current_vectors(fk: str, text: str, *, after: sql.Composable | None = None) -> sql.Composed:
    """SQL true when the row ``text`` (its ``id`` and ``content_hash``) has vectors for this model and recipe.

    The one test of "embedded" for the claim, its re-check and the pending
    count: vectors of ``%(model)s``, of ``%(recipe)s``, of this very content.
    ``after`` bounds ``e.{fk}`` too, implied by the row's id but letting a
    merge anti-join start at a claim's cursor.
    """
    bound = (
        sql.SQL(" AND e.{fk} > {after}").format(fk=sql.Identifier(fk), after=after)
        if after is not None
        else sql.SQL("")
    )
    return sql.SQL(
        "EXISTS (SELECT 1 FROM embeddings AS e WHERE e.{fk} = {text}.id{bound}"
        " AND e.model = %(model)s AND e.recipe = %(recipe)s AND e.content_hash = {text}.content_hash)"
    ).format(fk=sql.Identifier(fk), text=sql.Identifier(text), bound=bound)


def _claim_rows(conn: psycopg.Connection[Any], model: str, limit: int, cursor: ClaimCursor) -> list[PendingText]:
    claimed: list[PendingText] = []
    for ref_type, table, fk, after, speaker in (
        ("message", "messages", "message_id", cursor.message_id, "t.speaker"),
        ("summary", "summaries", "summary_id", cursor.summary_id, "NULL::text"),
    ):
        if len(claimed) >= limit:
            break
        query = sql.SQL(
            "SELECT t.id, t.conversation_id, t.content, t.content_hash, {speaker} FROM {table} AS t"
            " JOIN conversations AS c ON c.id = t.conversation_id"
            " WHERE t.id > %(after)s AND NOT {embedded}"
            " ORDER BY t.id LIMIT %(limit)s FOR UPDATE OF t SKIP LOCKED FOR KEY SHARE OF c SKIP LOCKED"
        ).format(
            table=sql.Identifier(table),
            speaker=sql.SQL(speaker),
            embedded=_has_current_vectors(fk, "t", after=sql.Placeholder("after")),
        )
        params = {"after": after, "model": model, "recipe": RECIPE, "limit": limit - len(claimed)}
        for ref_id, conv_id, content, chash, who in conn.execute(query, params):
            claimed.append(PendingText(ref_type, int(ref_id), int(conv_id), content, chash, who))
    return claimed


def drop_embedded(conn: psycopg.Connection[Any], model: str, texts: Sequence[PendingText]) -> list[PendingText]:
    """``texts`` less those that have vectors for ``model`` and the current recipe now.

    A claim's snapshot is taken before it locks its rows: a text that another
    worker embedded and committed in between is still seen as pending, and its
    lock, released by that commit, is free.  This second statement (a new
    snapshot, under READ COMMITTED) sees that worker's vectors, so the text is
    not encoded twice and its COPY does not break the embeddings' unique key.
    """
    if not texts:
        return []
    done: set[tuple[str, int]] = set()
    for ref_type, fk in (("message", "message_id"), ("summary", "summary_id")):
        mine = [t for t in texts if t.ref_type == ref_type]
        if mine:
            query = sql.SQL(
                "SELECT p.id FROM unnest(%(ids)s::bigint[], %(hashes)s::text[]) AS p(id, content_hash) WHERE {embedded}"
            ).format(embedded=_has_current_vectors(fk, "p"))
            params = {
                "ids": [t.ref_id for t in mine],
                "hashes": [t.content_hash for t in mine],
                "model": model,
                "recipe": RECIPE,
            }
            done |= {(ref_type, int(row[0])) for row in conn.execute(query, params)}
    return [t for t in texts if (t.ref_type, t.ref_id) not in done]


def count_pending(conn: psycopg.Connection[Any], model: str) -> int:
    """Texts without vectors of ``model`` and the current recipe (those being re-embedded included)."""
    row = conn.execute(
        sql.SQL(
            "SELECT (SELECT count(*) FROM messages AS m WHERE NOT {message_embedded})"
            " + (SELECT count(*) FROM summaries AS s WHERE NOT {summary_embedded})"
        ).format(
            message_embedded=_has_current_vectors("message_id", "m"),
            summary_embedded=_has_current_vectors("summary_id", "s"),
        ),
        {"model": model, "recipe": RECIPE},
    ).fetchone()
    return int(row[0]) if row else 0


def count_reembedding(conn: psycopg.Connection[Any], model: str) -> int:
    """Texts whose only vectors of ``model`` are of an older recipe: searched on those until re-embedded."""
    row = conn.execute(
        "SELECT count(*) FROM (SELECT DISTINCT ref_type, ref_id FROM embeddings"
        " WHERE model = %(model)s AND recipe <> %(recipe)s) AS old",
        {"model": model, "recipe": RECIPE},
    ).fetchone()
    return int(row[0]) if row else 0


def relabel_vectors(conn: psycopg.Connection[Any], model: str, texts: Sequence[PendingText]) -> set[tuple[str, int]]:
    """Give the current recipe to older vectors of these texts that encoded the very same input.

    A text whose encoded input does not change with the recipe (no speaker,
    a summary) keeps its vectors: no encoding, no delete and insert.
    Returns the (ref_type, ref_id) of the texts done.
    """
    if not texts:
        return set()
    rows = conn.execute(
        "UPDATE embeddings AS e SET recipe = %(recipe)s"
        " FROM unnest(%(types)s::text[], %(ids)s::bigint[], %(hashes)s::text[], %(keys)s::text[])"
        "  AS t(ref_type, ref_id, content_hash, input_key)"
        " WHERE e.ref_type = t.ref_type AND e.ref_id = t.ref_id"  # the (ref_type, ref_id, model, chunk) key
        " AND e.model = %(model)s AND e.recipe <> %(recipe)s AND e.content_hash = t.content_hash"
        " AND COALESCE(e.input_hash, e.content_hash) = t.input_key"
        " RETURNING e.ref_type, e.ref_id",
        {
            "recipe": RECIPE,
            "model": model,
            "types": [t.ref_type for t in texts],
            "ids": [t.ref_id for t in texts],
            "hashes": [t.content_hash for t in texts],
            "keys": [t.input_key for t in texts],
        },
    ).fetchall()
    return {(ref_type, int(ref_id)) for ref_type, ref_id in rows}


@dataclass(frozen=True, slots=True)
class ChunkVector:
    """One embedded chunk, ready to be written."""

    text: PendingText
    chunk: int
    start: int
    end: int
    vector: np.ndarray[Any, np.dtype[np.float32]]


def write_embeddings(conn: psycopg.Connection[Any], model: str, rows: Sequence[ChunkVector]) -> int:
    """Bulk-write vectors of the current recipe with binary COPY, replacing the texts' older ones.

    The texts were claimed with ``FOR UPDATE`` and an edited text is a new
    row, so the only vectors they may have are of an older recipe: those are
    deleted in the same transaction (their vectors go to ``vector_cache``),
    so search uses them until the moment the new ones are committed.
    """
    texts = {(r.text.ref_type, r.text.ref_id) for r in rows}
    for ref_type, fk in (("message", "message_id"), ("summary", "summary_id")):
        ids = [ref_id for kind, ref_id in texts if kind == ref_type]
        if ids:
            conn.execute(
                sql.SQL("DELETE FROM embeddings WHERE {fk} = ANY(%s) AND model = %s").format(fk=sql.Identifier(fk)),
                (ids, model),
            )
    count = 0
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY embeddings (conversation_id, ref_type, message_id, summary_id, chunk, chunk_start,"
            " chunk_end, model, dim, vector, content_hash, recipe, input_hash) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(
            ["int8", "text", "int8", "int8", "int4", "int4", "int4", "text", "int4", "vector", "text", "text", "text"]
        )
        for r in rows:
            is_message = r.text.ref_type == "message"
            copy.write_row(
                (
                    r.text.conversation_id,
                    r.text.ref_type,
                    r.text.ref_id if is_message else None,
                    None if is_message else r.text.ref_id,
                    r.chunk,
                    r.start,
                    r.end,
                    model,
                    int(r.vector.shape[0]),
                    r.vector,
                    r.text.content_hash,
                    RECIPE,
                    r.text.input_hash,
                )
            )
            count += 1
    return count


def as_array(value: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A vector read from the database as a float32 array.

    pgvector-python loads ``vector`` as a numpy array up to 0.3 and as its own
    ``Vector`` type from 0.4 on; both are accepted (the bench extra's
    langchain-postgres pins the old one).
    """
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    return np.asarray(value, dtype=np.float32)


def reusable_vectors(
    conn: psycopg.Connection[Any], model: str, texts: Sequence[PendingText]
) -> dict[str, list[tuple[int, int, int, Any]]]:
    """Vectors already computed for these inputs: input key -> [(chunk, start, end, vector)].

    Keyed by what was encoded (``PendingText.input_key``: the same content
    said by the same speaker, under any recipe that encodes it alike), not
    by the content alone.  Looked up among live embeddings first (the same
    text elsewhere), then in ``vector_cache`` (texts deleted recently, e.g. a
    slug renamed).  Only complete chunk sets are returned: chunks 0..n-1, the
    first starting at 0 and the last ending at the end of the text.
    """
    lengths = {t.input_key: len(t.content) for t in texts}
    if not lengths:
        return {}
    rows = conn.execute(
        "SELECT 0 AS source, input_key, chunk, chunk_start, chunk_end, vector FROM ("
        " SELECT DISTINCT ON (COALESCE(input_hash, content_hash), chunk) COALESCE(input_hash, content_hash)"
        " AS input_key, chunk, chunk_start, chunk_end, vector"
        " FROM embeddings WHERE model = %(model)s AND COALESCE(input_hash, content_hash) = ANY(%(hashes)s)"
        " ORDER BY COALESCE(input_hash, content_hash), chunk, id) AS live"
        " UNION ALL SELECT 1, input_hash, chunk, chunk_start, chunk_end, vector FROM vector_cache"
        " WHERE model = %(model)s AND input_hash = ANY(%(hashes)s)",
        {"model": model, "hashes": list(lengths)},
        binary=True,  # vectors as bytes: parsing their text form took most of a rename's re-embedding
    ).fetchall()
    sets: dict[tuple[int, str], list[tuple[int, int, int, Any]]] = defaultdict(list)
    for source, chash, chunk, start, end, vector in rows:
        sets[(source, chash)].append((chunk, start, end, as_array(vector)))
    found: dict[str, list[tuple[int, int, int, Any]]] = {}
    for (_, chash), chunks in sorted(sets.items()):  # live (0) before cached (1)
        if chash in found:
            continue
        chunks.sort()
        complete = (
            [c[0] for c in chunks] == list(range(len(chunks))) and chunks[0][1] == 0 and chunks[-1][2] == lengths[chash]
        )
        if complete:
            found[chash] = chunks
    return found


def prune_vector_cache(conn: psycopg.Connection[Any], *, older_than_days: int = 30) -> int:
    """Forget cached vectors of texts deleted long ago."""
    return conn.execute(
        "DELETE FROM vector_cache WHERE cached_at < now() - make_interval(days => %s)", (older_than_days,)
    ).rowcount


def has_embeddings(conn: psycopg.Connection[Any], model: str) -> bool:
    return conn.execute("SELECT EXISTS (SELECT 1 FROM embeddings WHERE model = %s)", (model,)).fetchone() == (True,)


# --- status -----------------------------------------------------------------


def counts(conn: psycopg.Connection[Any], model: str) -> dict[str, Any]:
    """Row counts and pending work: the daemon's STATUS= line and ``memoryd status``."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM conversations), (SELECT count(*) FROM messages),"
        " (SELECT count(*) FROM summaries), (SELECT count(*) FROM embeddings WHERE model = %s),"
        " (SELECT max(synced_at) FROM folder_state),"
        " (SELECT count(*) FROM folder_state AS f WHERE f.summaries_fingerprint IS NOT NULL"
        "   AND NOT EXISTS (SELECT 1 FROM conversations AS c WHERE c.source = f.source AND c.slug = f.slug))",
        (model,),
    ).fetchone()
    assert row is not None
    return {
        "conversations": row[0],
        "messages": row[1],
        "summaries": row[2],
        "embeddings": row[3],
        "last_sync": row[4].isoformat() if row[4] else None,
        "summaries_waiting_for_conversation": row[5],
        "pending_embeddings": count_pending(conn, model),
    }


def stats(conn: psycopg.Connection[Any], model: str) -> dict[str, Any]:
    """Everything ``memoryd status`` shows."""
    models = conn.execute("SELECT model, dim, count(*) FROM embeddings GROUP BY model, dim ORDER BY model").fetchall()
    problems = conn.execute(
        "SELECT path, slug, severity, error, first_seen, last_seen, count, source FROM ingest_errors"
        " ORDER BY last_seen DESC"
    ).fetchall()
    sources = conn.execute("SELECT source, count(*) FROM conversations GROUP BY source ORDER BY source").fetchall()
    in_progress = conn.execute(
        "SELECT slug FROM folder_state WHERE starts_with(conversation_fingerprint, %s) ORDER BY slug", (IN_PROGRESS,)
    ).fetchall()
    return {
        **counts(conn, model),
        "recipe": RECIPE,
        "reembedding": count_reembedding(conn, model),
        "in_progress": [row[0] for row in in_progress],
        "models": [{"model": m, "dim": d, "embeddings": n} for m, d, n in models],
        "sources": [{"name": name, "conversations": n} for name, n in sources],
        "problems": [
            {
                "path": p,
                "slug": s,
                "severity": sev,
                "error": e,
                "first_seen": f.isoformat(),
                "last_seen": ls.isoformat(),
                "count": c,
                "source": src,
            }
            for p, s, sev, e, f, ls, c, src in problems
        ],
    }


def _fetch_one(conn: psycopg.Connection[Any], query: str, params: Sequence[Any]) -> tuple[Any, ...]:
    row = conn.execute(query, params).fetchone()
    assert row is not None, "statement returned no row"
    return tuple(row)


# --- many known slugs at once: a re-parse that changes nothing ----------------


@dataclass(frozen=True, slots=True)
class StoredSlug:
    """What the database holds for one slug: just what deciding "nothing to write" needs."""

    conversation: tuple[str, str]  # content hash, source path
    # (level, key) -> content hash, covers, topics, source path
    summaries: dict[tuple[int, str], tuple[str, list[Any], list[str], str]]
    problems: dict[str, tuple[str, str]]  # path -> (severity, error)
    messages: list[StoredMessage] | None = None  # read only when asked (ingest --force re-compares them)


def lock_slugs(conn: psycopg.Connection[Any], source: str, slugs: Sequence[str]) -> None:
    """:func:`lock_slug` for many slugs, in one statement, in key order (two such batches never deadlock)."""
    keys = sorted({_slug_lock_key(source, slug) for slug in slugs})
    conn.execute(
        "SELECT pg_advisory_xact_lock(k) FROM (SELECT unnest(%s::bigint[]) AS k ORDER BY 1) AS ordered", (keys,)
    )


def stored_slugs(
    conn: psycopg.Connection[Any], source: str, slugs: Sequence[str], *, messages: bool = False
) -> dict[str, StoredSlug]:
    """Three queries (four with ``messages``) for the stored state of many slugs of ``source`` with a conversation."""
    conversations = {
        slug: (conv_id, content_hash, source_path)
        for slug, conv_id, content_hash, source_path in conn.execute(
            "SELECT slug, id, content_hash, source_path FROM conversations WHERE source = %s AND slug = ANY(%s)",
            (source, list(slugs)),
        )
    }
    summaries: dict[int, dict[tuple[int, str], tuple[str, list[Any], list[str], str]]] = {}
    for conv_id, level, key, content_hash, covers, topics, source_path in conn.execute(
        "SELECT conversation_id, level, key, content_hash, covers, topics, source_path FROM summaries"
        " WHERE conversation_id = ANY(%s)",
        ([c[0] for c in conversations.values()],),
    ):
        summaries.setdefault(conv_id, {})[(level, key)] = (content_hash, list(covers), list(topics), source_path)
    problems: dict[str, dict[str, tuple[str, str]]] = {}
    for slug, path, severity, error in conn.execute(
        "SELECT slug, path, severity, error FROM ingest_errors WHERE source = %s AND slug = ANY(%s)",
        (source, list(slugs)),
    ):
        problems.setdefault(slug, {})[path] = (severity, error)
    rows: dict[int, list[StoredMessage]] | None = None
    if messages:
        rows = {c[0]: [] for c in conversations.values()}
        for conv_id, *fields in conn.execute(
            "SELECT conversation_id, id, seq, content_hash, role, ts, speaker FROM messages"
            " WHERE conversation_id = ANY(%s)",
            (list(rows),),
        ):
            rows[conv_id].append(StoredMessage(*fields))
    return {
        slug: StoredSlug(
            (content_hash, source_path),
            summaries.get(conv_id, {}),
            problems.get(slug, {}),
            None if rows is None else rows[conv_id],
        )
        for slug, (conv_id, content_hash, source_path) in conversations.items()
    }


def nothing_to_write(
    stored: StoredSlug,
    conv: Conversation,
    parsed: Mapping[Path, list[Summary] | ParseError],
    problems: Mapping[str, tuple[str, str]],
    *,
    recheck: bool = False,
) -> bool:
    """True when syncing would write nothing: the rules of upsert_conversation, sync_summaries, record_problems.

    With ``recheck`` the stored messages are compared too, by :func:`plan_messages` itself.

    Conservative: any doubt (a summary file that failed to parse) says False,
    and the slug goes through the writers, which decide exactly.
    """
    if stored.conversation != (conv.source_hash, str(conv.source_path)) or stored.problems != dict(problems):
        return False
    if recheck:
        if stored.messages is None:
            return False
        plan = plan_messages(stored.messages, conv.messages)
        if plan.delete or plan.update or plan.insert:
            return False
    wanted: dict[tuple[int, str], tuple[str, list[Any], list[str], str]] = {}
    for result in parsed.values():
        if isinstance(result, ParseError):
            return False
        for s in result:
            wanted[(s.level, s.key)] = (s.content_hash, list(s.covers), list(s.topics), str(s.source_path))
    return wanted == stored.summaries


def record_folder_states(
    conn: psycopg.Connection[Any], source: str, states: Sequence[tuple[str, str | None, str | None]]
) -> None:
    """:func:`record_folder_state` for many slugs with folders, in one statement."""
    if not states:
        return
    slugs, conv_fps, sum_fps = (list(column) for column in zip(*states, strict=True))
    conn.execute(
        "INSERT INTO folder_state (source, slug, conversation_fingerprint, summaries_fingerprint)"
        " SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::text[])"
        " ON CONFLICT (source, slug) DO UPDATE SET conversation_fingerprint = EXCLUDED.conversation_fingerprint,"
        " summaries_fingerprint = EXCLUDED.summaries_fingerprint, synced_at = now()"
        " WHERE (folder_state.conversation_fingerprint, folder_state.summaries_fingerprint)"
        " IS DISTINCT FROM (EXCLUDED.conversation_fingerprint, EXCLUDED.summaries_fingerprint)",
        (source, slugs, conv_fps, sum_fps),
    )
