"""Sources: several machines share one database; each syncs, locks and deletes only its own conversations."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from memoryd import store
from memoryd.api import LocalMemory, Memory, SearchRequest
from memoryd.config import Config, PathsConfig, SourceConfig, WatchConfig
from memoryd.db import Database, RetryPolicy, apply_migrations, migrations_dir
from memoryd.errors import InvalidRequest, NotFound
from memoryd.filters import SearchFilters
from memoryd.search import SearchQuery, _prepare_vector
from memoryd.sync import Syncer
from tests.conftest import write_conversation, write_summaries


def _as_source(config: Config, name: str, root: Path) -> Config:
    """``config`` for another machine: its own source name and its own folders under ``root``."""
    (root / "conversations").mkdir(parents=True, exist_ok=True)
    (root / "summaries").mkdir(parents=True, exist_ok=True)
    return replace(
        config,
        source=SourceConfig(name=name),
        paths=PathsConfig(conversations=root / "conversations", summaries=root / "summaries"),
    )


def _sync(config: Config) -> None:
    with Database(config.database, retry=RetryPolicy(deadline_s=10.0), source=config.source.name) as db:
        Syncer(db, config).reconcile()


def _memoryd(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``memoryd`` command, with this configuration file and none of the developer's MEMORYD_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMORYD_")}
    return subprocess.run(
        [sys.executable, "-m", "memoryd.cli", "--config", str(config_file), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _rows(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return [tuple(row) for row in conn.execute(query, params)]


@pytest.fixture
def laptop(config: Config, tmp_path: Path) -> Config:
    return _as_source(config, "laptop", tmp_path / "laptop")


@pytest.fixture
def desktop(config: Config, tmp_path: Path) -> Config:
    return _as_source(config, "desktop", tmp_path / "desktop")


# -- one database, two sources ---------------------------------------------------


def test_same_slug_in_two_sources_is_two_conversations(laptop: Config, desktop: Config, db_dsn: str) -> None:
    """A slug is unique per source: each machine stores, edits and deletes its own, the other's stays."""
    write_conversation(laptop.paths.conversations, "2025-01-01__plan", [("user", "laptop plan"), ("assistant", "ok")])
    write_conversation(desktop.paths.conversations, "2025-01-01__plan", [("user", "desktop plan")])
    _sync(laptop)
    _sync(desktop)
    rows = "SELECT c.source, c.slug, count(m.id) FROM conversations c JOIN messages m ON m.conversation_id = c.id"
    rows += " GROUP BY c.source, c.slug ORDER BY c.source"
    assert _rows(db_dsn, rows) == [("desktop", "2025-01-01__plan", 1), ("laptop", "2025-01-01__plan", 2)]
    shutil.rmtree(laptop.paths.conversations / "2025-01-01__plan")
    _sync(laptop)
    assert _rows(db_dsn, rows) == [("desktop", "2025-01-01__plan", 1)]
    assert _rows(db_dsn, "SELECT source, slug FROM folder_state") == [("desktop", "2025-01-01__plan")]


def test_one_shot_ingest_of_an_empty_second_source_deletes_nothing(
    laptop: Config, desktop: Config, db_dsn: str, tmp_path: Path
) -> None:
    """`memoryd ingest` from another source with an empty folder and on_delete = "delete" leaves the first intact."""
    for n in range(3):
        write_conversation(laptop.paths.conversations, f"2025-02-0{n + 1}__note", [("user", f"note {n}")])
    write_summaries(laptop.paths.summaries, "2025-02-01__note", [{"level": 1, "covers": [0], "content": "a note"}])
    _sync(laptop)
    before = _rows(db_dsn, "SELECT source, slug, content_hash FROM conversations ORDER BY slug")
    counts = "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM summaries),"
    counts += " (SELECT count(*) FROM folder_state)"
    assert _rows(db_dsn, counts) == [(3, 1, 3)]
    assert desktop.watch.on_delete == "delete"
    config_file = tmp_path / "desktop.toml"
    config_file.write_text(
        f'[paths]\nconversations = "{desktop.paths.conversations}"\nsummaries = "{desktop.paths.summaries}"\n'
        f'[database]\ndsn = "{db_dsn}"\n[watch]\non_delete = "delete"\n[source]\nname = "desktop"\n',
        encoding="utf-8",
    )
    result = _memoryd(config_file, "ingest")
    assert result.returncode == 0, result.stderr
    assert "ingested: 0 slug(s) checked, 0 changed" in result.stdout
    assert _rows(db_dsn, "SELECT source, slug, content_hash FROM conversations ORDER BY slug") == before
    assert _rows(db_dsn, counts) == [(3, 1, 3)]
    assert {row[0] for row in before} == {"laptop"}


def test_problems_and_standing_errors_are_per_source(laptop: Config, desktop: Config, db_dsn: str) -> None:
    """A bad file is recorded under its source: the other source's ingest neither reports nor clears it."""
    bad = laptop.paths.conversations / "2025-03-01__bad"
    bad.mkdir()
    (bad / "messages.jsonl").write_text("{not json\n", encoding="utf-8")
    _sync(laptop)
    _sync(desktop)
    assert [row[:2] for row in _rows(db_dsn, "SELECT source, slug, path FROM ingest_errors")] == [
        ("laptop", "2025-03-01__bad")
    ]
    with Database(desktop.database, source="desktop") as db:
        assert Syncer(db, desktop).standing_errors() == []
    with Database(laptop.database, source="laptop") as db:
        assert [path for path, _ in Syncer(db, laptop).standing_errors()] == [str(bad / "messages.jsonl")]


def test_verify_compares_only_its_own_source(laptop: Config, desktop: Config) -> None:
    """`memoryd verify` compares its own source only: another machine's conversations are not counted, nor drift."""
    from memoryd.verify import verify

    write_conversation(desktop.paths.conversations, "2025-03-02__elsewhere", [("user", "on the desktop")])
    write_conversation(laptop.paths.conversations, "2025-03-02__here", [("user", "on the laptop")])
    _sync(desktop)
    _sync(laptop)
    with Database(laptop.database, source="laptop") as db:
        report = verify(db, laptop)
    assert (report.slugs, report.conversations, report.messages) == (1, 1, 1)
    assert {slug: drift.pending_vectors for slug, drift in report.drift.items()} == {"2025-03-02__here": 1}


def test_slug_locks_are_per_source(db: Database) -> None:
    """Two sources lock the same slug independently; one source's writers of a slug still serialise."""
    assert store._slug_lock_key("laptop", "s") != store._slug_lock_key("desktop", "s")
    with db.connection() as first, db.connection() as second:
        store.lock_slug(first, "laptop", "s")
        store.lock_slug(second, "desktop", "s")  # would wait forever if the key ignored the source
        second.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            store.lock_slug(second, "laptop", "s")


# -- search and reading across sources ---------------------------------------------


def test_search_covers_every_source_and_source_narrows_it(laptop: Config, desktop: Config) -> None:
    """Hits name their source; without --source both sources are searched, with it only those named."""
    write_conversation(laptop.paths.conversations, "2025-04-01__boat", [("user", "the sailboat keel needs varnish")])
    write_conversation(desktop.paths.conversations, "2025-04-01__boat", [("user", "sailboat mast and its varnish")])
    _sync(laptop)
    _sync(desktop)
    with Database(laptop.database, source="laptop") as db:
        memory = LocalMemory(laptop, db)
        everywhere = memory.search(SearchRequest("varnish", mode="text"))
        assert sorted((h.source, h.slug) for h in everywhere) == [
            ("desktop", "2025-04-01__boat"),
            ("laptop", "2025-04-01__boat"),
        ]
        only = memory.search(SearchRequest.build("varnish", mode="text", sources="desktop"))
        assert [(h.source, h.text) for h in only] == [("desktop", "sailboat mast and its varnish")]
        assert only[0].to_dict()["source"] == "desktop"
        both = memory.search(SearchRequest.build("varnish", mode="text", sources=["desktop", "laptop"], slugs=["x"]))
        assert both == []
        slugged = memory.search(
            SearchRequest.build("varnish", mode="text", sources=["laptop"], slugs=["2025-04-01__boat"])
        )
        assert [h.source for h in slugged] == ["laptop"]
        assert memory.search(SearchRequest.build("varnish", mode="text", sources=["nowhere"])) == []


def test_search_source_filter_in_the_vector_scans(laptop: Config, desktop: Config, embedder: Any) -> None:
    """By meaning too, --source keeps only that source's texts, through the index scan and the exact one."""
    write_conversation(laptop.paths.conversations, "2025-05-01__cat", [("user", "my cat sleeps all day")])
    write_conversation(desktop.paths.conversations, "2025-05-01__cat", [("user", "the kitten naps on the sofa")])
    _sync(laptop)
    _sync(desktop)
    from memoryd.embed import embed_pending

    with Database(laptop.database, source="laptop") as db:
        embed_pending(db, embedder)
        memory = LocalMemory(laptop, db, embedder=lambda: embedder)
        for mode in ("vector", "hybrid"):
            hits = memory.search(SearchRequest.build("a sleepy cat", mode=mode, sources=["desktop"]))
            assert {h.source for h in hits} == {"desktop"}, mode
            assert len(memory.search(SearchRequest.build("a sleepy cat", mode=mode))) == 2
        query = SearchQuery("a sleepy cat", embedder.encode_queries(["a sleepy cat"])[0], embedder.name, embedder.dim)
        with db.connection() as conn:
            desktop_id = conn.execute(
                "SELECT m.id FROM messages m JOIN conversations c ON c.id = m.conversation_id"
                " WHERE c.source = 'desktop'"
            ).fetchall()
            for exact in (False, True):
                statement, params = _prepare_vector(conn, query, SearchFilters(sources=("desktop",)), 10, exact=exact)
                assert [(row[0], row[1]) for row in conn.execute(statement, params)] == [
                    ("message", desktop_id[0][0])
                ], exact


def test_conversation_by_slug_shared_by_two_sources(laptop: Config, desktop: Config) -> None:
    """A slug two sources hold needs source=: without it InvalidRequest names both; with it, that one."""
    write_conversation(laptop.paths.conversations, "2025-06-01__same", [("user", "from the laptop")])
    write_conversation(desktop.paths.conversations, "2025-06-01__same", [("user", "from the desktop")])
    write_conversation(desktop.paths.conversations, "2025-06-02__only", [("user", "desktop only")])
    _sync(laptop)
    _sync(desktop)
    with Memory.open(laptop, service=False) as memory:
        with pytest.raises(InvalidRequest, match=r"'2025-06-01__same' exists in several sources \(desktop, laptop\)"):
            memory.conversation("2025-06-01__same")
        view = memory.conversation("2025-06-01__same", source="desktop")
        assert (view.info.source, view.turns[0].text) == ("desktop", "from the desktop")
        assert memory.conversation("2025-06-02__only").info.source == "desktop"
        with pytest.raises(NotFound, match="no conversation '2025-06-02__only' in source 'laptop'"):
            memory.conversation("2025-06-02__only", source="laptop")
        status = memory.status()
        assert status["source"] == "laptop"
        assert status["sources"] == [{"name": "desktop", "conversations": 2}, {"name": "laptop", "conversations": 1}]


def test_status_names_the_source(db_dsn: str, tmp_path: Path) -> None:
    """`memoryd status` prints this machine's source, marks another source's problems, and --json carries both."""
    with psycopg.connect(db_dsn) as conn:
        store.record_problems(conn, "desktop", "s", {"/d/s/messages.jsonl": ("error", "bad line")})
    config_file = tmp_path / "laptop.toml"
    config_file.write_text(f'[database]\ndsn = "{db_dsn}"\n[source]\nname = "laptop"\n', encoding="utf-8")
    text = _memoryd(config_file, "status", "--in-process")
    assert text.returncode == 0, text.stderr
    assert "source:         laptop\n" in text.stdout
    assert "  error: /d/s/messages.jsonl [source desktop]: bad line" in text.stdout
    as_json = json.loads(_memoryd(config_file, "status", "--in-process", "--json").stdout)
    assert as_json["source"] == "laptop"
    assert [p["source"] for p in as_json["problems"]] == ["desktop"]


# -- the upgrade ------------------------------------------------------------------------


def _fill_as_release_004(conn: psycopg.Connection[Any]) -> None:
    """What the code before sources wrote: conversations, messages, summaries, vectors, folder states, errors."""
    for n in range(5):
        slug = f"2024-0{n + 1}-01__old_{n}"
        (conv_id,) = conn.execute(
            "INSERT INTO conversations (slug, title, created_date, total_chars, total_lines, source_path,"
            " source_format, content_hash) VALUES (%s, %s, %s, 10, 2, %s, 'jsonl', %s) RETURNING id",
            (slug, f"Old {n}", f"2024-0{n + 1}-01", f"/home/u/conversations/{slug}/messages.jsonl", f"hash{n}"),
        ).fetchone()
        for seq in range(3):
            (message_id,) = conn.execute(
                "INSERT INTO messages (conversation_id, seq, role, ts, content, content_hash)"
                " VALUES (%s, %s, 'user', '2024-01-01T10:00:00Z', %s, %s) RETURNING id",
                (conv_id, seq, f"message {seq} of {n}", f"m{n}-{seq}"),
            ).fetchone()
            conn.execute(
                "INSERT INTO embeddings (conversation_id, ref_type, message_id, chunk, chunk_start, chunk_end, model,"
                " dim, vector, content_hash) VALUES (%s, 'message', %s, 0, 0, 12, 'm', 3, '[1,0,0]', %s)",
                (conv_id, message_id, f"m{n}-{seq}"),
            )
        conn.execute(
            "INSERT INTO summaries (conversation_id, level, key, covers, content, char_count, content_hash,"
            " source_path) VALUES (%s, 1, 'k', '[0, 1]', 'a summary', 9, %s, '/s')",
            (conv_id, f"s{n}"),
        )
        conn.execute("INSERT INTO folder_state (slug, conversation_fingerprint) VALUES (%s, 'fp')", (slug,))
    conn.execute("INSERT INTO folder_state (slug, summaries_fingerprint) VALUES ('2024-09-09__waiting', 'sfp')")
    conn.execute(
        "INSERT INTO ingest_errors (path, slug, error) VALUES ('/home/u/conversations/bad/x.jsonl', 'bad', 'oops')"
    )


_SNAPSHOT = {
    "conversations": "SELECT id, slug, title, content_hash FROM conversations ORDER BY id",
    "messages": "SELECT id, conversation_id, seq, content FROM messages ORDER BY id",
    "summaries": "SELECT id, conversation_id, level, key, content FROM summaries ORDER BY id",
    "embeddings": "SELECT id, message_id, vector::text FROM embeddings ORDER BY id",
    "folder_state": "SELECT slug, conversation_fingerprint, summaries_fingerprint FROM folder_state ORDER BY slug",
    "ingest_errors": "SELECT path, slug, error FROM ingest_errors ORDER BY path",
}


_KEPT = {
    "conversations": "SELECT id, slug, title, source FROM conversations ORDER BY id",
    "messages": _SNAPSHOT["messages"],
    "summaries": _SNAPSHOT["summaries"],
}


def test_upgrade_from_004_keeps_every_row_and_gives_it_to_the_upgrading_source(
    empty_dsn: str, tmp_path: Path, laptop: Config
) -> None:
    """A database at migration 004, filled as the release before sources did, migrates without losing a row.

    After 005 every conversation, folder state and error is as it was and
    belongs to the source of the process that applied it; the later
    migrations claim nothing again, and a second source deletes none of them.
    """
    old, upto_005 = tmp_path / "sql-004", tmp_path / "sql-005"
    old.mkdir()
    upto_005.mkdir()
    for path in sorted(migrations_dir().glob("00[1-5]_*.sql")):
        shutil.copy(path, upto_005 / path.name)
        if not path.name.startswith("005"):
            shutil.copy(path, old / path.name)
    with psycopg.connect(empty_dsn) as conn:
        assert apply_migrations(conn, old) == ["001_init", "002_fulltext", "003_vector_cache", "004_message_day"]
        _fill_as_release_004(conn)
        conn.commit()
        before = {table: conn.execute(query).fetchall() for table, query in _SNAPSHOT.items()}
        assert apply_migrations(conn, upto_005, source="laptop") == ["005_sources"]
        assert {table: conn.execute(query).fetchall() for table, query in _SNAPSHOT.items()} == before
        assert conn.execute("SELECT DISTINCT source FROM conversations").fetchall() == [("laptop",)]
        assert conn.execute("SELECT DISTINCT source FROM folder_state").fetchall() == [("laptop",)]
        assert conn.execute("SELECT DISTINCT source FROM ingest_errors").fetchall() == [("laptop",)]
        later = apply_migrations(conn, source="desktop")  # the migrations after 005, if any
        assert "005_sources" not in later
        assert conn.execute("SELECT DISTINCT source FROM conversations").fetchall() == [("laptop",)]
        # Later migrations may mark rows for a re-read (006 prefixes hashes): the rows themselves stay.
        kept = {table: conn.execute(query).fetchall() for table, query in _KEPT.items()}
        assert kept["conversations"] == [(*row[:3], "laptop") for row in before["conversations"]]
        assert (kept["messages"], kept["summaries"]) == (before["messages"], before["summaries"])
    desktop = _as_source(replace(laptop, database=replace(laptop.database, dsn=empty_dsn)), "desktop", tmp_path / "d")
    desktop = replace(desktop, watch=WatchConfig(on_delete="delete"))
    _sync(desktop)
    with psycopg.connect(empty_dsn) as conn:
        assert {table: conn.execute(query).fetchall() for table, query in _KEPT.items()} == kept
        assert conn.execute("SELECT count(*) FROM folder_state WHERE source = 'laptop'").fetchone() == (6,)


def test_migration_without_a_source_setting_refuses_to_guess(empty_dsn: str) -> None:
    """005 applied by hand, with rows and no memoryd.source set, fails instead of inventing an owner."""
    with psycopg.connect(empty_dsn) as conn:
        for path in sorted(migrations_dir().glob("00[1-4]_*.sql")):
            conn.execute(path.read_text(encoding="utf-8").encode())
        _fill_as_release_004(conn)
        with pytest.raises(psycopg.errors.UndefinedObject, match=r"memoryd\.source"):
            conn.execute((migrations_dir() / "005_sources.sql").read_text(encoding="utf-8").encode())


# -- the daemon lock -------------------------------------------------------------------


def _watch(config_file: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMORYD_") and k != "NOTIFY_SOCKET"}
    env["MEMORYD_CONFIG"] = str(config_file)
    return subprocess.Popen([sys.executable, "-m", "memoryd.cli", "watch"], env=env, stderr=subprocess.PIPE, text=True)


def _wait_ready(process: subprocess.Popen[str]) -> None:
    assert process.stderr is not None
    for line in process.stderr:
        if '"daemon_ready"' in line:
            return
    raise AssertionError(f"daemon exited with {process.wait()} before it was ready")


def _daemon_config(tmp_path: Path, name: str, source: str, dsn: str) -> Path:
    root = tmp_path / name
    (root / "conversations").mkdir(parents=True)
    (root / "summaries").mkdir()
    path = root / "memoryd.toml"
    path.write_text(
        f'[paths]\nconversations = "{root / "conversations"}"\nsummaries = "{root / "summaries"}"\n'
        f'[database]\ndsn = "{dsn}"\n[source]\nname = "{source}"\n[service]\nenabled = false\n'
        '[embedding]\nprecision = "fp32"\n[log]\nformat = "json"\n',
        encoding="utf-8",
    )
    return path


@pytest.mark.slow
def test_daemons_of_two_sources_run_side_by_side_and_two_of_one_do_not(tmp_path: Path, db_dsn: str) -> None:
    """Two real `memoryd watch` of different sources share a database; a second one of a source exits 4 naming it."""
    laptop = _watch(_daemon_config(tmp_path, "laptop", "laptop", db_dsn))
    desktop = _watch(_daemon_config(tmp_path, "desktop", "desktop", db_dsn))
    try:
        _wait_ready(laptop)
        _wait_ready(desktop)
        again = _watch(_daemon_config(tmp_path, "laptop-again", "laptop", db_dsn))
        _, err = again.communicate(timeout=120)
        assert again.returncode == 4
        assert "another memoryd daemon is already watching source 'laptop' on this database" in err
        assert "memoryd watch source=laptop" in err
        assert laptop.poll() is None and desktop.poll() is None
    finally:
        for process in (laptop, desktop):
            process.send_signal(signal.SIGTERM)
        for process in (laptop, desktop):
            try:
                assert process.wait(timeout=120) == 0
            finally:
                if process.poll() is None:
                    process.kill()
                if process.stderr is not None:
                    process.stderr.close()


def test_cli_logs_the_deprecated_sources_section_once(db_dsn: str, tmp_path: Path) -> None:
    """A configuration with [sources] still runs, and the command logs one config_deprecated event naming [mirror]."""
    config_file = tmp_path / "old.toml"
    config_file.write_text(
        f'[database]\ndsn = "{db_dsn}"\n[log]\nformat = "json"\n[sources]\ntool_result_chars = 100\n',
        encoding="utf-8",
    )
    result = _memoryd(config_file, "init")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    deprecated = [e for e in events if e["event"] == "config_deprecated"]
    assert [(e["section"], e["use"], e["level"]) for e in deprecated] == [("sources", "mirror", "warning")]
