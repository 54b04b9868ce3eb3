"""What the benchmarks share: a database to run on and a timer."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from memoryd.config import Config

# Database imports stay inside the functions that need them, so that timing
# helpers also serve bench/embed.py on a machine without PostgreSQL's client.


@contextlib.contextmanager
def server_dsn() -> Iterator[str]:
    """``MEMORYD_BENCH_DSN`` (a superuser DSN) or a throw-away embedded server."""
    from memoryd.db import EmbeddedServer

    if os.environ.get("MEMORYD_BENCH_DSN"):
        yield os.environ["MEMORYD_BENCH_DSN"]
        return
    parent = Path(tempfile.mkdtemp(prefix="memoryd-bench-pg-"))
    server = EmbeddedServer(parent / "data")
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(parent, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(admin_dsn: str) -> Iterator[str]:
    """An empty database of its own, dropped afterwards."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = f"memoryd_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(admin_dsn, dbname=name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def tree_config(root: Path, dsn: str) -> Config:
    """The configuration of a generated tree (``root/conversations``, ``root/summaries``) on database ``dsn``."""
    from memoryd.config import Config, DatabaseConfig, PathsConfig

    return Config(
        paths=PathsConfig(conversations=root / "conversations", summaries=root / "summaries"),
        database=DatabaseConfig(dsn=dsn),
    )


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    box: list[float] = []
    started = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - started)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
