"""Folders ↔ database, compared: ``memoryd verify``.

Re-reads every conversation and summary folder and compares what it finds
with what the database holds, slug by slug: the conversation (stored at all,
from the same bytes), its messages by (seq, role, content hash), its
summaries by (level, key, content hash), and its vectors for the configured
model (texts still pending, vectors of text that no longer exists or with
chunks missing).  Status counts can look clean while the data has drifted;
this is the check that reads everything.

It never writes: the database is read in one read-only transaction, at one
snapshot, and the folders are only parsed.  ``memoryd ingest --force``
repairs stored text, ``memoryd embed`` pending vectors.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from memoryd.config import Config
from memoryd.db import Database
from memoryd.errors import MemorydError, ParseError
from memoryd.formats import parse_conversation
from memoryd.records import Conversation, Summary
from memoryd.slugs import is_slug_name
from memoryd.summaries import parse_summary_folder

MessageKey = tuple[int, str, str]  # seq, role, content hash
SummaryKey = tuple[int, str, str]  # level, key, content hash


@dataclass
class SlugDrift:
    """How one slug's folders and rows differ; ``problems`` says it in words, one line each."""

    slug: str
    problems: list[str] = field(default_factory=list)
    messages_missing: int = 0  # on disk, not in the database
    messages_extra: int = 0  # in the database, not on disk
    summaries_missing: int = 0
    summaries_extra: int = 0
    pending_vectors: int = 0
    orphaned_vectors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "problems": self.problems,
            "messages_missing": self.messages_missing,
            "messages_extra": self.messages_extra,
            "summaries_missing": self.summaries_missing,
            "summaries_extra": self.summaries_extra,
            "pending_vectors": self.pending_vectors,
            "orphaned_vectors": self.orphaned_vectors,
        }


@dataclass
class VerifyReport:
    """Every slug that drifted; the folders and the database agree when ``drift`` is empty."""

    model: str
    slugs: int = 0
    conversations: int = 0  # stored
    messages: int = 0  # stored
    summaries: int = 0  # stored
    drift: dict[str, SlugDrift] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": not self.drift,
            "model": self.model,
            "slugs": self.slugs,
            "conversations": self.conversations,
            "messages": self.messages,
            "summaries": self.summaries,
            "drift": {slug: drift.as_dict() for slug, drift in sorted(self.drift.items())},
            "seconds": round(self.seconds, 3),
        }


@dataclass
class _Stored:
    """What the database holds, read at one snapshot."""

    conversations: dict[str, str] = field(default_factory=dict)  # slug -> source hash
    messages: dict[str, Counter[MessageKey]] = field(default_factory=lambda: defaultdict(Counter))
    summaries: dict[str, Counter[SummaryKey]] = field(default_factory=lambda: defaultdict(Counter))
    pending: Counter[str] = field(default_factory=Counter)
    orphaned: Counter[str] = field(default_factory=Counter)


@dataclass
class _OnDisk:
    conversation: Conversation | None = None
    conversation_error: str | None = None
    folder: bool = False
    summaries: Counter[SummaryKey] | None = None  # None: no summaries folder
    summary_errors: list[str] = field(default_factory=list)


def verify(db: Database, config: Config) -> VerifyReport:
    """Compare every folder with the database; nothing is written anywhere."""
    started = time.monotonic()
    report = VerifyReport(model=config.embedding.model)
    stored = db.run(_read_stored, config.embedding.model, config.source.name)
    report.conversations = len(stored.conversations)
    report.messages = sum(sum(c.values()) for c in stored.messages.values())
    report.summaries = sum(sum(c.values()) for c in stored.summaries.values())
    slugs = _disk_slugs(config.paths.conversations) | _disk_slugs(config.paths.summaries) | set(stored.conversations)
    report.slugs = len(slugs)
    for slug in sorted(slugs):
        drift = _compare(slug, _read_disk(config, slug), stored, keep_deleted=config.watch.on_delete == "keep")
        if drift.problems:
            report.drift[slug] = drift
    report.seconds = time.monotonic() - started
    return report


def _disk_slugs(root: Path) -> set[str]:
    try:
        with os.scandir(root) as entries:
            return {e.name for e in entries if is_slug_name(e.name) and (e.is_dir() or e.is_symlink())}
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise MemorydError(f"cannot list {root}: {exc.strerror or exc}") from exc


def _read_disk(config: Config, slug: str) -> _OnDisk:
    disk = _OnDisk()
    conv_dir = config.paths.conversations / slug
    if conv_dir.is_dir() or conv_dir.is_symlink():
        disk.folder = True
        try:
            disk.conversation = parse_conversation(conv_dir, root=config.paths.conversations)
        except ParseError as exc:
            disk.conversation_error = str(exc)
    sum_dir = config.paths.summaries / slug
    if sum_dir.is_dir() or sum_dir.is_symlink():
        disk.summaries = Counter()
        try:
            results = parse_summary_folder(sum_dir, root=config.paths.summaries)
        except ParseError as exc:
            disk.summary_errors.append(str(exc))
            return disk
        for result in results.values():
            if isinstance(result, ParseError):
                disk.summary_errors.append(str(result))
            else:
                disk.summaries.update(_summary_key(summary) for summary in result)
    return disk


def _summary_key(summary: Summary) -> SummaryKey:
    return (summary.level, summary.key, summary.content_hash)


def _compare(slug: str, disk: _OnDisk, stored: _Stored, *, keep_deleted: bool) -> SlugDrift:
    drift = SlugDrift(slug)
    in_db = slug in stored.conversations
    if disk.conversation_error is not None:
        kept = "the stored version is kept" if in_db else "nothing is stored"
        drift.problems.append(f"unreadable on disk ({kept}): {disk.conversation_error}")
    drift.problems += [f"unreadable on disk: {error}" for error in disk.summary_errors]
    if disk.conversation is not None and not in_db:
        drift.messages_missing = len(disk.conversation.messages)
        drift.problems.append(f"conversation on disk, not in the database ({drift.messages_missing} message(s))")
    elif not disk.folder and in_db and not keep_deleted:
        drift.messages_extra = sum(stored.messages[slug].values())
        drift.problems.append("conversation in the database, its folder is gone")
    elif disk.conversation is not None:
        _compare_conversation(drift, disk.conversation, stored)
    if in_db and disk.summaries is not None and not disk.summary_errors:
        _compare_summaries(drift, disk.summaries, stored.summaries[slug])
    elif in_db and disk.summaries is None and stored.summaries[slug] and not keep_deleted:
        drift.summaries_extra = sum(stored.summaries[slug].values())
        drift.problems.append(f"{drift.summaries_extra} summary(ies) in the database, the summaries folder is gone")
    drift.pending_vectors = stored.pending[slug]
    drift.orphaned_vectors = stored.orphaned[slug]
    if drift.pending_vectors:
        drift.problems.append(f"{drift.pending_vectors} text(s) without vectors of the model (run `memoryd embed`)")
    if drift.orphaned_vectors:
        drift.problems.append(f"{drift.orphaned_vectors} orphaned vector(s): of a text that changed, or chunks missing")
    return drift


def _compare_conversation(drift: SlugDrift, conversation: Conversation, stored: _Stored) -> None:
    slug = conversation.slug
    on_disk = Counter((m.seq, m.role, m.content_hash) for m in conversation.messages)
    in_db = stored.messages[slug]
    drift.messages_missing = sum((on_disk - in_db).values())
    drift.messages_extra = sum((in_db - on_disk).values())
    if drift.messages_missing or drift.messages_extra:
        drift.problems.append(
            f"messages differ: {drift.messages_missing} on disk not in the database,"
            f" {drift.messages_extra} in the database not on disk"
        )
    if stored.conversations[slug] != conversation.source_hash:
        drift.problems.append("files changed since the last ingest (the stored source hash differs)")


def _compare_summaries(drift: SlugDrift, on_disk: Counter[SummaryKey], in_db: Counter[SummaryKey]) -> None:
    drift.summaries_missing = sum((on_disk - in_db).values())
    drift.summaries_extra = sum((in_db - on_disk).values())
    if drift.summaries_missing or drift.summaries_extra:
        drift.problems.append(
            f"summaries differ: {drift.summaries_missing} on disk not in the database,"
            f" {drift.summaries_extra} in the database not on disk"
        )


def _read_stored(conn: psycopg.Connection[Any], model: str, source: str) -> _Stored:
    """Everything compared, of this machine's ``source`` only, in one read-only transaction (one snapshot)."""
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    stored = _Stored()
    params = {"model": model, "source": source}
    for slug, source_hash in conn.execute(
        "SELECT slug, content_hash FROM conversations WHERE source = %(source)s", params
    ):
        stored.conversations[slug] = source_hash
    for slug, seq, role, digest in conn.execute(
        "SELECT c.slug, m.seq, m.role, m.content_hash FROM messages m JOIN conversations c ON c.id = m.conversation_id"
        " WHERE c.source = %(source)s",
        params,
    ):
        stored.messages[slug][(seq, role, digest)] += 1
    for slug, level, key, digest in conn.execute(
        "SELECT c.slug, s.level, s.key, s.content_hash"
        " FROM summaries s JOIN conversations c ON c.id = s.conversation_id WHERE c.source = %(source)s",
        params,
    ):
        stored.summaries[slug][(level, key, digest)] += 1
    for slug, count in conn.execute(_PENDING_SQL, params):
        stored.pending[slug] = count
    for slug, count in conn.execute(_ORPHANED_SQL, params):
        stored.orphaned[slug] = count
    return stored


# A text is pending when no vector of the model was made from its current content.
_PENDING_SQL = """
SELECT c.slug, count(*) FROM (
    SELECT m.conversation_id FROM messages m WHERE NOT EXISTS (
        SELECT 1 FROM embeddings e
        WHERE e.message_id = m.id AND e.model = %(model)s AND e.content_hash = m.content_hash)
    UNION ALL
    SELECT s.conversation_id FROM summaries s WHERE NOT EXISTS (
        SELECT 1 FROM embeddings e
        WHERE e.summary_id = s.id AND e.model = %(model)s AND e.content_hash = s.content_hash)
) t JOIN conversations c ON c.id = t.conversation_id
WHERE c.source = %(source)s
GROUP BY c.slug
"""

# A vector is orphaned when the text it was made from is no longer the text's
# content, or when its text's chunks are not exactly 0..n-1 (one lost or doubled).
_ORPHANED_SQL = """
SELECT c.slug, sum(t.n) FROM (
    SELECT e.conversation_id, count(*) AS n FROM embeddings e
    LEFT JOIN messages m ON m.id = e.message_id
    LEFT JOIN summaries s ON s.id = e.summary_id
    WHERE e.model = %(model)s AND e.content_hash <> COALESCE(m.content_hash, s.content_hash)
    GROUP BY e.conversation_id
    UNION ALL
    SELECT g.conversation_id, count(*) FROM (
        SELECT e.conversation_id FROM embeddings e
        WHERE e.model = %(model)s
        GROUP BY e.conversation_id, e.ref_type, e.ref_id, e.content_hash
        HAVING max(e.chunk) + 1 <> count(*)
    ) g GROUP BY g.conversation_id
) t JOIN conversations c ON c.id = t.conversation_id
WHERE c.source = %(source)s
GROUP BY c.slug
"""
