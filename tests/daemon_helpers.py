"""Helpers for the daemon tests: run it, wait for it, compare the database with the folders."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg

from memoryd.config import Config
from memoryd.daemon import Daemon
from memoryd.errors import ParseError
from memoryd.formats import parse_conversation
from memoryd.summaries import parse_summary_folder


def fast_config(config: Config) -> Config:
    """Short debounce and max wait, so tests do not sit out production timings."""
    return replace(config, watch=replace(config.watch, debounce_ms=200, max_wait_ms=2000))


@contextmanager
def running_daemon(config: Config, embedder: Any) -> Iterator[Daemon]:
    """The real daemon in a thread, ready (first reconcile done); stopped and joined on exit."""
    daemon = Daemon(config, embedder_factory=lambda: embedder)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            daemon.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="test-daemon")
    thread.start()
    try:
        wait_for(lambda: daemon.ready.is_set() or bool(errors), timeout=120, what="daemon ready")
        if errors:
            raise errors[0]
        yield daemon
        assert thread.is_alive(), f"daemon died: {errors}"
    finally:
        daemon.stop()
        thread.join(timeout=60)
        assert not thread.is_alive(), "daemon did not stop"
    if errors:
        raise errors[0]


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def database_mismatch(dsn: str, config: Config, model: str) -> str | None:
    """Why the database does not match the folders exactly, or None when it does.

    Every conversation, message and summary on disk is stored once with its
    content, none extra, in the configuration's source (other sources' rows
    are not compared), and every stored text has its embeddings (chunks
    0..n-1 of its current content) and nothing pending.
    """
    source = config.source.name
    expected: dict[str, tuple[list[tuple[int, str, str]], set[tuple[int, str, str]]]] = {}
    for folder in sorted(config.paths.conversations.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        try:
            conv = parse_conversation(folder)
        except ParseError:
            continue
        summaries: set[tuple[int, str, str]] = set()
        sum_dir = config.paths.summaries / folder.name
        if sum_dir.is_dir():
            for result in parse_summary_folder(sum_dir).values():
                if not isinstance(result, ParseError):
                    summaries |= {(s.level, s.key, s.content) for s in result}
        expected[folder.name] = ([(m.seq, m.role, m.content) for m in conv.messages], summaries)
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            stored_slugs = [
                row[0]
                for row in conn.execute("SELECT slug FROM conversations WHERE source = %s ORDER BY slug", (source,))
            ]
            if stored_slugs != sorted(expected):
                return f"slugs differ: db={stored_slugs} disk={sorted(expected)}"
            for slug, (messages, summaries) in expected.items():
                rows = conn.execute(
                    "SELECT m.seq, m.role, m.content FROM messages m JOIN conversations c ON c.id = m.conversation_id"
                    " WHERE c.source = %s AND c.slug = %s ORDER BY m.seq",
                    (source, slug),
                ).fetchall()
                if [tuple(r) for r in rows] != messages:
                    return f"{slug}: messages differ ({len(rows)} stored, {len(messages)} on disk)"
                srows = conn.execute(
                    "SELECT s.level, s.key, s.content FROM summaries s JOIN conversations c ON c.id = s.conversation_id"
                    " WHERE c.source = %s AND c.slug = %s",
                    (source, slug),
                ).fetchall()
                if {tuple(r) for r in srows} != summaries or len(srows) != len(summaries):
                    return f"{slug}: summaries differ"
            missing = conn.execute(
                "SELECT (SELECT count(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM embeddings e"
                "  WHERE e.message_id = m.id AND e.model = %(m)s AND e.content_hash = m.content_hash))"
                " + (SELECT count(*) FROM summaries s WHERE NOT EXISTS (SELECT 1 FROM embeddings e"
                "  WHERE e.summary_id = s.id AND e.model = %(m)s AND e.content_hash = s.content_hash))",
                {"m": model},
            ).fetchone()
            if missing and missing[0]:
                return f"{missing[0]} text(s) without embeddings"
            gaps = conn.execute(
                "SELECT count(*) FROM (SELECT ref_type, ref_id, max(chunk) + 1 AS n, count(*) AS c FROM embeddings"
                " GROUP BY ref_type, ref_id) t WHERE n <> c"
            ).fetchone()
            if gaps and gaps[0]:
                return f"{gaps[0]} text(s) with missing or duplicate chunks"
    except psycopg.OperationalError as exc:
        return f"database unreachable: {exc}"
    return None


def write_stream_conversation(root: Path, n: int, messages: int = 6) -> None:
    """One conversation of a stream, written the way a tool would: staged, then renamed into place."""
    staging = root / f".staging-{n}"
    staging.mkdir(parents=True, exist_ok=True)
    lines = [
        f'{{"role": "{"user" if i % 2 == 0 else "assistant"}", "content": "stream {n} message {i}: note {n * 31 + i}"}}'
        for i in range(messages)
    ]
    (staging / "messages.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    staging.rename(root / f"2025-10-{n % 28 + 1:02d}__stream_{n:03d}")
