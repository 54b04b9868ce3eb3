"""The daemon on real folders, a real watcher and a real PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from memoryd import store, sync
from memoryd.config import Config
from memoryd.daemon import Daemon
from memoryd.db import Database, EmbeddedServer
from memoryd.embed import Embedder, embed_pending
from memoryd.search import search
from memoryd.sync import Syncer
from tests.conftest import write_conversation, write_summaries
from tests.daemon_helpers import database_mismatch, fast_config, running_daemon, wait_for, write_stream_conversation

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """A daemon test must not leave threads behind (watchdog, embedder, pool workers)."""
    before = set(threading.enumerate())
    yield
    # tqdm's monitor is a process-wide singleton started by the first progress bar (model loading).
    before |= {t for t in threading.enumerate() if t.name == "tqdm_monitor"}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked:
            return
        time.sleep(0.1)
    raise AssertionError(f"leaked threads: {[t.name for t in leaked]}")


def _stored_events(logs: list[dict[str, Any]], slug: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "slug_stored" and e.get("slug") == slug]


def test_folder_copied_file_by_file_is_ingested_once(config: Config, db_dsn: str, embedder: Embedder) -> None:
    """A folder copied in file by file is stored exactly once, complete, and then searchable."""
    config = fast_config(config)
    slug = "2025-07-01__copied_slowly"
    with capture_logs() as logs, running_daemon(config, embedder):
        folder = config.paths.conversations / slug
        folder.mkdir()
        lines = [
            json.dumps({"role": "user" if i % 2 == 0 else "assistant", "content": f"line {i} about volcanoes"})
            for i in range(8)
        ]
        with (folder / "messages.jsonl").open("w") as f:
            for line in lines:  # appended over ~1 s, longer than the 0.2 s debounce
                f.write(line + "\n")
                f.flush()
                time.sleep(0.12)
        (folder / "meta.json").write_text(json.dumps({"title": "Volcanoes"}))
        wait_for(lambda: database_mismatch(db_dsn, config, embedder.name) is None, timeout=60, what="ingest")
        time.sleep(1.0)  # a second store would have happened by now
        events = _stored_events(logs, slug)
        with Database(config.database) as db:
            hits = db.run(search, embedder, "volcano eruption", k=1)
    assert len(events) == 1, events
    assert events[0]["messages_inserted"] == 8
    assert hits[0].slug == slug


def test_edit_delete_and_late_summary(config: Config, db_dsn: str, embedder: Embedder) -> None:
    """An edit re-stores only its slug, a deletion removes it, a summary waits for its conversation."""
    config = fast_config(config)
    write_conversation(config.paths.conversations, "a", [("user", "alpha"), ("assistant", "first")])
    write_conversation(config.paths.conversations, "b", [("user", "beta")])
    with capture_logs() as logs, running_daemon(config, embedder):
        assert {e["slug"] for e in logs if e["event"] == "slug_stored"} == {"a", "b"}
        logs.clear()
        write_conversation(config.paths.conversations, "a", [("user", "alpha"), ("assistant", "second")])
        wait_for(lambda: bool(_stored_events(logs, "a")), timeout=30, what="edit stored")
        assert {e["slug"] for e in logs if e["event"] == "slug_stored"} == {"a"}
        assert _stored_events(logs, "a")[0]["messages_inserted"] == 1

        for f in (config.paths.conversations / "b").iterdir():
            f.unlink()
        (config.paths.conversations / "b").rmdir()
        write_summaries(config.paths.summaries, "c", [{"level": 1, "covers": [0], "content": "gamma summary"}])
        time.sleep(1.0)
        write_conversation(config.paths.conversations, "c", [("user", "gamma")])
        wait_for(lambda: database_mismatch(db_dsn, config, embedder.name) is None, timeout=60, what="db == folders")


def test_changes_while_stopped_are_found_at_start(config: Config, db_dsn: str, embedder: Embedder) -> None:
    """Changes made while the daemon was down are picked up by the start-up reconcile."""
    config = fast_config(config)
    write_conversation(config.paths.conversations, "kept", [("user", "one")])
    write_conversation(config.paths.conversations, "removed", [("user", "two")])
    with running_daemon(config, embedder):
        wait_for(lambda: database_mismatch(db_dsn, config, embedder.name) is None, timeout=60, what="first sync")
    write_conversation(config.paths.conversations, "kept", [("user", "one, edited")])
    write_conversation(config.paths.conversations, "added", [("user", "three")])
    (config.paths.conversations / "removed" / "messages.jsonl").unlink()
    (config.paths.conversations / "removed").rmdir()
    with running_daemon(config, embedder):
        wait_for(lambda: database_mismatch(db_dsn, config, embedder.name) is None, timeout=60, what="catch-up")


def test_second_daemon_is_refused(config: Config, embedder: Embedder) -> None:
    """Only one daemon per source and database: a second one fails with a clear message naming the first."""
    from memoryd.errors import AlreadyRunning

    config = fast_config(config)
    with running_daemon(config, embedder):
        second = Daemon(config, embedder_factory=lambda: embedder)
        expected = r"another memoryd daemon is already watching source .* \(memoryd watch source=.* pid="
        with pytest.raises(AlreadyRunning, match=expected):
            second.run()


def _kill_postmaster(server: EmbeddedServer) -> None:
    pid = server._server.get_pid()
    os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("owner", ["daemon", "outside"])
def test_survives_postgres_sigkill(owner: str, config: Config, pg_data_dir: Path, embedder: Embedder) -> None:
    """PostgreSQL SIGKILLed mid-stream: the daemon waits, goes on, and the database ends up matching the folders.

    ``daemon``: the daemon's own embedded server, which the daemon restarts.
    ``outside``: a server the daemon reaches by DSN, restarted by someone else 7 s later.
    """
    server = EmbeddedServer(pg_data_dir)
    dsn = server.start()
    try:
        if owner == "daemon":
            database = replace(config.database, dsn=None, data_dir=pg_data_dir)
        else:
            database = replace(config.database, dsn=dsn)
        config = fast_config(replace(config, database=database))
        with capture_logs() as logs, running_daemon(config, embedder) as daemon:
            for n in range(30):
                write_stream_conversation(config.paths.conversations, n)
                if n == 10:
                    _kill_postmaster(server)
                    if owner == "outside":
                        threading.Timer(7.0, server.revive).start()
                time.sleep(0.1)
            wait_for(
                lambda: database_mismatch(dsn, config, embedder.name) is None,
                timeout=120,
                what="database to match the folders after the restart",
                interval=0.5,
            )
            assert not daemon.stopping
        events = [e["event"] for e in logs]
        assert events.count("db_unavailable") >= 1
        assert "db_recovered" in events
    finally:
        server.stop()


def test_parallel_bulk_store_survives_postgres_sigkill(
    config: Config, pg_data_dir: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL SIGKILLed while bulk batches are stored on two connections: each is retried, none lost or doubled."""
    server = EmbeddedServer(pg_data_dir)
    server.start()
    try:
        config = fast_config(replace(config, database=replace(config.database, dsn=None, data_dir=pg_data_dir)))
        for n in range(24):
            write_stream_conversation(config.paths.conversations, n)
        monkeypatch.setattr(sync, "BULK_BATCH", 3)
        monkeypatch.setattr(sync, "bulk_workers", lambda db: 2)
        calls: list[int] = []
        original = store.insert_new_slugs

        def killing(conn: Any, source: str, items: Any) -> list[str]:
            calls.append(len(items))
            if len(calls) == 3:
                _kill_postmaster(server)  # this batch fails with the server, another may be in flight
            return original(conn, source, items)

        monkeypatch.setattr(store, "insert_new_slugs", killing)
        with capture_logs() as logs, Database(config.database) as db:
            report = Syncer(db, config).reconcile()
            embed_pending(db, embedder)
            mismatch = database_mismatch(db.dsn, config, embedder.name)  # while the restarted server runs
        assert mismatch is None
        assert (report.checked, report.synced, report.failed) == (24, 24, 0)
        assert len(calls) > 8  # 8 batches, and at least one retried
        events = [e["event"] for e in logs]
        assert "db_unavailable" in events and "db_recovered" in events
    finally:
        server.stop()


def _subprocess_env(config_file: Path, notify_socket: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMORYD_") and k != "NOTIFY_SOCKET"}
    env["MEMORYD_CONFIG"] = str(config_file)
    if notify_socket:
        env["NOTIFY_SOCKET"] = notify_socket
        env["WATCHDOG_USEC"] = "2000000"
    return env


def _write_config(tmp_path: Path, config: Config) -> Path:
    path = tmp_path / "memoryd.toml"
    path.write_text(
        f'[paths]\nconversations = "{config.paths.conversations}"\nsummaries = "{config.paths.summaries}"\n'
        f'[database]\ndsn = "{config.database.dsn}"\n'
        '[watch]\ndebounce_ms = 200\nmax_wait_ms = 2000\n[log]\nformat = "json"\n'
    )
    return path


def test_crash_and_sigterm(config: Config, db_dsn: str, tmp_path: Path, embedder: Embedder) -> None:
    """SIGKILL mid-ingest, start again: the reconcile repairs everything; SIGTERM then exits 0 promptly.

    The second run also speaks systemd's notify protocol: READY=1 after the
    first reconcile, STATUS= lines and WATCHDOG=1 heartbeats.
    """
    config_file = _write_config(tmp_path, config)
    for n in range(40):
        write_stream_conversation(config.paths.conversations, n, messages=20)
    cmd = [sys.executable, "-m", "memoryd.cli", "watch"]
    first = subprocess.Popen(cmd, env=_subprocess_env(config_file), stderr=subprocess.PIPE, text=True)
    try:
        assert first.stderr is not None
        for line in first.stderr:  # kill it while it stores the tree
            if '"slug_stored"' in line:
                break
        first.kill()
    finally:
        first.wait(timeout=30)
        if first.stderr is not None:
            first.stderr.close()
    assert database_mismatch(db_dsn, config, embedder.name) is not None  # it really was cut short

    notify_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify_path)
    sock.settimeout(120)
    second = subprocess.Popen(cmd, env=_subprocess_env(config_file, notify_path), stderr=subprocess.DEVNULL)
    try:
        messages: list[str] = []
        while not any("READY=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        wait_for(lambda: database_mismatch(db_dsn, config, embedder.name) is None, timeout=180, what="repair")
        sock.settimeout(10)
        messages.append(sock.recv(4096).decode())
        second.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert second.wait(timeout=30) == 0
        stop_seconds = time.monotonic() - started
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
        sock.close()
    joined = "\n".join(messages)
    assert "STATUS=" in joined and "conversations" in joined
    assert "WATCHDOG=1" in joined
    assert stop_seconds < 10


def test_systemd_unit_verifies(tmp_path: Path, config: Config) -> None:
    """`systemd-analyze verify` accepts the unit written by `memoryd install-service`, without warnings."""
    import shutil

    from memoryd.systemd import render_unit

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    config_file = _write_config(tmp_path, config)
    from memoryd.config import load_config

    unit = tmp_path / "memoryd.service"
    unit.write_text(render_unit(load_config(config_file)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    text = unit.read_text()
    assert f"--config {config_file} watch" in text
    assert "Type=notify" in text and "WatchdogSec=" in text and "ProtectSystem=strict" in text
