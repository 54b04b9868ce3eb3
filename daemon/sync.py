"""Where the stages meet: folders are parsed and stored, one slug at a time.

``sync_slug`` makes the database match the two folders of one slug, in one
transaction, retried as a whole when the database restarts.  ``reconcile``
walks both roots and syncs only the slugs whose files changed since their
last sync (by name, size and mtime), so on an unchanged tree it costs a
directory walk, not a re-parse; it is what guarantees that nothing is lost
when filesystem events are.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import structlog

from daemon import store
from daemon.config import Config
from daemon.db import Database
from daemon.errors import Cancelled, DatabaseUnavailable, MemorydError, ParseError
from daemon.models import Conversation, Summary
from daemon.parse import parse_conversation
from daemon.summaries import parse_summary_folder

log = structlog.get_logger(__name__)


def is_slug_name(name: str) -> bool:
    """Hidden folders (``.git``, a tool's ``.staging``) are never conversations."""
    return bool(name) and not name.startswith(".")


def fingerprint(folder: Path) -> str | None:
    """Name, size and mtime of every file directly in ``folder``; None if it is not a folder.

    Both formats keep their files at the top of the slug folder, so one
    ``scandir`` per folder is the whole cost of noticing a change.
    """
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # unreadable folder: changes when its permissions do
        return f"unreadable:{exc.errno}"
    digest = hashlib.sha256()
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        digest.update(
            f"{entry.name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_mode}\n".encode("utf-8", "surrogateescape")
        )
    return digest.hexdigest()


@dataclass
class ReconcileReport:
    checked: int = 0
    synced: int = 0
    wrote: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


class Syncer:
    """Syncs slugs from the configured folders into the database."""

    def __init__(self, db: Database, config: Config) -> None:
        self.db = db
        self.conversations_dir = config.paths.conversations
        self.summaries_dir = config.paths.summaries
        self.on_delete = config.watch.on_delete

    # -- one slug ------------------------------------------------------------

    def sync_slug(self, slug: str) -> store.SlugChanges:
        """Make the database match ``conversations/<slug>`` and ``summaries/<slug>``."""
        started = time.monotonic()
        conv_dir = self.conversations_dir / slug
        sum_dir = self.summaries_dir / slug
        # Fingerprints first: a file changed while we parse makes the next
        # reconcile see a difference, never the reverse.
        conv_fp = fingerprint(conv_dir)
        sum_fp = fingerprint(sum_dir)
        conversation: Conversation | None = None
        problems: dict[str, tuple[str, str]] = {}
        conv_failed = False
        if conv_fp is not None:
            try:
                conversation = parse_conversation(conv_dir)
            except ParseError as exc:
                conv_failed = True
                problems[str(exc.path)] = ("error", _reason(exc))
            else:
                if conversation.warnings:
                    problems[str(conversation.source_path)] = ("warning", "; ".join(conversation.warnings))
        parsed_summaries: dict[Path, list[Summary] | ParseError] | None = {}
        if sum_fp is not None:
            try:
                parsed_summaries = parse_summary_folder(sum_dir)
            except ParseError as exc:  # the folder itself is unreadable: keep every stored summary
                parsed_summaries = None
                problems[str(exc.path)] = ("error", _reason(exc))
            else:
                for summary_path, result in parsed_summaries.items():
                    if isinstance(result, ParseError):
                        problems[str(summary_path)] = ("error", _reason(result))

        changes, fresh = self.db.run(
            self._store_slug,
            slug,
            conversation,
            conv_failed,
            parsed_summaries,
            sum_fp is not None,
            problems,
            conv_fp,
            sum_fp,
        )
        for path in fresh:
            severity, message = problems[path]
            (log.error if severity == "error" else log.warning)(
                f"ingest_{severity}", slug=slug, path=path, error=message
            )
        fields: dict[str, Any] = {k: v for k, v in vars(changes).items() if v and k != "errors"}
        if changes.wrote:
            log.info("slug_stored", slug=slug, seconds=round(time.monotonic() - started, 3), **fields)
        else:
            log.debug("slug_unchanged", slug=slug, **fields)
        return changes

    def _store_slug(
        self,
        conn: psycopg.Connection[Any],
        slug: str,
        conversation: Conversation | None,
        conv_failed: bool,
        parsed_summaries: dict[Path, list[Summary] | ParseError] | None,
        summaries_present: bool,
        problems: dict[str, tuple[str, str]],
        conv_fp: str | None,
        sum_fp: str | None,
    ) -> tuple[store.SlugChanges, list[str]]:
        changes = store.SlugChanges()
        store.lock_slug(conn, slug)
        conv_id: int | None
        if conversation is not None:
            conv_id = store.upsert_conversation(conn, conversation, changes)
        elif conv_failed:
            conv_id = store.conversation_id(conn, slug)  # the stored version stays
            changes.conversation = "failed"
        elif self.on_delete == "delete":
            conv_id = None
            if store.delete_conversation(conn, slug):
                changes.conversation = "deleted"
        else:
            conv_id = store.conversation_id(conn, slug)
            changes.conversation = "kept" if conv_id is not None else "absent"
        if parsed_summaries is None:
            pass  # unreadable summaries folder: nothing to compare with, so nothing changes
        elif conv_id is None:
            changes.summaries_waiting = sum(len(r) for r in parsed_summaries.values() if not isinstance(r, ParseError))
        elif summaries_present or self.on_delete == "delete":
            store.sync_summaries(conn, conv_id, parsed_summaries, changes)
        fresh = store.record_problems(conn, slug, problems)
        store.record_folder_state(conn, slug, conv_fp, sum_fp)
        changes.errors = sorted(problems)
        return changes, fresh

    # -- whole tree ----------------------------------------------------------

    def slugs_for_paths(self, paths: Iterable[Path]) -> list[str] | None:
        """The slugs that given paths belong to; None when a path is a whole root."""
        slugs: set[str] = set()
        roots = (self.conversations_dir.resolve(), self.summaries_dir.resolve())
        for path in paths:
            resolved = path.expanduser().resolve()
            if resolved in roots:
                return None
            for root in roots:
                if resolved.is_relative_to(root):
                    slugs.add(resolved.relative_to(root).parts[0])
                    break
            else:
                raise MemorydError(
                    f"{path} is not inside the conversations folder ({roots[0]}) or the summaries folder"
                    f" ({roots[1]}); move it there or point [paths] at its parent"
                )
        return sorted(slugs)

    def slugs_to_sync(self, *, force: bool = False) -> list[str]:
        """Slugs whose folders differ from what the database saw at their last sync.

        A conversation whose folders are gone and that has no folder state
        (stored by an older run) is included when ``on_delete = "delete"``.
        """
        on_disk = self.disk_slugs()
        known, stored = self.db.run(_known_slugs)
        candidates = set(on_disk) | set(known)
        if self.on_delete == "delete":
            candidates |= stored

        def differs(slug: str) -> bool:
            disk = on_disk.get(slug, (None, None))
            return force or disk != known.get(slug, (None, None)) or (slug in stored and slug not in on_disk)

        return sorted(slug for slug in candidates if differs(slug))

    def disk_slugs(self) -> dict[str, tuple[str | None, str | None]]:
        """Every slug present in either root, with its two fingerprints."""
        names: set[str] = set()
        for root in (self.conversations_dir, self.summaries_dir):
            try:
                with os.scandir(root) as it:
                    names.update(e.name for e in it if is_slug_name(e.name) and e.is_dir(follow_symlinks=False))
            except FileNotFoundError:
                continue
        return {
            name: (fingerprint(self.conversations_dir / name), fingerprint(self.summaries_dir / name)) for name in names
        }

    def reconcile(
        self,
        *,
        force: bool = False,
        slugs: Iterable[str] | None = None,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        log_summary: bool = True,
    ) -> ReconcileReport:
        """Sync every slug that changed (all of them with ``force``, or only ``slugs``)."""
        started = time.monotonic()
        report = ReconcileReport()
        todo = sorted(set(slugs)) if slugs is not None else self.slugs_to_sync(force=force)
        report.checked = len(todo)
        for n, slug in enumerate(todo, 1):
            if should_stop():
                break
            try:
                changes = self.sync_slug(slug)
            except (DatabaseUnavailable, Cancelled):
                raise
            except (MemorydError, psycopg.Error, OSError, ValueError) as exc:
                # One slug the database or the filesystem refuses must not stop the others.
                report.failed += 1
                report.failures.append(slug)
                log.error("slug_failed", slug=slug, error=str(exc).strip().splitlines()[0] if str(exc) else repr(exc))
                self._record_failure(slug, exc)
            else:
                report.synced += 1
                report.wrote += int(changes.wrote)
            if progress is not None:
                progress(n, len(todo))
        report.seconds = time.monotonic() - started
        (log.info if log_summary else log.debug)(
            "reconciled",
            slugs=len(todo),
            synced=report.synced,
            wrote=report.wrote,
            failed=report.failed,
            seconds=round(report.seconds, 2),
        )
        return report

    def _record_failure(self, slug: str, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]

        def record(conn: psycopg.Connection[Any]) -> None:
            store.record_problems(conn, slug, {str(self.conversations_dir / slug): ("error", message)})

        try:
            self.db.run(record)
        except (MemorydError, psycopg.Error) as record_exc:
            log.error("error_not_recorded", slug=slug, error=str(record_exc))


def _reason(exc: ParseError) -> str:
    return exc.reason if exc.line is None else f"line {exc.line}: {exc.reason}"


def _known_slugs(conn: psycopg.Connection[Any]) -> tuple[dict[str, tuple[str | None, str | None]], set[str]]:
    known = store.folder_states(conn)
    stored = {row[0] for row in conn.execute("SELECT slug FROM conversations")}
    return known, stored
