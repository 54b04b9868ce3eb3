"""Embedding workers (`memoryd embed --follow`): notifications, claims, real worker processes beside a daemon."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from memoryd.config import Config, EmbeddingConfig
from memoryd.db import Database
from memoryd.embed import Embedder, embed_pending
from memoryd.pending import CHANNEL
from memoryd.store import ChunkVector, claim_pending, count_pending, drop_embedded, write_embeddings
from memoryd.sync import Syncer
from tests.conftest import write_conversation
from tests.daemon_helpers import fast_config, running_daemon, wait_for

MODEL = EmbeddingConfig().model


def _store(config: Config, db: Database, conversations: int, messages: int, *, first: int = 0) -> int:
    """Write and sync ``conversations`` folders of ``messages`` short, distinct messages; the texts stored."""
    for n in range(first, first + conversations):
        write_conversation(
            config.paths.conversations,
            f"2025-07-{n % 28 + 1:02d}__worker_{n:03d}",
            [
                ("user" if i % 2 == 0 else "assistant", f"note {n}.{i}: the worker test text number {n * 100 + i}")
                for i in range(messages)
            ],
        )
    Syncer(db, config).reconcile()
    return conversations * messages


# -- the queue, in one process ----------------------------------------------------------------


def test_storing_text_notifies_workers_at_commit(config: Config, db: Database, db_dsn: str) -> None:
    """A stored message notifies the channel once its transaction commits; a rolled-back insert does not."""
    with psycopg.connect(db_dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        _store(config, db, 1, 3)
        received = [n.channel for n in listener.notifies(timeout=5.0, stop_after=1)]
        assert received == [CHANNEL]
        with psycopg.connect(db_dsn) as writer:
            conv = writer.execute("SELECT id FROM conversations LIMIT 1").fetchone()
            assert conv is not None
            writer.execute(
                "INSERT INTO messages (conversation_id, seq, role, content, content_hash)"
                " VALUES (%s, 99, 'user', 'x', 'h')",
                (conv[0],),
            )
            writer.rollback()
        assert list(listener.notifies(timeout=1.0)) == []


def test_a_claim_skips_rows_another_worker_holds_and_per_model(config: Config, db: Database, db_dsn: str) -> None:
    """Two claims of one model never share a row (SKIP LOCKED); one model's vectors leave a text pending for others."""
    total = _store(config, db, 2, 5)
    with psycopg.connect(db_dsn) as first, psycopg.connect(db_dsn) as second:
        register_vector(first)
        held = claim_pending(first, MODEL, 4)
        other = claim_pending(second, MODEL, 100)
        assert len(held) == 4 and len(other) == total - 4
        assert not {(t.ref_type, t.ref_id) for t in held} & {(t.ref_type, t.ref_id) for t in other}
        second.rollback()
        vector = np.ones(384, dtype=np.float32) / np.sqrt(384)
        write_embeddings(first, MODEL, [ChunkVector(t, 0, 0, len(t.content), vector) for t in held])
        first.commit()
        assert count_pending(second, MODEL) == total - 4
        assert count_pending(second, "another-model") == total
        assert len(claim_pending(second, "another-model", 100)) == total


def test_texts_embedded_meanwhile_are_dropped_from_a_claim(config: Config, db: Database, db_dsn: str) -> None:
    """A claimed text that another worker embedded and committed meanwhile is dropped, not encoded twice."""
    _store(config, db, 1, 4)
    with psycopg.connect(db_dsn) as conn:
        register_vector(conn)
        texts = claim_pending(conn, MODEL, 10)
        conn.rollback()
        vector = np.ones(384, dtype=np.float32) / np.sqrt(384)
        write_embeddings(conn, MODEL, [ChunkVector(texts[0], 0, 0, len(texts[0].content), vector)])
        conn.commit()
        kept = drop_embedded(conn, MODEL, texts)
        assert [t.ref_id for t in kept] == [t.ref_id for t in texts[1:]]
        assert drop_embedded(conn, "another-model", texts) == texts


def test_daemon_with_local_false_stores_but_leaves_embedding(
    config: Config, db: Database, embedder: Embedder, db_dsn: str
) -> None:
    """[embedding] local = false: the daemon stores text, embeds nothing, and loads the model only for a search."""
    from memoryd.api import Memory

    cfg = fast_config(replace(config, embedding=replace(config.embedding, local=False)))
    cfg = replace(cfg, service=replace(cfg.service, socket=config.paths.conversations.parent / "memoryd.sock"))
    write_conversation(
        cfg.paths.conversations, "2025-07-01__left", [("user", "a thunderstorm poem"), ("assistant", "ok")]
    )
    with running_daemon(cfg, embedder) as daemon:
        assert db.run(count_pending, MODEL) == 2
        time.sleep(1.0)  # the embedder thread has had time to embed, were it going to
        assert db.run(count_pending, MODEL) == 2 and daemon.embedder is None
        assert not daemon.embedder_ready.is_set()
        embed_pending(db, embedder)  # a worker's job
        with Memory.open(cfg) as mem:
            assert mem.status()["embedding_local"] is False
            hits = mem.search("thunderstorm", mode="vector", k=1)
        assert daemon.embedder is embedder and hits and hits[0].slug == "2025-07-01__left"


# -- real worker processes --------------------------------------------------------------------


@dataclass
class Proc:
    """A memoryd subprocess whose stderr (JSON log lines) is read by a thread into ``events``."""

    name: str
    popen: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    reader: threading.Thread | None = None

    def has(self, event: str, **match: Any) -> bool:
        return any(e.get("event") == event and all(e.get(k) == v for k, v in match.items()) for e in list(self.events))

    def count(self, event: str) -> int:
        return sum(1 for e in list(self.events) if e.get("event") == event)

    def total(self, event: str, key: str) -> int:
        return sum(int(e.get(key, 0)) for e in list(self.events) if e.get("event") == event)


def _config_file(tmp_path: Path, config: Config, name: str, extra: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'[paths]\nconversations = "{config.paths.conversations}"\nsummaries = "{config.paths.summaries}"\n'
        f'[database]\ndsn = "{config.database.dsn}"\n'
        f'[watch]\ndebounce_ms = 200\nmax_wait_ms = 2000\n[log]\nformat = "json"\nlevel = "debug"\n'
        f"[service]\nenabled = false\n{extra}",
        encoding="utf-8",
    )
    return path


@contextmanager
def _memoryd(name: str, config_file: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Proc]:
    """``memoryd ARGS`` running; SIGKILLed on exit if still alive."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MEMORYD_") and k != "NOTIFY_SOCKET"}
    full_env |= {"MEMORYD_CONFIG": str(config_file), **(env or {})}
    popen = subprocess.Popen(
        [sys.executable, "-m", "memoryd.cli", *args],
        env=full_env,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    proc = Proc(name, popen)

    def read() -> None:
        assert popen.stderr is not None
        for line in popen.stderr:
            try:
                proc.events.append(json.loads(line))
            except ValueError:
                proc.events.append({"event": "text", "line": line})

    proc.reader = threading.Thread(target=read, name=f"read-{name}", daemon=True)
    proc.reader.start()
    try:
        yield proc
    finally:
        if popen.poll() is None:
            popen.kill()
        popen.wait(timeout=30)
        proc.reader.join(timeout=10)
        for stream in (popen.stdout, popen.stderr):
            if stream is not None:
                stream.close()


def _stop(proc: Proc) -> str:
    """SIGTERM; the exit code must be 0; its stdout."""
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.popen.wait(timeout=120) == 0, (proc.name, proc.events[-5:])
    assert proc.popen.stdout is not None and proc.reader is not None
    proc.reader.join(timeout=10)  # stderr, read to its end by the reader
    return proc.popen.stdout.read()


def _vector_sets(dsn: str, model: str) -> tuple[int, int, int]:
    """(texts, texts with exactly chunks 0..n-1 once for ``model``, embedding rows of ``model``)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "WITH t AS (SELECT 'message' AS ref_type, id FROM messages UNION ALL SELECT 'summary', id FROM summaries),"
            " e AS (SELECT ref_type, ref_id, count(*) AS n, count(DISTINCT chunk) AS d, max(chunk) AS top"
            "  FROM embeddings WHERE model = %(m)s GROUP BY ref_type, ref_id)"
            " SELECT (SELECT count(*) FROM t),"
            " (SELECT count(*) FROM t JOIN e ON e.ref_type = t.ref_type AND e.ref_id = t.id"
            "   WHERE e.n = e.d AND e.top + 1 = e.n),"
            " (SELECT count(*) FROM embeddings WHERE model = %(m)s)",
            {"m": model},
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _unlocked_pending(dsn: str, model: str) -> tuple[int, int]:
    """(pending texts, those no transaction holds): a claim of everything, rolled back."""
    with psycopg.connect(dsn) as conn:
        pending = count_pending(conn, model)
        free = len(claim_pending(conn, model, 1_000_000))
        conn.rollback()
    return pending, free


@pytest.mark.slow
def test_workers_share_the_queue_survive_a_kill_and_wake_on_notify(
    config: Config, db: Database, db_dsn: str, embedder: Embedder, tmp_path: Path
) -> None:
    """Two `embed --follow` workers beside a daemon with local = false; a third SIGKILLed mid-batch.

    The killed worker's claims return to the queue at once; the two others
    embed every text exactly once between them (each row's vectors written
    once: the texts they report add up to the stored texts), the daemon never
    loads the model, and a text stored while the workers are idle, with
    polling every 600 s, is embedded within seconds (the notification).
    """
    daemon_file = _config_file(tmp_path, config, "daemon", "[embedding]\nlocal = false\n")
    worker_file = _config_file(tmp_path, config, "worker", "[embedding]\nworker_poll_s = 600\n")
    for n in range(24):
        write_conversation(
            config.paths.conversations,
            f"2025-07-{n % 28 + 1:02d}__worker_{n:03d}",
            [
                ("user" if i % 2 == 0 else "assistant", f"note {n}.{i}: a worker test text, number {n * 100 + i}")
                for i in range(30)
            ],
        )
    stored = 24 * 30
    with _memoryd("daemon", daemon_file, "watch") as daemon:
        wait_for(lambda: daemon.has("daemon_ready"), timeout=120, what="daemon ready")
        assert db.run(count_pending, MODEL) == stored

        with _memoryd("doomed", worker_file, "embed", "--follow") as doomed:
            wait_for(lambda: doomed.has("embed_batch_claimed"), timeout=180, what="a claimed batch")
            doomed.popen.kill()
            doomed.popen.wait(timeout=30)
        written_before_kill = doomed.total("embed_batch_written", "texts")
        assert doomed.count("embed_batch_claimed") > doomed.count("embed_batch_written")  # killed mid-batch
        pending = stored - written_before_kill
        assert pending > 0
        # The server rolls the dead worker's transactions back: every pending text is claimable again.
        wait_for(lambda: _unlocked_pending(db_dsn, MODEL) == (pending, pending), timeout=30, what="claims released")

        with (
            _memoryd("first", worker_file, "embed", "--follow") as first,
            _memoryd("second", worker_file, "embed", "--follow") as second,
        ):
            wait_for(lambda: db.run(count_pending, MODEL) == 0, timeout=300, what="everything embedded")
            wait_for(lambda: first.has("worker_idle") and second.has("worker_idle"), timeout=60, what="idle")
            status = subprocess.run(
                [sys.executable, "-m", "memoryd.cli", "status", "--in-process"],
                env={k: v for k, v in os.environ.items() if not k.startswith("MEMORYD_")}
                | {"MEMORYD_CONFIG": str(daemon_file)},
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            ).stdout
            assert "left to workers ([embedding] local = false); 2 worker(s) listening" in status

            before = first.count("embedded") + second.count("embedded")
            write_conversation(config.paths.conversations, "2025-08-01__late", [("user", "a late text, stored later")])
            wait_for(lambda: daemon.has("slug_stored", slug="2025-08-01__late"), timeout=60, what="late text stored")
            wait_for(lambda: db.run(count_pending, MODEL) == 0, timeout=30, what="the late text embedded (notified)")
            wait_for(lambda: first.count("embedded") + second.count("embedded") > before, timeout=10, what="log")
            assert first.has("worker_woken", reason="notified") or second.has("worker_woken", reason="notified")
            out_first, out_second = _stop(first), _stop(second)
        _stop(daemon)
    assert first.has("worker_stopped") and second.has("worker_stopped")
    done = [int(out.split()[1]) for out in (out_first, out_second)]  # "embedded N text(s) ..."
    assert sum(done) == pending + 1, (done, pending)
    assert first.total("embedded", "texts") + second.total("embedded", "texts") == pending + 1
    texts, complete, rows = _vector_sets(db_dsn, MODEL)
    assert texts == complete == stored + 1
    assert rows == texts  # every text here is one chunk: no duplicate vector anywhere
    assert not daemon.has("model_loaded") and daemon.has("embedding_left_to_workers")


@pytest.mark.slow
def test_workers_with_two_models_fill_their_own_vectors(
    config: Config, db: Database, db_dsn: str, embedder: Embedder, tmp_path: Path
) -> None:
    """A worker per model on one database: each text gets one vector set per model (the same, for the same weights)."""
    other = tmp_path / "minilm-copy"
    other.symlink_to(embedder.path, target_is_directory=True)
    total = _store(config, db, 4, 10)
    files = {
        MODEL: _config_file(tmp_path, config, "a", '[embedding]\nprecision = "fp32"\nworker_poll_s = 600\n'),
        str(other): _config_file(
            tmp_path, config, "b", f'[embedding]\nmodel = "{other}"\nprecision = "fp32"\nworker_poll_s = 600\n'
        ),
    }
    with (
        _memoryd("a", files[MODEL], "embed", "--follow") as a,
        _memoryd("b", files[str(other)], "embed", "--follow") as b,
    ):
        wait_for(lambda: a.has("worker_idle") and b.has("worker_idle"), timeout=300, what="both idle")
        _stop(a)
        _stop(b)
    for model in (MODEL, str(other)):
        assert _vector_sets(db_dsn, model) == (total, total, total)
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute(
            "SELECT min(1 - (a.vector <=> b.vector)) FROM embeddings a JOIN embeddings b"
            " ON a.message_id = b.message_id AND a.chunk = b.chunk WHERE a.model = %s AND b.model = %s",
            (MODEL, str(other)),
        ).fetchone()
    assert row is not None and row[0] > 0.999


@pytest.mark.slow
def test_a_worker_outlives_a_database_restart(config: Config, pg_data_dir: Path, embedder: Embedder) -> None:
    """PostgreSQL SIGKILLed and restarted 5 s later: the worker waits, listens again, and embeds what comes next."""
    from structlog.testing import capture_logs

    from memoryd.db import EmbeddedServer
    from memoryd.worker import EmbedWorker

    server = EmbeddedServer(pg_data_dir)
    dsn = server.start()
    try:
        cfg = replace(config, database=replace(config.database, dsn=dsn))
        cfg = replace(cfg, embedding=replace(cfg.embedding, worker_poll_s=600))
        with capture_logs() as logs, Database(cfg.database) as db:
            worker = EmbedWorker(cfg, embedder_factory=lambda: embedder)
            thread = threading.Thread(target=worker.run, name="test-worker")
            thread.start()
            try:
                total = _store(cfg, db, 2, 5)
                wait_for(lambda: db.run(count_pending, MODEL) == 0, timeout=60, what="first texts embedded")
                os.kill(server._server.get_pid(), signal.SIGKILL)
                threading.Timer(5.0, server.revive).start()
                wait_for(lambda: any(e["event"] == "worker_listening" for e in logs), timeout=90, what="relistening")
                total += _store(cfg, db, 1, 5, first=10)
                wait_for(lambda: db.run(count_pending, MODEL) == 0, timeout=60, what="new texts embedded (notified)")
            finally:
                worker.stop()
                thread.join(timeout=60)
            assert not thread.is_alive()
            assert worker.report.texts == total
        events = [e["event"] for e in logs]
        assert "worker_listen_lost" in events and "db_unavailable" in events and "db_recovered" in events
        assert events[-1] == "worker_stopped"
    finally:
        server.stop()


def test_worker_speaks_systemd_notify(
    config: Config, db: Database, embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under systemd a worker says READY=1 once its model is loaded, STATUS= with counts, then STOPPING=1."""
    import socket

    from memoryd.worker import EmbedWorker

    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(60)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    _store(config, db, 1, 3)
    worker = EmbedWorker(config, embedder_factory=lambda: embedder)
    thread = threading.Thread(target=worker.run, name="test-worker")
    thread.start()
    try:
        messages = [sock.recv(4096).decode() for _ in range(2)]
    finally:
        worker.stop()
        thread.join(timeout=60)
    messages.append(sock.recv(4096).decode())
    sock.close()
    assert messages[0].startswith("READY=1") and f"model {MODEL} loaded" in messages[0]
    assert messages[1] == "STATUS=3 texts embedded, 0 pending"
    assert messages[2] == "STOPPING=1"


def test_worker_unit_runs_embed_follow(tmp_path: Path, config: Config) -> None:
    """`memoryd install-service --worker` writes a unit that runs `embed --follow`, which systemd accepts."""
    import shutil

    from memoryd.config import load_config
    from memoryd.systemd import WORKER_WATCHDOG, render_unit

    config_file = _config_file(tmp_path, config, "worker")
    unit = tmp_path / "memoryd-worker.service"
    unit.write_text(render_unit(load_config(config_file), worker=True))
    text = unit.read_text()
    assert f"--config {config_file} embed --follow" in text and f"WatchdogSec={WORKER_WATCHDOG}" in text
    assert " watch" not in text and "Type=notify" in text and "ProtectSystem=strict" in text
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


@pytest.mark.slow
def test_two_sources_two_daemons_and_two_workers_one_killed(
    config: Config, db: Database, db_dsn: str, embedder: Embedder, tmp_path: Path
) -> None:
    """Two daemons (two sources, two folders, local = false) and two workers on one database, one SIGKILLed mid-batch.

    At the end the database is the union of both folders, each conversation
    under its own source (the same slug in both folders is two
    conversations), every text has exactly one vector set, a folder deleted
    on one machine removed only that machine's conversation, and neither
    daemon rewrote a row of the other's source.
    """
    sources = ("laptop", "desktop")
    files: dict[str, Path] = {}
    folders: dict[str, Path] = {}
    for name in sources:
        root = tmp_path / name
        paths = replace(config.paths, conversations=root / "conversations", summaries=root / "summaries")
        paths.conversations.mkdir(parents=True)
        paths.summaries.mkdir()
        folders[name] = paths.conversations
        extra = f'[source]\nname = "{name}"\n[embedding]\nlocal = false\n'
        files[name] = _config_file(tmp_path, replace(config, paths=paths), name, extra)
        for n in range(12):
            write_conversation(
                paths.conversations,
                f"2025-07-{n + 1:02d}__shared_{n:02d}",  # the same slugs on both machines
                [
                    ("user" if i % 2 == 0 else "assistant", f"{name} note {n}.{i}: text {n * 100 + i}")
                    for i in range(30)
                ],
            )
    worker_file = _config_file(
        tmp_path, config, "worker", '[source]\nname = "gpu-box"\n[embedding]\nworker_poll_s = 600\n'
    )
    stored = 2 * 12 * 30

    def rows(source: str) -> dict[str, tuple[int, Any, str, str]]:
        with psycopg.connect(db_dsn) as conn:
            found = conn.execute(
                "SELECT slug, id, updated_at, content_hash, source_path FROM conversations WHERE source = %s",
                (source,),
            ).fetchall()
        return {slug: (cid, updated, chash, path) for slug, cid, updated, chash, path in found}

    with (
        _memoryd("laptop", files["laptop"], "watch") as laptop,
        _memoryd("desktop", files["desktop"], "watch") as desktop,
    ):
        wait_for(lambda: laptop.has("daemon_ready") and desktop.has("daemon_ready"), timeout=120, what="both ready")
        wait_for(lambda: len(rows("laptop")) == len(rows("desktop")) == 12, timeout=120, what="both folders stored")
        desktop_before = rows("desktop")
        assert db.run(count_pending, MODEL) == stored

        with _memoryd("doomed", worker_file, "embed", "--follow") as doomed:
            wait_for(lambda: doomed.has("embed_batch_claimed"), timeout=180, what="a claimed batch")
            with _memoryd("survivor", worker_file, "embed", "--follow") as survivor:
                doomed.popen.kill()
                doomed.popen.wait(timeout=30)
                assert doomed.count("embed_batch_claimed") > doomed.count("embed_batch_written")  # killed mid-batch
                # One machine deletes a folder whose slug the other also holds.
                shutil.rmtree(folders["laptop"] / "2025-07-01__shared_00")
                wait_for(lambda: len(rows("laptop")) == 11, timeout=60, what="the laptop's deletion")
                wait_for(lambda: db.run(count_pending, MODEL) == 0, timeout=300, what="everything embedded")
                wait_for(lambda: survivor.has("worker_idle"), timeout=60, what="survivor idle")
                _stop(survivor)
        _stop(laptop)
        _stop(desktop)

    laptop_after, desktop_after = rows("laptop"), rows("desktop")
    assert set(desktop_after) == {f"2025-07-{n + 1:02d}__shared_{n:02d}" for n in range(12)}
    assert set(laptop_after) == set(desktop_after) - {"2025-07-01__shared_00"}
    assert desktop_after == desktop_before  # same ids, updated_at, hashes: the laptop touched none of them
    for name, found in (("laptop", laptop_after), ("desktop", desktop_after)):
        assert all(Path(path).is_relative_to(folders[name]) for _, _, _, path in found.values())
    with psycopg.connect(db_dsn) as conn:
        contents = conn.execute(
            "SELECT c.source, count(*), count(*) FILTER (WHERE m.content LIKE c.source || ' note %%')"
            " FROM messages AS m JOIN conversations AS c ON c.id = m.conversation_id GROUP BY c.source ORDER BY 1"
        ).fetchall()
    assert contents == [("desktop", 360, 360), ("laptop", 330, 330)]
    texts, complete, vectors = _vector_sets(db_dsn, MODEL)
    assert texts == complete == stored - 30
    assert vectors == texts  # one chunk each: no text has two vector sets
    assert not laptop.has("model_loaded") and not desktop.has("model_loaded")
