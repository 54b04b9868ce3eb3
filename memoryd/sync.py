"""Where the stages meet: folders are parsed and stored, one slug at a time.

``sync_slug`` makes the database match the two folders of one slug, in one
transaction, retried as a whole when the database restarts.  ``reconcile``
walks both roots and syncs only the slugs whose files changed since their
last sync (by name, size and mtime), so on an unchanged tree it costs a
directory walk, not a re-parse; it is what guarantees that nothing is lost
when filesystem events are.
"""

from __future__ import annotations

import collections
import hashlib
import os
import time
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import structlog

from memoryd import store
from memoryd.config import Config
from memoryd.db import Database
from memoryd.errors import Cancelled, DatabaseUnavailable, MemorydError, ParseError
from memoryd.formats import parse_conversation
from memoryd.records import Conversation, Summary
from memoryd.slugs import is_slug_name
from memoryd.summaries import parse_summary_folder

log = structlog.get_logger(__name__)

# New slugs inserted per transaction during a large first import.
BULK_BATCH = 500
# Bulk transactions run at once, at most.  Storing is bound by PostgreSQL
# computing the full-text vectors (sql/002_fulltext.sql), one CPU per
# connection: two connections store a 20,000-message tree about 1.7 times as
# fast as one on a 2-core machine (bench/ingest.py).
MAX_BULK_WORKERS = 4
# Known slugs synced per transaction by a reconcile (ingest --force re-reads them all).
KNOWN_BATCH = 100


def bulk_workers(db: Database) -> int:
    """Connections that insert new slugs in parallel: one per CPU we may use, within the pool.

    Two of the pool's connections stay free, for the slug-by-slug syncs of
    the reconciling thread and for the daemon's embedder thread: a caller
    waiting seconds for a connection would be taken for a database outage.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, MAX_BULK_WORKERS, db.max_connections - 2))


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
class SlugInput:
    """Everything read from disk for one slug, before any database work."""

    slug: str
    conv_fp: str | None
    sum_fp: str | None
    conversation: Conversation | None = None
    conv_failed: bool = False
    # None: the summaries folder exists but cannot be listed.
    summaries: dict[Path, list[Summary] | ParseError] | None = field(default_factory=dict)
    problems: dict[str, tuple[str, str]] = field(default_factory=dict)
    recheck: bool = False  # compare stored messages even if the files did not change (ingest --force)
    # Still being written: a JSONL line without its newline, or files that kept
    # moving until max_wait_ms (the watcher says so).  Stored as far as complete.
    in_progress: bool = False
    # The transcript's last line is cut (no newline, unreadable): its complete
    # lines may replace a stored version, but never shrink it (a truncated file).
    torn: bool = False

    def as_new_slug(self) -> store.NewSlug | None:
        """The bulk-insert form, when the slug parsed without any problem and is complete."""
        if self.conversation is None or self.problems or self.summaries is None or _db_text(self.slug) != self.slug:
            return None
        if self.in_progress:
            return None
        summaries = [s for result in self.summaries.values() if not isinstance(result, ParseError) for s in result]
        return store.NewSlug(self.conversation, summaries, self.conv_fp, self.sum_fp)


@dataclass
class ReconcileReport:
    checked: int = 0
    synced: int = 0
    wrote: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


class Syncer:
    """Syncs slugs from the configured folders into the database, as this machine's source.

    Every read, lock and delete is scoped to ``[source] name``: another
    source's conversations are never compared with these folders, so they
    are never deleted for being absent from them.
    """

    def __init__(self, db: Database, config: Config) -> None:
        self.db = db
        self.source = config.source.name
        self.conversations_dir = config.paths.conversations
        self.summaries_dir = config.paths.summaries
        self.on_delete = config.watch.on_delete

    # -- one slug ------------------------------------------------------------

    def read_slug(self, slug: str, *, growing: bool = False) -> SlugInput:
        """Everything the database needs about a slug, read from disk (no database work).

        ``growing``: the watcher saw its files still moving at max_wait_ms.
        """
        # Fingerprints first: a file changed while we parse makes the next
        # reconcile see a difference, never the reverse.
        conv_dir = self.conversations_dir / slug
        sum_dir = self.summaries_dir / slug
        inp = SlugInput(slug, fingerprint(conv_dir), fingerprint(sum_dir), in_progress=growing)
        if inp.conv_fp is not None:
            try:
                inp.conversation = parse_conversation(conv_dir)
            except ParseError as exc:
                inp.conv_failed = True  # the stored version stays
                if exc.in_progress:  # not one complete line yet: nothing to store, nothing wrong
                    inp.in_progress = True
                else:
                    inp.problems[_db_text(str(exc.path))] = ("error", _reason(exc))
            else:
                inp.torn = inp.conversation.in_progress
                inp.in_progress = inp.in_progress or inp.torn
                if inp.conversation.warnings:
                    inp.problems[_db_text(str(inp.conversation.source_path))] = (
                        "warning",
                        "; ".join(inp.conversation.warnings),
                    )
        if inp.sum_fp is not None:
            try:
                inp.summaries = parse_summary_folder(sum_dir)
            except ParseError as exc:  # the folder itself is unreadable: keep every stored summary
                inp.summaries = None
                inp.problems[_db_text(str(exc.path))] = ("error", _reason(exc))
            else:
                for summary_path, result in inp.summaries.items():
                    if isinstance(result, ParseError):
                        inp.problems[_db_text(str(summary_path))] = ("error", _reason(result))
        return inp

    def sync_slug(self, slug: str, *, growing: bool = False) -> store.SlugChanges:
        """Make the database match ``conversations/<slug>`` and ``summaries/<slug>``."""
        return self._sync_input(self.read_slug(slug, growing=growing), time.monotonic())

    def _sync_input(self, inp: SlugInput, started: float) -> store.SlugChanges:
        if _db_text(inp.slug) != inp.slug:  # the slug is the database key: it must be text
            raise ParseError(self.conversations_dir / inp.slug, "folder name is not valid UTF-8: rename it")
        changes, fresh = self.db.run(self._store_slug, inp)
        self._log_changes(inp, changes, fresh, started)
        return changes

    def _log_changes(self, inp: SlugInput, changes: store.SlugChanges, fresh: list[str], started: float) -> None:
        for path in fresh:
            severity, message = inp.problems[path]
            (log.error if severity == "error" else log.warning)(
                f"ingest_{severity}", slug=inp.slug, path=path, error=message
            )
        fields: dict[str, Any] = {k: v for k, v in vars(changes).items() if v and k != "errors"}
        if inp.in_progress:
            fields["in_progress"] = True
        if changes.wrote:
            log.info("slug_stored", slug=inp.slug, seconds=round(time.monotonic() - started, 3), **fields)
        else:
            log.debug("slug_unchanged", slug=inp.slug, **fields)

    def _sync_known(
        self,
        slugs: list[str],
        report: ReconcileReport,
        step: Callable[[], None],
        should_stop: Callable[[], bool],
        *,
        recheck: bool = False,
        growing: Collection[str] = (),
    ) -> None:
        """Sync slugs the database already has, KNOWN_BATCH to a transaction.

        An unchanged slug costs a few reads and no write; alone in its own
        transaction, the pool check, BEGIN and COMMIT around those reads cost
        more than they do (``ingest --force`` took 9x a first ingest).  A batch
        that fails for any reason is synced again slug by slug, so one bad slug
        still does not stop the others.
        """
        for first in range(0, len(slugs), KNOWN_BATCH):
            if should_stop():
                break
            started = time.monotonic()
            inputs: list[SlugInput] = []
            for slug in slugs[first : first + KNOWN_BATCH]:
                try:
                    inputs.append(self.read_slug(slug, growing=slug in growing))
                    inputs[-1].recheck = recheck
                except OSError:
                    inputs = []  # unreadable: slug by slug below, where the failure is recorded
                    break
            stored: list[tuple[store.SlugChanges, list[str]]] | None = None
            if len(inputs) > 1 and all(_db_text(inp.slug) == inp.slug for inp in inputs):
                try:
                    stored = self.db.run(self._store_slugs, inputs)
                except (DatabaseUnavailable, Cancelled):
                    raise
                except (MemorydError, psycopg.Error, ValueError) as exc:
                    log.info("batch_sync_failed", slugs=len(inputs), error=str(exc).strip().splitlines()[0])
            if stored is None:
                for slug in slugs[first : first + KNOWN_BATCH]:
                    self._sync_guarded(slug, report, recheck=recheck, growing=slug in growing)
                    step()
                continue
            for inp, (changes, fresh) in zip(inputs, stored, strict=True):
                self._log_changes(inp, changes, fresh, started)
                report.synced += 1
                report.wrote += int(changes.wrote)
                step()

    def _store_slugs(
        self, conn: psycopg.Connection[Any], inputs: list[SlugInput]
    ) -> list[tuple[store.SlugChanges, list[str]]]:
        """:meth:`_store_slug` for each input, in one transaction, with a few queries for all the unchanged ones.

        The slugs' stored state is read at once; a slug whose parse matches it
        (the common case of ``ingest --force``) only gets its folder state
        recorded, with the others' in one statement; the rest go through
        :meth:`_store_slug`.
        """
        store.lock_slugs(conn, self.source, [inp.slug for inp in inputs])
        stored = store.stored_slugs(
            conn, self.source, [inp.slug for inp in inputs], messages=any(i.recheck for i in inputs)
        )
        results: list[tuple[store.SlugChanges, list[str]]] = []
        states: list[tuple[str, str | None, str | None]] = []
        for inp in inputs:
            known = stored.get(inp.slug)
            if (
                known is not None
                and not inp.in_progress  # _store_slug records its folder state as in progress
                and inp.conversation is not None
                and inp.summaries is not None
                and store.nothing_to_write(known, inp.conversation, inp.summaries, inp.problems, recheck=inp.recheck)
            ):
                results.append((store.SlugChanges(conversation="unchanged", errors=sorted(inp.problems)), []))
                states.append((inp.slug, inp.conv_fp, inp.sum_fp))
            else:
                results.append(self._store_slug(conn, inp))
        store.record_folder_states(conn, self.source, states)
        return results

    def _store_slug(self, conn: psycopg.Connection[Any], inp: SlugInput) -> tuple[store.SlugChanges, list[str]]:
        changes = store.SlugChanges()
        slug = inp.slug
        source = self.source
        store.lock_slug(conn, source, slug)
        conv_id: int | None
        if inp.conversation is not None and inp.torn and _would_shrink(conn, source, inp.conversation):
            conv_id = store.conversation_id(conn, source, slug)  # the stored, longer version stays until the line ends
            changes.conversation = "kept"
        elif inp.conversation is not None:
            conv_id = store.upsert_conversation(conn, source, inp.conversation, changes, recheck=inp.recheck)
        elif inp.conv_failed:
            conv_id = store.conversation_id(conn, source, slug)  # the stored version stays
            changes.conversation = "failed"
        elif self.on_delete == "delete":
            conv_id = None
            if store.delete_conversation(conn, source, slug):
                changes.conversation = "deleted"
        else:
            conv_id = store.conversation_id(conn, source, slug)
            changes.conversation = "kept" if conv_id is not None else "absent"
        if inp.summaries is None:
            pass  # unreadable summaries folder: nothing to compare with, so nothing changes
        elif conv_id is None:
            changes.summaries_waiting = sum(len(r) for r in inp.summaries.values() if not isinstance(r, ParseError))
        elif inp.sum_fp is not None or self.on_delete == "delete":
            store.sync_summaries(conn, conv_id, inp.summaries, changes)
        fresh = store.record_problems(conn, source, slug, inp.problems)
        conv_fp = store.in_progress_fingerprint(inp.conv_fp) if inp.in_progress else inp.conv_fp
        store.record_folder_state(conn, source, slug, conv_fp, inp.sum_fp)
        changes.errors = sorted(inp.problems)
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

    def standing_errors(self, slugs: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """``(path, error)`` of the files that could not be read, as recorded (all slugs or only ``slugs``)."""
        scope = None if slugs is None else [_db_text(slug) for slug in slugs]
        return self.db.run(store.standing_errors, self.source, scope)

    def slugs_to_sync(self, *, force: bool = False) -> list[str]:
        """Slugs whose folders differ from what the database saw at their last sync."""
        return self._plan(force=force, slugs=None)[0]

    def _plan(self, *, force: bool, slugs: Iterable[str] | None) -> tuple[list[str], set[str]]:
        """The slugs to sync, and which of them the database has never seen.

        A conversation whose folders are gone and that has no folder state
        (stored by an older run) is included when ``on_delete = "delete"``.
        """
        known, stored = self.db.run(_known_slugs, self.source)
        if slugs is not None:
            todo = sorted(set(slugs))
        else:
            on_disk = self.disk_slugs()
            candidates = set(on_disk) | set(known)
            if self.on_delete == "delete":
                candidates |= stored

            def differs(slug: str) -> bool:
                disk = on_disk.get(slug, (None, None))
                return force or disk != known.get(slug, (None, None)) or (slug in stored and slug not in on_disk)

            todo = sorted(slug for slug in candidates if differs(slug))
        new = {slug for slug in todo if slug not in known and slug not in stored}
        return todo, new

    def disk_slugs(self) -> dict[str, tuple[str | None, str | None]]:
        """Every slug present in either root, with its two fingerprints."""
        names: set[str] = set()
        for root in (self.conversations_dir, self.summaries_dir):
            try:
                with os.scandir(root) as it:
                    # A symlinked slug is parse's to judge (loops and links out of the root are recorded errors).
                    names.update(e.name for e in it if is_slug_name(e.name) and (e.is_symlink() or e.is_dir()))
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
        growing: Collection[str] = (),
    ) -> ReconcileReport:
        """Sync every slug that changed (all of them with ``force``, or only ``slugs``).

        Slugs the database has never seen are inserted in batches with binary
        COPY (a first import of thousands of conversations), several batches
        at once on several connections; the others, and any new slug with a
        problem, go through ``sync_slug`` one by one.
        """
        started = time.monotonic()
        report = ReconcileReport()
        todo, new = self._plan(force=force, slugs=slugs)
        report.checked = len(todo)
        done = 0

        def step() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, len(todo))

        fresh = [slug for slug in todo if slug in new and slug not in growing]
        workers = bulk_workers(self.db)
        # This thread reads the next batch while up to `workers` earlier ones are stored.
        in_flight: collections.deque[tuple[list[SlugInput], Future[set[str]]]] = collections.deque()

        def settle_oldest() -> None:
            inputs, stored = in_flight.popleft()
            inserted = stored.result()
            for inp in inputs:
                if inp.slug in inserted:
                    report.synced += 1
                    report.wrote += 1
                else:
                    self._sync_guarded(inp, report)
                step()

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="memoryd-bulk") as pool:
            for first in range(0, len(fresh), BULK_BATCH):
                if should_stop():
                    break
                inputs = [self.read_slug(slug) for slug in fresh[first : first + BULK_BATCH]]
                in_flight.append((inputs, pool.submit(self._insert_new, inputs)))
                while len(in_flight) > workers:
                    settle_oldest()
            while in_flight:
                settle_oldest()
        bulk = set(fresh)
        self._sync_known(
            sorted(s for s in todo if s not in bulk), report, step, should_stop, recheck=force, growing=growing
        )
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

    def _insert_new(self, inputs: list[SlugInput]) -> set[str]:
        """Bulk-insert the new slugs that parsed cleanly; the slugs actually inserted."""
        items = [item for item in (inp.as_new_slug() for inp in inputs) if item is not None]
        if len(items) < 2:
            return set()
        started = time.monotonic()
        try:
            inserted = set(self.db.run(store.insert_new_slugs, self.source, items))
        except (DatabaseUnavailable, Cancelled):
            raise
        except psycopg.Error as exc:  # e.g. one row the database refuses: fall back to slug by slug
            log.warning("bulk_insert_failed", slugs=len(items), error=str(exc).strip().splitlines()[0])
            return set()
        seconds = round((time.monotonic() - started) / max(len(inserted), 1), 4)
        for item in items:
            if item.conversation.slug in inserted:
                log.info(
                    "slug_stored",
                    slug=item.conversation.slug,
                    conversation="inserted",
                    messages_inserted=len(item.conversation.messages),
                    summaries_inserted=len(item.summaries),
                    seconds=seconds,
                    bulk=True,
                )
        return inserted

    def _sync_guarded(
        self, target: str | SlugInput, report: ReconcileReport, *, recheck: bool = False, growing: bool = False
    ) -> None:
        """Sync one slug; a slug the database or the filesystem refuses does not stop the others."""
        slug = target if isinstance(target, str) else target.slug
        try:
            inp = self.read_slug(target, growing=growing) if isinstance(target, str) else target
            inp.recheck = recheck
            changes = self._sync_input(inp, time.monotonic())
        except (DatabaseUnavailable, Cancelled):
            raise
        except (MemorydError, psycopg.Error, OSError, ValueError) as exc:
            report.failed += 1
            report.failures.append(slug)
            log.error("slug_failed", slug=slug, error=str(exc).strip().splitlines()[0] if str(exc) else repr(exc))
            self._record_failure(slug, exc)
        else:
            report.synced += 1
            report.wrote += int(changes.wrote)

    def _record_failure(self, slug: str, exc: BaseException) -> None:
        message = _db_text(f"{type(exc).__name__}: {exc}".strip().splitlines()[0])

        def record(conn: psycopg.Connection[Any]) -> None:
            path = _db_text(str(self.conversations_dir / slug))
            store.record_problems(conn, self.source, _db_text(slug), {path: ("error", message)})

        try:
            self.db.run(record)
        except (MemorydError, psycopg.Error) as record_exc:
            log.error("error_not_recorded", slug=slug, error=str(record_exc))


def _db_text(text: str) -> str:
    """A name as database text: bytes of a file name that are not UTF-8 shown as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _reason(exc: ParseError) -> str:
    return exc.reason if exc.line is None else f"line {exc.line}: {exc.reason}"


def _would_shrink(conn: psycopg.Connection[Any], source: str, conv: Conversation) -> bool:
    """Whether storing ``conv`` would leave fewer messages than are stored now."""
    row = conn.execute(
        "SELECT count(m.id) FROM conversations AS c LEFT JOIN messages AS m ON m.conversation_id = c.id"
        " WHERE c.source = %s AND c.slug = %s",
        (source, conv.slug),
    ).fetchone()
    return row is not None and int(row[0]) > len(conv.messages)


def _known_slugs(
    conn: psycopg.Connection[Any], source: str
) -> tuple[dict[str, tuple[str | None, str | None]], set[str]]:
    """The folder states and stored slugs of ``source``: what its folders are compared with."""
    known = store.folder_states(conn, source)
    stored = {row[0] for row in conn.execute("SELECT slug FROM conversations WHERE source = %s", (source,))}
    return known, stored
