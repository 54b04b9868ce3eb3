"""Filesystem events in, debounced and stable slugs out.

Two roots are watched, ``conversations/<slug>/...`` and ``summaries/<slug>/...``;
a slug is the first path component below either root. This module knows
nothing of the database, the parser or the model: it only says *which* slugs
are worth syncing now, and *when* events may have been lost so that the caller
should reconcile everything (``WatchBatch.rescan``).

Events are hints, not truth: watchdog coalesces and reorders them, inotify drops
them when its queue overflows (watchdog 7.1 only logs that and rebuilds its
watches, it emits no event), and recursive sub-watches that hit the inotify
watch limit are skipped silently. The watcher therefore never decides on an
event alone: a slug is emitted only once a stat snapshot of its files stops
moving, and the daemon's periodic reconcile remains the guarantee that nothing
is missed for good.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog
from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from memoryd.slugs import is_slug_name

__all__ = [
    "FolderWatcher",
    "ObserverFactory",
    "SlugDebouncer",
    "Snapshot",
    "SnapshotFn",
    "WatchBatch",
    "slug_for_path",
]

log = structlog.get_logger(__name__)

Snapshot = Mapping[str, tuple[int, int]]
"""What a slug's files look like on disk: path -> (size, mtime_ns)."""

SnapshotFn = Callable[[str], Snapshot]
ObserverFactory = Callable[[], BaseObserver]

# The settle interval used once max_wait has passed: long enough for a writer
# that is still going to move size or mtime, short enough to bound latency.
_MAX_SETTLE_S = 0.25

# How often get() checks that the observer threads are alive and that the roots
# are still the directories being watched (deleted, moved away, recreated).
_HEALTH_CHECK_INTERVAL_S = 1.0

# Inotify limits that make watchdog's native observer unusable, and the sysctl
# a user raises to lift each one.
_LIMIT_SYSCTLS = {
    errno.ENOSPC: "fs.inotify.max_user_watches",
    errno.EMFILE: "fs.inotify.max_user_instances",
}

# Only the events that can mean "content changed". Leaving out opened and
# closed-without-write keeps the parser's own reads from flooding the inotify
# queue (and from waking the dispatcher) every time a slug is synced.
_WATCHED_EVENTS: tuple[type[FileSystemEvent], ...] = (
    DirCreatedEvent,
    FileCreatedEvent,
    DirModifiedEvent,
    FileModifiedEvent,
    DirAttribEvent,
    FileAttribEvent,
    DirDeletedEvent,
    FileDeletedEvent,
    DirMovedEvent,
    FileMovedEvent,
    FileClosedEvent,
)

# watchdog 7.1 reports an inotify queue overflow only through this stdlib
# logger; listening to it is the one way to learn that events were lost. It is
# best effort: a logging set-up that raises this logger above WARNING mutes it,
# and the daemon's periodic reconcile still catches up.
_OVERFLOW_LOGGER = "watchdog.observers.inotify_c"
_OVERFLOW_MESSAGE = "Inotify queue overflowed"


@dataclass(frozen=True)
class WatchBatch:
    """What ``FolderWatcher.get`` hands out.

    ``slugs`` (sorted, possibly empty) are stable and worth syncing now.
    ``rescan`` says that events may have been lost (queue overflow, an observer
    thread died, a root was deleted, moved or recreated, or someone called
    ``request_rescan``): the caller should reconcile every slug, not just these.
    """

    slugs: list[str]
    rescan: bool = False


def slug_for_path(
    path: str | os.PathLike[str],
    roots: Sequence[str | os.PathLike[str]],
    *,
    is_directory: bool,
) -> str | None:
    """Map a path to the slug it belongs to, or None when it belongs to none.

    A file directly inside a root is not a conversation, and a hidden first
    component (``.git``, a ``.tmp-copy`` staging folder) is a place tools write
    to before renaming into place, so both are ignored. Where roots nest, the
    deepest one wins.
    """
    target = os.path.abspath(os.fspath(path))
    for root in sorted((os.path.abspath(os.fspath(r)) for r in roots), key=len, reverse=True):
        prefix = root.rstrip(os.sep) + os.sep
        if not target.startswith(prefix):
            continue
        slug, sep, _ = target[len(prefix) :].partition(os.sep)
        if not is_slug_name(slug) or (not sep and not is_directory):
            return None
        return slug
    return None


@dataclass
class _Burst:
    """Per-slug state from its first event until it is emitted."""

    first_event: float
    last_event: float
    generation: int = 0
    last_check: float | None = None
    previous: Snapshot | None = None

    def due(self, debounce_s: float, max_wait_s: float, settle_s: float) -> float:
        cap = self.first_event + max_wait_s
        if self.last_check is None:
            return min(self.last_event + debounce_s, cap)
        if self.last_event <= self.last_check:
            # Quiet since the last check: a short settle confirms the snapshot.
            return self.last_check + settle_s
        return min(max(self.last_event, self.last_check) + debounce_s, max(cap, self.last_check + settle_s))


class SlugDebouncer:
    """Decides when a slug that received events is ready to be synced.

    Rule, per slug; a *burst* starts at the first event after the slug was last
    emitted:

    * A due-check happens ``debounce_s`` after the latest event or the latest
      check, whichever is later (the quiet period), or ``max_wait_s`` after the
      burst's first event if that is earlier.
    * A due-check snapshots the slug's files. It emits the slug only if the
      snapshot equals the one taken at the previous due-check of the burst;
      otherwise (first check, or files moved) it keeps the snapshot and re-arms:
      ``settle_s`` later when no event came since, a quiet period later when
      one did.  So a slug is emitted about ``debounce_s + settle_s`` after its
      last event, once its files stood still over the settle interval: a file
      still being written (size or mtime moving) is waited for.
    * Past ``max_wait_s`` events no longer postpone anything: checks come every
      ``settle_s`` (default ``min(debounce_s, 0.25)``) and the slug is emitted
      as soon as two consecutive snapshots are equal. Event noise that does not
      change the files (attribute changes, rewrites of identical bytes at the
      same mtime) therefore cannot starve a slug, while a file whose size or
      mtime keeps moving faster than ``settle_s`` is still waited for.
    * An event that arrives while a check is snapshotting makes that snapshot
      untrustworthy: before ``max_wait_s`` the slug just re-arms; past it the
      slug is emitted (the bound holds) and a new burst starts at once, so the
      late change is emitted too.

    Thread-safe: ``touch`` is called from the observer thread, ``collect`` from
    the consumer. Snapshots run outside the lock, because they stat files and
    must not stall event delivery. ``clock`` must be monotonic; it is injected
    so the rule can be tested without sleeping.
    """

    def __init__(
        self,
        snapshot: SnapshotFn,
        *,
        debounce_s: float,
        max_wait_s: float,
        settle_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if debounce_s <= 0 or max_wait_s <= 0:
            raise ValueError(f"debounce_s and max_wait_s must be > 0, got {debounce_s} and {max_wait_s}")
        settle = min(debounce_s, _MAX_SETTLE_S) if settle_s is None else settle_s
        if settle <= 0:
            raise ValueError(f"settle_s must be > 0, got {settle}")
        self.debounce_s = debounce_s
        self.max_wait_s = max_wait_s
        self.settle_s = settle
        self._snapshot = snapshot
        self._clock = clock
        self._lock = threading.Lock()
        self._bursts: dict[str, _Burst] = {}

    def touch(self, slug: str) -> bool:
        """Record an event for ``slug``; True when it starts a new burst.

        The return value lets a waiting consumer be woken only when the earliest
        deadline may have moved earlier, not on every event of a burst.
        """
        now = self._clock()
        with self._lock:
            burst = self._bursts.get(slug)
            if burst is None:
                self._bursts[slug] = _Burst(first_event=now, last_event=now)
                return True
            burst.last_event = now
            burst.generation += 1
            return False

    def next_due(self) -> float | None:
        """The clock time of the earliest pending due-check, None when idle."""
        with self._lock:
            return min((self._due(b) for b in self._bursts.values()), default=None)

    def pending(self) -> list[str]:
        """Slugs with events not yet emitted, sorted."""
        with self._lock:
            return sorted(self._bursts)

    def collect(self) -> list[str]:
        """Run the due-checks that are due and return the slugs ready now, sorted."""
        now = self._clock()
        with self._lock:
            due = [(slug, b.generation) for slug, b in self._bursts.items() if self._due(b) <= now]
        ready = [slug for slug, generation in due if self._check(slug, generation)]
        return sorted(ready)

    def _due(self, burst: _Burst) -> float:
        return burst.due(self.debounce_s, self.max_wait_s, self.settle_s)

    def _check(self, slug: str, generation: int) -> bool:
        checked_at = self._clock()
        snapshot = self._snapshot(slug)
        with self._lock:
            burst = self._bursts.get(slug)
            if burst is None:
                return False
            stable = burst.previous is not None and snapshot == burst.previous
            untouched = burst.generation == generation
            overdue = checked_at - burst.first_event >= self.max_wait_s
            if stable and untouched:
                del self._bursts[slug]
                return True
            if stable and overdue:
                self._bursts[slug] = _Burst(first_event=burst.last_event, last_event=burst.last_event)
                return True
            burst.previous = snapshot
            burst.last_check = checked_at
            return False


def _snapshot_files(roots: Sequence[Path], slug: str) -> dict[str, tuple[int, int]]:
    """Stat every file of ``slug`` in every root; a vanished file is left out.

    A file that disappears between listing and stat will also be missing from
    the next snapshot if it is really gone, so skipping it is enough.
    """
    files: dict[str, tuple[int, int]] = {}
    for root in roots:
        for dirpath, _dirnames, filenames in os.walk(root / slug):
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                files[path] = (st.st_size, st.st_mtime_ns)
    return files


def _root_identity(root: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(root)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if os.path.isdir(root) else None


class _SlugEventHandler(FileSystemEventHandler):
    """Routes watchdog events to slugs.

    It never raises: an exception here would end watchdog's dispatcher thread
    and, with it, all watching.
    """

    def __init__(
        self,
        roots: Sequence[Path],
        *,
        on_slug: Callable[[str], None],
        on_root_lost: Callable[[], None],
        on_error: Callable[[], None],
    ) -> None:
        super().__init__()
        self._roots = tuple(str(r) for r in roots)
        self._on_slug = on_slug
        self._on_root_lost = on_root_lost
        self._on_error = on_error

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            super().dispatch(event)
        except Exception:
            log.exception(
                "watch_handler_failed",
                path=os.fsdecode(event.src_path),
                event_type=event.event_type,
            )
            self._on_error()

    def on_created(self, event: DirCreatedEvent | FileCreatedEvent) -> None:
        self._touch(event.src_path, is_directory=event.is_directory)

    def on_modified(self, event: DirModifiedEvent | FileModifiedEvent) -> None:
        self._touch(event.src_path, is_directory=event.is_directory)

    def on_attrib(self, event: DirAttribEvent | FileAttribEvent) -> None:
        self._touch(event.src_path, is_directory=event.is_directory)

    def on_closed(self, event: FileClosedEvent) -> None:
        self._touch(event.src_path, is_directory=False)

    def on_deleted(self, event: DirDeletedEvent | FileDeletedEvent) -> None:
        self._touch(event.src_path, is_directory=event.is_directory)

    def on_moved(self, event: DirMovedEvent | FileMovedEvent) -> None:
        # A rename is the old slug vanishing and the new one appearing; an
        # empty side is a move across the roots' boundary.
        for path in (event.src_path, event.dest_path):
            if path:
                self._touch(path, is_directory=event.is_directory)

    def _touch(self, raw_path: bytes | str, *, is_directory: bool) -> None:
        path = os.fsdecode(raw_path)
        if path in self._roots:
            # Modifications of a root itself only echo its children's events;
            # its deletion stops watchdog's emitter and needs a rescan.
            if not os.path.isdir(path):
                self._on_root_lost()
            return
        slug = slug_for_path(path, self._roots, is_directory=is_directory)
        if slug is not None:
            self._on_slug(slug)


class _OverflowSpotter(logging.Filter):
    """Turns watchdog's inotify-overflow log record into a rescan request."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__()
        self._on_overflow = on_overflow

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(_OVERFLOW_MESSAGE):
            self._on_overflow()
        return True


class FolderWatcher:
    """Watches both roots and hands out batches of stable slugs.

    Use as a context manager, single use: ``__enter__`` creates missing roots
    (a fresh install) and starts watchdog; ``__exit__`` stops it and joins every
    thread it started. The watcher has no thread of its own: the debouncing,
    snapshotting and health checks run inside ``get``, in the consumer's
    thread, so a consumer busy syncing simply sees its next batch a bit later.

    Start the watcher *before* the startup reconcile, so that nothing written
    during the reconcile is missed.

    Health: every second or so ``get`` checks that watchdog's threads are alive
    and that each root is still the directory being watched. A root deleted or
    moved away is not recreated (recreating it could turn a user's following
    ``mv new conversations`` into ``conversations/new``); watching resumes once
    it exists again. Every such change, and any inotify queue overflow, sets
    ``rescan`` on the next batch.

    When the native observer hits an inotify limit (ENOSPC: too many watches,
    EMFILE: too many instances) the watcher falls back to polling, warns once
    with the sysctl to raise, and stays on polling for the rest of its life.
    """

    def __init__(
        self,
        conversations_dir: Path,
        summaries_dir: Path,
        *,
        debounce_s: float = 1.5,
        max_wait_s: float = 10.0,
        observer_factory: ObserverFactory = Observer,
        poll_interval_s: float = 1.0,
    ) -> None:
        self.conversations_dir = Path(os.path.abspath(conversations_dir))
        self.summaries_dir = Path(os.path.abspath(summaries_dir))
        self._roots = (self.conversations_dir, self.summaries_dir)
        self._observer_factory = observer_factory
        self._poll_interval_s = poll_interval_s
        self._debouncer = SlugDebouncer(
            lambda slug: _snapshot_files(self._roots, slug),
            debounce_s=debounce_s,
            max_wait_s=max_wait_s,
        )
        self._handler = _SlugEventHandler(
            self._roots,
            on_slug=self._on_slug,
            on_root_lost=self._on_root_lost,
            on_error=lambda: self.request_rescan("handler_error"),
        )
        self._overflow_spotter = _OverflowSpotter(lambda: self.request_rescan("inotify_overflow"))
        self._wake = threading.Condition()
        self._wake_seq = 0
        self._rescan_reason: str | None = None
        self._observer_lock = threading.Lock()
        self._observer: BaseObserver | None = None
        self._watched: dict[Path, tuple[int, int] | None] = {}
        self._polling_forced = False
        self._next_health_check = 0.0
        self._started = False
        self._stopping = threading.Event()

    # -- lifecycle --------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Create missing roots and start watching; once per watcher."""
        if self._started:
            raise RuntimeError("FolderWatcher can be started only once")
        self._started = True
        for root in self._roots:
            root.mkdir(parents=True, exist_ok=True)
        logging.getLogger(_OVERFLOW_LOGGER).addFilter(self._overflow_spotter)
        try:
            with self._observer_lock:
                self._start_observer()
        except BaseException:
            self.stop()
            raise
        self._next_health_check = time.monotonic() + _HEALTH_CHECK_INTERVAL_S
        log.info(
            "watch_started",
            conversations=str(self.conversations_dir),
            summaries=str(self.summaries_dir),
            observer=type(self._observer).__name__,
            debounce_s=self._debouncer.debounce_s,
            max_wait_s=self._debouncer.max_wait_s,
        )

    def stop(self) -> None:
        """Stop watching, join watchdog's threads and wake any blocked ``get``."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wakeup()
        with self._observer_lock:
            self._stop_observer()
        logging.getLogger(_OVERFLOW_LOGGER).removeFilter(self._overflow_spotter)
        if self._started:
            log.info("watch_stopped", pending=len(self._debouncer.pending()))

    @property
    def uses_polling(self) -> bool:
        """Whether events come from polling rather than a native observer."""
        return isinstance(self._observer, PollingObserver)

    # -- consumer API ------------------------------------------------------

    def get(self, timeout: float | None = None) -> WatchBatch | None:
        """Block until slugs are ready or a rescan is requested.

        Returns a ``WatchBatch``, or None when ``timeout`` seconds passed with
        nothing to report or the watcher was stopped (from another thread, or
        before the call). ``timeout=None`` waits until one of those happens.
        """
        if not self._started:
            raise RuntimeError("FolderWatcher.get() called before start()")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stopping.is_set():
            with self._wake:
                seen = self._wake_seq
            batch = self._poll()
            if batch is not None:
                return batch
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            wake_at = min(t for t in (self._debouncer.next_due(), deadline, self._next_health_check) if t is not None)
            self._sleep(seen, max(0.0, wake_at - now))
        return None

    def request_rescan(self, reason: str = "requested") -> None:
        """Ask the consumer for a full reconcile; the next batch carries ``rescan``.

        Safe from any thread. Requests made before the consumer picks them up
        are merged into one.
        """
        with self._wake:
            first = self._rescan_reason is None
            if first:
                self._rescan_reason = reason
            self._wake_seq += 1
            self._wake.notify_all()
        if first:
            log.warning("watch_rescan_requested", reason=reason)

    # -- internals ---------------------------------------------------------

    def _poll(self) -> WatchBatch | None:
        self._supervise()
        slugs = self._debouncer.collect()
        with self._wake:
            rescan = self._rescan_reason is not None
            self._rescan_reason = None
        if slugs or rescan:
            return WatchBatch(slugs=slugs, rescan=rescan)
        return None

    def _sleep(self, seen: int, timeout: float) -> None:
        """Wait up to ``timeout`` unless something happened since ``seen`` was read.

        Comparing sequence numbers rather than waiting on a bare notify means
        an event that arrived while ``get`` was busy is never slept through.
        """
        with self._wake:
            self._wake.wait_for(lambda: self._wake_seq != seen or self._stopping.is_set(), timeout)

    def _wakeup(self) -> None:
        with self._wake:
            self._wake_seq += 1
            self._wake.notify_all()

    def _on_slug(self, slug: str) -> None:
        if self._debouncer.touch(slug):
            self._wakeup()

    def _on_root_lost(self) -> None:
        # Check health at once: watchdog's emitter for that root has stopped.
        self._next_health_check = 0.0
        self.request_rescan("root_deleted")

    def _supervise(self) -> None:
        now = time.monotonic()
        if now < self._next_health_check:
            return
        self._next_health_check = now + _HEALTH_CHECK_INTERVAL_S
        with self._observer_lock:
            if self._stopping.is_set():
                return
            reason = self._unhealthy_reason()
            if reason is None:
                return
            log.warning("watch_restarting", reason=reason)
            self._stop_observer()
            try:
                self._start_observer()
            except OSError as exc:
                log.error("watch_restart_failed", error=str(exc))
        self.request_rescan(reason)

    def _unhealthy_reason(self) -> str | None:
        observer = self._observer
        if observer is None:
            return "observer_missing"
        if not observer.is_alive() or not all(e.is_alive() for e in observer.emitters):
            return "observer_died"
        if {root: _root_identity(root) for root in self._roots} != self._watched:
            return "root_changed"
        return None

    def _start_observer(self) -> None:
        """Start an observer on the roots that exist; fall back to polling on inotify limits."""
        self._watched = {root: _root_identity(root) for root in self._roots}
        existing = [root for root, ident in self._watched.items() if ident is not None]
        if not self._polling_forced:
            try:
                self._observer = self._launch(self._observer_factory, existing)
                return
            except OSError as exc:
                if exc.errno not in _LIMIT_SYSCTLS:
                    raise
                self._polling_forced = True
                sysctl = _LIMIT_SYSCTLS[exc.errno]
                code = errno.errorcode[exc.errno]
                log.warning(
                    "watch_fallback_polling",
                    errno=code,
                    sysctl=sysctl,
                    hint=(
                        f"inotify limit reached ({code}: {exc.strerror}); watching by polling instead, "
                        f"which is slower and costlier: raise {sysctl} (e.g. sysctl -w {sysctl}=524288)"
                    ),
                )
        self._observer = self._launch(lambda: PollingObserver(timeout=self._poll_interval_s), existing)

    def _launch(self, factory: ObserverFactory, roots: Sequence[Path]) -> BaseObserver:
        observer = factory()
        try:
            for root in roots:
                observer.schedule(
                    self._handler,
                    str(root),
                    recursive=True,
                    event_filter=list(_WATCHED_EVENTS),
                )
            observer.start()
        except BaseException:
            _halt(observer)
            raise
        return observer

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            _halt(observer)


def _halt(observer: BaseObserver) -> None:
    """Stop an observer, started or not, and join its threads.

    ``stop()`` also runs on an observer whose ``start()`` failed, because the
    inotify observer starts a reader thread in its constructor and emitters as
    it starts; ``join()`` raises on a thread that never started.
    """
    observer.stop()
    if observer.is_alive():
        observer.join()
