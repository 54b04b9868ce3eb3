"""``memoryd watch``: the long-running daemon.

Two threads share one database:

- the main thread reconciles at start, then turns watcher batches into
  ``sync_slug`` calls (storing text), reconciles again every
  ``rescan_interval_s`` and whenever the watcher says events were lost;
- the embedder thread loads the model once the first reconcile is done
  (readiness never waits on it) and embeds whatever is pending each
  time something was stored, so a slow embed never delays storing other
  slugs' text.

Every database call retries without limit (the daemon outlives database
restarts); the retry waits are interruptible, so SIGTERM ends the daemon
within a few seconds even in the middle of an outage.  Only one daemon runs
per source (``[source] name``) on a database, enforced by a session-level
advisory lock; daemons of different sources run side by side.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import structlog

from memoryd import store
from memoryd.api import LocalMemory
from memoryd.config import Config
from memoryd.db import Database, RetryPolicy
from memoryd.errors import AlreadyRunning, Cancelled, DatabaseUnavailable, EmbedError
from memoryd.mirror import SourceMirror
from memoryd.query_client import socket_path
from memoryd.query_service import QueryService
from memoryd.sync import Syncer
from memoryd.systemd import SystemdNotifier
from memoryd.watch import FolderWatcher

log = structlog.get_logger(__name__)

# A query waits this long for the database before it is answered 503: a client
# must not hang while the daemon itself waits out an outage.
QUERY_DB_DEADLINE_S = 5.0
# ...and this long for the model, on a daemon that has just started: well
# within the client's timeout (query_client.REQUEST_TIMEOUT_S), so that the
# client hears why rather than timing out.
QUERY_MODEL_WAIT_S = 30.0

DAEMON_LOCK = 0x6D656D64  # "memd": one daemon per source and database


def source_lock_key(source: str) -> int:
    """The second half of a daemon's lock: its source, hashed into a non-negative int4."""
    return int.from_bytes(hashlib.sha256(source.encode()).digest()[:4], "big") & 0x7FFFFFFF


class DaemonLock:
    """A session-level advisory lock on its own connection, one per source.

    Keyed by (DAEMON_LOCK, hash of the source): two daemons of one source
    would delete each other's work, two of different sources touch disjoint
    rows.  A lock dies with its session, so when the database restarts the
    lock is taken again on a new connection; if another daemon got it
    meanwhile, this one stops.
    """

    def __init__(self, dsn: str, source: str) -> None:
        self.dsn = dsn
        self.source = source
        self.conn: psycopg.Connection[Any] | None = None

    def acquire(self) -> None:
        key = source_lock_key(self.source)
        conn = psycopg.connect(
            self.dsn,
            autocommit=True,
            # At most 63 bytes are kept: the source first, as the message below names it.
            application_name=f"memoryd watch source={self.source} pid={os.getpid()} host={socket.gethostname()}",
            connect_timeout=10,
        )
        row = conn.execute("SELECT pg_try_advisory_lock(%s::int4, %s::int4)", (DAEMON_LOCK, key)).fetchone()
        if not (row and row[0]):
            holder = conn.execute(
                "SELECT a.application_name FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.classid = %s::oid AND l.objid = %s::oid AND l.objsubid = 2"
                " AND l.granted LIMIT 1",
                (DAEMON_LOCK, key),
            ).fetchone()
            conn.close()
            who = holder[0] if holder and holder[0] else "another process"
            raise AlreadyRunning(
                f"another memoryd daemon is already watching source {self.source!r} on this database ({who});"
                " a daemon on another machine needs its own [source] name"
            )
        self.conn = conn

    def check(self) -> None:
        """Re-take the lock if its connection was lost (database restart)."""
        if self.conn is not None and not self.conn.closed:
            try:
                self.conn.execute("SELECT 1")
                return
            except psycopg.Error:
                self.conn.close()
        self.acquire()

    def release(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()  # closing the session releases the lock
            finally:
                self.conn = None


class Daemon:
    """Reconcile, watch, store and embed until :meth:`stop` is called."""

    def __init__(
        self,
        config: Config,
        *,
        embedder_factory: Callable[[], Any] | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.config = config
        self._stopping = threading.Event()
        self.notifier = notifier or SystemdNotifier()
        self.retry = RetryPolicy(deadline_s=None, cancel=self._stopping, on_wait=self.notifier.heartbeat)
        # Two connections more than one-shot commands: the query service's threads.
        self.db = Database(config.database, retry=self.retry, max_connections=8, source=config.source.name)
        self._embedder_factory = embedder_factory or self._load_embedder
        self.embedder: Any = None
        self.query_service: QueryService | None = None
        self._embed_wanted = threading.Event()
        self._embedder_thread: threading.Thread | None = None
        self.ready = threading.Event()
        self.embedder_ready = threading.Event()
        self.failure: BaseException | None = None
        self._mirror: SourceMirror | None = None  # [mirror]: agent session logs mirrored into folders
        self._model_lock = threading.Lock()  # [embedding] local = false: the search model's lazy load

    # -- lifecycle -------------------------------------------------------------

    def stop(self) -> None:
        """Ask the daemon to stop; safe from a signal handler or another thread."""
        self._stopping.set()
        self._embed_wanted.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self) -> None:
        """Run until stopped.  Raises AlreadyRunning if another daemon holds the database."""
        started = time.monotonic()
        try:
            self.db.open()
        except DatabaseUnavailable:
            if self.stopping:
                return
            raise
        lock = DaemonLock(self.db.dsn, self.config.source.name)
        try:
            self.retry.call(lock.acquire)
            watch = self.config.watch
            with (
                FolderWatcher(
                    self.config.paths.conversations,
                    self.config.paths.summaries,
                    debounce_s=watch.debounce_ms / 1000,
                    max_wait_s=watch.max_wait_ms / 1000,
                ) as watcher,
                SourceMirror(self.config, debounce_s=watch.debounce_ms / 1000) as mirror,
            ):
                self._mirror = mirror
                self._embedder_thread = threading.Thread(target=self._embed_loop, name="memoryd-embedder", daemon=True)
                self._embedder_thread.start()
                self._start_query_service()
                log.info(
                    "daemon_started", database=self.db.display_dsn, pid=os.getpid(), source=self.config.source.name
                )
                self._loop(watcher, lock, started)
            if self.failure is not None:
                raise EmbedError(f"the embedder failed: {self.failure}") from self.failure
        except (Cancelled, DatabaseUnavailable):
            if not self.stopping:
                raise
        finally:
            self.notifier.stopping()
            self.stop()
            if self.query_service is not None:
                self.query_service.stop()
            if self._embedder_thread is not None:
                self._embedder_thread.join()
            lock.release()
            self.db.close()
            log.info("daemon_stopped")

    # -- main thread -------------------------------------------------------------

    def _loop(self, watcher: FolderWatcher, lock: DaemonLock, started: float) -> None:
        syncer = Syncer(self.db, self.config)
        self._reconcile(syncer)
        self.ready.set()
        status = self._status_line()
        self.notifier.ready(status)
        log.info("daemon_ready", seconds=round(time.monotonic() - started, 2), status=status)
        next_rescan = time.monotonic() + self.config.watch.rescan_interval_s
        while not self.stopping:
            self.notifier.heartbeat()
            batch = watcher.get(timeout=max(0.0, min(1.0, next_rescan - time.monotonic())))
            if self.stopping:
                break
            self.retry.call(lock.check)
            if batch is not None and batch.slugs:
                wrote = 0
                for slug in batch.slugs:
                    if self.stopping:
                        break
                    wrote += self._sync_one(syncer, slug, growing=slug in batch.growing)
                if wrote:
                    self._embed_wanted.set()
                    self.notifier.status(self._status_line())
            if self._mirror is not None:
                self._mirror.poll()  # folders it writes come back as watcher batches
            if (batch is not None and batch.rescan) or time.monotonic() >= next_rescan:
                self._reconcile(syncer)
                next_rescan = time.monotonic() + self.config.watch.rescan_interval_s

    def _sync_one(self, syncer: Syncer, slug: str, *, growing: bool = False) -> int:
        report = syncer.reconcile(
            slugs=[slug], should_stop=lambda: self.stopping, log_summary=False, growing=(slug,) if growing else ()
        )
        return report.wrote

    def _reconcile(self, syncer: Syncer) -> None:
        if self._mirror is not None:
            self._mirror.mirror_all()
        report = syncer.reconcile(should_stop=lambda: self.stopping, progress=lambda *_: self.notifier.heartbeat())
        pruned = self.db.run(store.prune_vector_cache)
        if pruned:
            log.info("vector_cache_pruned", vectors=pruned)
        # Also when nothing was written: whatever a crash left pending is picked up.
        self._embed_wanted.set()
        log.debug("reconcile_done", wrote=report.wrote)
        self.notifier.status(self._status_line())

    def _status_line(self) -> str:
        data = self.db.run(store.counts, self.config.embedding.model)
        return (
            f"{data['conversations']} conversations, {data['messages']} messages, {data['summaries']} summaries,"
            f" {data['pending_embeddings']} pending embeddings"
        )

    # -- query service ---------------------------------------------------------------

    def _start_query_service(self) -> None:
        """Answer searches on the Unix socket with this daemon's database and model; a failure only warns."""
        if not self.config.service.enabled:
            return
        memory = LocalMemory(
            self.config,
            self.db,
            embedder=self._query_embedder,
            via="service",
            retry=RetryPolicy(deadline_s=QUERY_DB_DEADLINE_S),
        )
        service = QueryService(memory, socket_path(self.config), model_ready=self.embedder_ready)
        if service.start():
            self.query_service = service

    def _query_embedder(self) -> Any:
        """The daemon's own model, once loaded: a search never loads a second copy."""
        if not self.config.embedding.local:
            return self._search_only_embedder()
        if not self.embedder_ready.wait(QUERY_MODEL_WAIT_S) or self.embedder is None:
            reason = f"the embedder failed: {self.failure}" if self.failure else "the model is still loading"
            raise DatabaseUnavailable(f"{reason}; text search (mode text) works meanwhile")
        return self.embedder

    def _search_only_embedder(self) -> Any:
        """``[embedding] local = false``: the model only encodes queries, loaded by the first search that needs it.

        Lazily, so that a daemon whose searches are by words, or that nobody
        asks, never holds the model; that first search waits for the load
        (about a second for a remembered ONNX precision).
        """
        with self._model_lock:
            if self.embedder is None:
                self.embedder = self._embedder_factory()
                self.embedder_ready.set()
            return self.embedder

    def _leave_embedding_to_workers(self) -> None:
        """The embedder thread with ``[embedding] local = false``: no embedding; unload an idle search model."""
        pending = self.db.run(store.count_pending, self.config.embedding.model)
        log.info("embedding_left_to_workers", model=self.config.embedding.model, pending=pending)
        idle_unload_s = self.config.embedding.idle_unload_s
        while not self._stopping.wait(timeout=min(30.0, idle_unload_s or 30.0)):
            if self.embedder is not None:
                self.embedder.release_if_idle()

    # -- embedder thread -----------------------------------------------------------

    def _load_embedder(self) -> Any:
        from memoryd.embed import Embedder

        return Embedder(self.config.embedding)

    def _embed_loop(self) -> None:
        from memoryd.embed import embed_pending, release_memory

        try:
            # The model loads once the first reconcile is done, not beside it: both
            # want the CPUs (and the GIL), and a reconcile of an unchanged
            # 20,000-folder tree took 5 s instead of 1-2 s while the model loaded
            # (issue 14).  READY never waits on the model; nothing is pending
            # for it before the reconcile has stored something anyway.
            while not self.ready.wait(0.5):
                if self.stopping:
                    return
            if not self.config.embedding.local:
                self._leave_embedding_to_workers()
                return
            embedder = self.embedder = self._embedder_factory()
            self.embedder_ready.set()
            idle_unload_s = self.config.embedding.idle_unload_s
            while not self.stopping:
                self._embed_wanted.wait(timeout=min(30.0, idle_unload_s or 30.0))
                self._embed_wanted.clear()
                if self.stopping:
                    break
                if embed_pending(self.db, embedder, should_stop=lambda: self.stopping).texts:
                    release_memory()  # the batches' buffers, freed but still held by the C heap
                embedder.release_if_idle()  # [embedding] idle_unload_s; a no-op by default
        except (Cancelled, DatabaseUnavailable):
            if not self.stopping:
                raise
        except BaseException as exc:  # a dead embedder must stop the daemon, not hide
            self.failure = exc
            log.exception("embedder_failed")
            self.stop()
