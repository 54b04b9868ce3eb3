"""``memoryd embed --follow``: an embedding worker that runs until stopped, on any machine that reaches the database.

It loads the model once, embeds what is pending (``embed.embed_pending``:
claims with ``FOR UPDATE SKIP LOCKED``, so several workers share the work and
never encode the same row twice), then waits.  It wakes on a notification
(``pending.CHANNEL``, sent by a trigger whenever a text is stored) and polls
anyway: every ``[embedding] worker_poll_s`` seconds when nothing was left,
and sooner, backing off from one second, while texts remain pending that
other workers hold (their claims come back to the queue if they die, with no
notification).  A lost notification or listening connection therefore
delays a text by at most ``worker_poll_s``.

Every database call goes through the daemon's retry policy (forever, with
interruptible waits): a worker outlives database restarts.  :meth:`stop`
(SIGTERM, SIGINT) lets the batches in flight finish and claims nothing new;
a worker killed outright loses only its open transactions, whose claims
PostgreSQL releases.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from memoryd.config import Config
from memoryd.db import Database, RetryPolicy
from memoryd.errors import Cancelled, DatabaseUnavailable
from memoryd.pending import CHANNEL, PendingListener
from memoryd.store import count_pending
from memoryd.systemd import SystemdNotifier

if TYPE_CHECKING:
    from memoryd.embed import Embedder

log = structlog.get_logger(__name__)

# The first re-poll while other workers hold pending texts; doubled up to worker_poll_s.
MIN_POLL_S = 1.0
# Connections: two transactions in flight (embed.TRANSACTIONS_IN_FLIGHT) and a count; LISTEN has its own.
_POOL_CONNECTIONS = 3


@dataclass
class WorkerReport:
    """What a worker did before it stopped."""

    texts: int = 0
    chunks: int = 0
    encoded: int = 0
    runs: int = 0  # passes over the queue that embedded something


class EmbedWorker:
    """Embed pending texts for ``config.embedding.model`` until :meth:`stop` is called."""

    def __init__(
        self,
        config: Config,
        *,
        embedder_factory: Callable[[], Embedder] | None = None,
        progress: Callable[[int, int], None] | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        """``progress(texts_done, texts_pending)`` is called after each batch and when idle (a terminal's bar).

        Under systemd (``memoryd install-service --worker``) the worker says
        READY=1 once its model is loaded, STATUS= lines when idle, and sends
        WATCHDOG=1 heartbeats between batches and while waiting.
        """
        self.config = config
        self._stopping = threading.Event()
        self.notifier = notifier or SystemdNotifier()
        self.retry = RetryPolicy(deadline_s=None, cancel=self._stopping, on_wait=self.notifier.heartbeat)
        self.db = Database(
            config.database, retry=self.retry, max_connections=_POOL_CONNECTIONS, source=config.source.name
        )
        self._embedder_factory = embedder_factory or self._load_embedder
        self._progress = progress
        self.report = WorkerReport()
        self.started = threading.Event()
        self._pass_texts = 0

    def stop(self) -> None:
        """Finish the batches in flight, claim nothing new, return from :meth:`run`; safe from a signal handler."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self) -> WorkerReport:
        """Work until stopped.  Raises DatabaseUnavailable only for a database that never answered before a stop."""
        begun = time.monotonic()
        try:
            self.db.open()
        except (Cancelled, DatabaseUnavailable):
            if self.stopping:
                return self.report
            raise
        listener: PendingListener | None = None
        try:
            embedder = self._embedder_factory()
            listener = PendingListener(self.db.dsn, embedder.name)
            listener.connect()  # a failure is logged; the loop reconnects, and polls meanwhile
            log.info(
                "worker_started",
                model=embedder.name,
                device=embedder.device,
                precision=embedder.precision,
                channel=CHANNEL,
                poll_s=self.config.embedding.worker_poll_s,
                database=self.db.display_dsn,
                application_name=listener.app_name,
            )
            self.started.set()
            self.notifier.ready(f"model {embedder.name} loaded on {embedder.device}")
            self._loop(embedder, listener)
        except Cancelled:
            if not self.stopping:
                raise
        finally:
            self.notifier.stopping()
            if listener is not None:
                listener.close()
            self.db.close()
            log.info(
                "worker_stopped",
                texts=self.report.texts,
                encoded=self.report.encoded,
                chunks=self.report.chunks,
                seconds=round(time.monotonic() - begun, 1),
            )
        return self.report

    def _loop(self, embedder: Embedder, listener: PendingListener) -> None:
        from memoryd.embed import embed_pending, release_memory

        poll_s = float(self.config.embedding.worker_poll_s)
        backoff_s = MIN_POLL_S
        idle = False
        while not self.stopping:
            self._pass_texts = 0
            run = embed_pending(self.db, embedder, should_stop=lambda: self.stopping, progress=self._step)
            self.report.texts += run.texts
            self.report.chunks += run.chunks
            self.report.encoded += run.encoded
            if self.stopping:
                break
            if run.texts:
                self.report.runs += 1
                idle = False
                release_memory()  # the batches' buffers, freed but still held by the C heap
            # Left pending: texts other workers hold (their claims come back if they die,
            # without a notification), or stored since the last claim (a notification comes).
            left = self.db.run(count_pending, embedder.name)
            if self._progress is not None:
                self._progress(self.report.texts, left)
            self.notifier.status(f"{self.report.texts} texts embedded, {left} pending")
            if left:
                timeout, backoff_s = backoff_s, min(backoff_s * 2, poll_s)
            else:
                timeout, backoff_s = poll_s, MIN_POLL_S
                if not idle:
                    log.info("worker_idle", texts=self.report.texts, poll_s=poll_s)
                    idle = True
            embedder.release_if_idle()  # [embedding] idle_unload_s; a no-op by default
            woken = listener.wait(timeout, self._stopping, tick=self.notifier.heartbeat)
            log.debug("worker_woken", reason=woken, pending=left)

    def _step(self, texts: int) -> None:
        """embed_pending's progress: ``texts`` more done in this pass."""
        self._pass_texts += texts
        self.notifier.heartbeat()
        if self._progress is not None:
            self._progress(self.report.texts + self._pass_texts, -1)

    def _load_embedder(self) -> Embedder:
        from memoryd.embed import Embedder

        return Embedder(self.config.embedding)
