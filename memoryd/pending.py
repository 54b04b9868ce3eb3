"""The queue of texts waiting for vectors, as workers see it: its NOTIFY channel, a listener, who listens.

Pending texts are rows without embeddings for a model (``store.claim_pending``
claims them); this module only tells workers when to look.  Migration
``007_pending_notify`` makes every insert of a message or summary
``pg_notify`` the channel :data:`CHANNEL`, whoever the writer is.  A listener
holds one connection of its own (autocommit, ``LISTEN``), named
``memoryd worker ...`` so that ``memoryd status`` can count the workers
connected to a database.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from typing import Any, Literal

import psycopg
import structlog

log = structlog.get_logger(__name__)

CHANNEL = "memoryd_pending"
# application_name of a worker's listening connection; `memoryd status` counts them.
WORKER_APP_PREFIX = "memoryd worker"
# A wait for a notification is cut into slices this long, so that a stop request
# (a signal handler setting an event) is seen within this time.
_STOP_CHECK_S = 0.5

WaitResult = Literal["notified", "timeout", "stopped", "lost"]


def worker_app_name(model: str) -> str:
    """The ``application_name`` a worker's listening connection shows in ``pg_stat_activity``."""
    name = f"{WORKER_APP_PREFIX} model={model} host={socket.gethostname()} pid={os.getpid()}"
    return name[:63]  # PostgreSQL truncates application_name at NAMEDATALEN - 1 bytes


class PendingListener:
    """One ``LISTEN`` connection; :meth:`wait` returns when texts may be pending.

    A lost connection (database restart, network) is reported once as
    ``worker_listen_lost`` and reconnected at the next wait; notifications sent
    meanwhile are lost, which the caller covers by polling (and by looking
    once right after a reconnect: :meth:`wait` then answers "lost").
    """

    def __init__(self, dsn: str, model: str) -> None:
        self.dsn = dsn
        self.app_name = worker_app_name(model)
        self.conn: psycopg.Connection[Any] | None = None
        self._lost = False

    def connect(self) -> bool:
        """(Re)connect and LISTEN; False, without raising, when the database does not answer."""
        self.close()
        try:
            conn = psycopg.connect(self.dsn, autocommit=True, application_name=self.app_name, connect_timeout=10)
            conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            self._note_lost(exc)
            return False
        self.conn = conn
        if self._lost:
            log.info("worker_listening", channel=CHANNEL, reconnected=True)
        self._lost = False
        return True

    def wait(self, timeout: float, stop: threading.Event, tick: Callable[[], None] | None = None) -> WaitResult:
        """Wait up to ``timeout`` seconds for a notification; ``tick()`` about every half second (a watchdog).

        "notified": one came (all queued ones are drained); "timeout": none
        came; "stopped": ``stop`` was set; "lost": the connection was lost or
        just came back (look now: notifications may have been missed).
        """
        if self.conn is None or self.conn.closed:
            if not self.connect():
                return "stopped" if stop.wait(timeout) else "lost"
            return "lost"
        remaining = timeout
        try:
            while remaining > 0 and not stop.is_set():
                if tick is not None:
                    tick()
                step = min(_STOP_CHECK_S, remaining)
                remaining -= step
                received = 0
                for _ in self.conn.notifies(timeout=step, stop_after=1):
                    received += 1
                if received:
                    self._drain()
                    return "notified"
        except psycopg.Error as exc:
            self._note_lost(exc)
            self.close()
            return "lost"
        return "stopped" if stop.is_set() else "timeout"

    def _drain(self) -> None:
        """Consume notifications already received: one wake-up covers them all."""
        assert self.conn is not None
        for _ in self.conn.notifies(timeout=0.0):
            pass

    def _note_lost(self, exc: BaseException) -> None:
        if not self._lost:
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            log.warning("worker_listen_lost", channel=CHANNEL, error=first)
        self._lost = True

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def connected_workers(conn: psycopg.Connection[Any]) -> list[str]:
    """The ``application_name`` of every worker listening on this database (``memoryd status``)."""
    rows = conn.execute(
        "SELECT application_name FROM pg_stat_activity"
        " WHERE datname = current_database() AND starts_with(application_name, %s) ORDER BY application_name",
        (WORKER_APP_PREFIX,),
    ).fetchall()
    return [str(row[0]) for row in rows]
