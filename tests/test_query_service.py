"""The daemon's query service on a real Unix socket: answers as in-process, bad input, stale and unusable sockets."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from structlog.testing import capture_logs

from memoryd.api import LocalMemory, Memory
from memoryd.config import Config, ServiceConfig
from memoryd.db import Database, RetryPolicy
from memoryd.errors import DatabaseUnavailable, InvalidRequest, NotFound, ServiceError
from memoryd.query_client import ServiceClient, connect_service
from memoryd.query_service import QueryService
from tests.conftest import write_conversation, write_summaries
from tests.daemon_helpers import fast_config, running_daemon, wait_for
from tests.test_cli import make_cli

pytestmark = pytest.mark.slow

TRAIN = "2025-04-02__night_train"
SOUP = "2025-04-03__onion_soup"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path: a Unix socket path must fit in 108 bytes, pytest's tmp_path may not."""
    path = Path(tempfile.mkdtemp(prefix="md-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def served(config: Config, short_dir: Path) -> Config:
    """This test's configuration with its socket in a short private folder, and two conversations on disk."""
    write_conversation(
        config.paths.conversations,
        TRAIN,
        [
            ("user", "Which night train goes from Paris to Vienna?"),
            ("assistant", "The Nightjet leaves Paris Est in the evening and reaches Vienna the next morning."),
            ("user", "Can I book a private sleeper cabin?"),
        ],
        title="Night train",
    )
    write_conversation(
        config.paths.conversations,
        SOUP,
        [("user", "How long should onions caramelise for soup?"), ("assistant", "About forty minutes, slowly.")],
    )
    write_summaries(
        config.paths.summaries, TRAIN, [{"level": 1, "covers": [0, 1], "content": "Booking the Paris–Vienna Nightjet."}]
    )
    return fast_config(replace(config, service=ServiceConfig(socket=short_dir / "run" / "memoryd.sock")))


def _raw(path: Path, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send raw bytes on the socket; the status and JSON body of the answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        with contextlib.suppress(BrokenPipeError):  # the service answered (413) without reading the whole body
            sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")), None
            )
            if length is not None and len(body) >= length:
                break
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.partition(b"\r\n\r\n")[2])


def _post(path: Path, route: str, body: bytes) -> tuple[int, dict[str, Any]]:
    head = f"POST /v1/{route} HTTP/1.1\r\nHost: memoryd\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return _raw(path, head.encode() + body)


def _get(path: Path, route: str) -> tuple[int, dict[str, Any]]:
    return _raw(path, f"GET /v1/{route} HTTP/1.1\r\nHost: memoryd\r\nConnection: close\r\n\r\n".encode())


def _embedded(daemon: Any) -> bool:
    return bool(daemon.db.run(lambda conn: conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]))


def test_service_answers_like_in_process(served: Config, embedder: Any) -> None:
    """Through the socket, search, hit, conversation, recent and status give what in-process calls give."""
    with running_daemon(served, embedder) as daemon:
        wait_for(lambda: _embedded(daemon) and not daemon.db.run(_pending), timeout=120, what="embedded")
        path = served.service.socket
        assert path is not None
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        local = Memory(served, LocalMemory(served, daemon.db, embedder=lambda: embedder))
        with Memory.open(served, service=True) as remote:
            assert remote.via == "service"
            for mode in ("hybrid", "vector", "text"):
                theirs = remote.search("night train to Vienna", k=4, mode=mode)  # type: ignore[arg-type]
                ours = local.search("night train to Vienna", k=4, mode=mode)  # type: ignore[arg-type]
                assert theirs == ours and theirs
            best = remote.search("sleeper cabin", k=1, kinds=["message"], context=1)[0]
            assert (best.slug, best.seq) == (TRAIN, 2)
            assert [t.seq for t in best.context.before] == [1]
            assert remote.hit(best.id) == local.hit(best.id, context=2)
            assert remote.conversation(TRAIN, around=1, window=1) == local.conversation(TRAIN, around=1, window=1)
            here = served.source.name
            assert remote.conversation(TRAIN, source=here) == local.conversation(TRAIN, source=here)
            with pytest.raises(NotFound, match=r"no conversation .* in source 'elsewhere'"):
                remote.conversation(TRAIN, source="elsewhere")
            mine = remote.search("night train", k=3, mode="text", sources=[here])
            assert mine == local.search("night train", k=3, mode="text", sources=[here])
            assert mine and {h.source for h in mine} == {here}
            assert remote.search("night train", k=3, mode="text", sources=["elsewhere"]) == []
            assert remote.recent(limit=5) == local.recent(limit=5)
            status = remote.status()
            assert status["answered_by"] == "service" and status["conversations"] == 2
            with pytest.raises(NotFound, match="no conversation 'missing'"):
                remote.conversation("missing")
            with pytest.raises(InvalidRequest, match="k: expected 1 to 200"):
                remote.search("x", k=100_000)


def _pending(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM messages AS m WHERE NOT EXISTS (SELECT 1 FROM embeddings AS e WHERE e.message_id = m.id)"
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_bad_requests_get_json_errors_and_the_daemon_keeps_serving(served: Config, embedder: Any) -> None:
    """Malformed JSON, unknown routes, wrong methods, huge k, a 1 MB query, an oversized body: each a clear error."""
    with running_daemon(served, embedder):
        path = served.service.socket
        assert path is not None
        cases = [
            (_post(path, "search", b"{not json"), 400, "body: not valid JSON"),
            (_post(path, "search", b"[1, 2]"), 400, "expected a JSON object"),
            (_post(path, "search", b'{"query": "x", "k": 100000}'), 400, "k: expected 1 to 200"),
            (_post(path, "search", b'{"query": "x", "k": "ten"}'), 400, "k: expected an integer"),
            (_post(path, "search", b'{"query": "x", "colour": "red"}'), 400, "unknown search option(s): colour"),
            (_post(path, "search", json.dumps({"query": "y" * 1_000_000}).encode()), 400, "at most 4,000"),
            (_post(path, "search", b"x" * (3 * 1024 * 1024)), 413, "at most 2,097,152"),
            (_get(path, "search"), 405, "takes POST"),
            (_get(path, "nothing"), 404, "no endpoint"),
            (_raw(path, b"GET /elsewhere HTTP/1.1\r\nConnection: close\r\n\r\n"), 404, "lives under /v1/"),
            (_get(path, "hits/message:abc"), 400, "a hit id is"),
            (_get(path, "conversations/absent"), 404, "no conversation 'absent'"),
            (_get(path, "recent?limit=many"), 400, "limit: expected an integer"),
        ]
        for (status, body), expected_status, message in cases:
            assert status == expected_status, body
            assert message in body["error"]["message"], body
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:  # not even HTTP
            sock.connect(str(path))
            sock.sendall(b"\x00\xff garbage \r\n\r\n")
            sock.recv(1024)
        status, body = _post(path, "search", b'{"query": "onion soup", "mode": "text"}')
        assert status == 200 and body["hits"][0]["slug"] == SOUP


def test_a_stale_socket_is_replaced(served: Config, embedder: Any) -> None:
    """A socket file left by a killed daemon (nobody listening) is removed and served again."""
    path = served.service.socket
    assert path is not None
    path.parent.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, as after a SIGKILL
    with capture_logs() as logs, running_daemon(served, embedder):
        status, body = _get(path, "health")
        assert status == 200 and body["ok"] is True and body["pid"] == os.getpid()
    assert any(e["event"] == "query_service_stale_socket_removed" for e in logs)
    assert not path.exists()  # removed again at stop


def test_an_unusable_socket_path_is_a_warning_and_the_daemon_still_syncs(served: Config, embedder: Any) -> None:
    """A socket path under a regular file cannot be bound: one warning, and folders are still stored."""
    blocker = served.paths.conversations.parent / "not-a-folder"
    blocker.write_text("")
    config = replace(served, service=ServiceConfig(socket=blocker / "memoryd.sock"))
    with capture_logs() as logs, running_daemon(config, embedder) as daemon:
        write_conversation(config.paths.conversations, "2025-05-01__late", [("user", "Stored anyway?")])
        wait_for(
            lambda: daemon.db.run(lambda c: c.execute("SELECT count(*) FROM conversations").fetchone()[0]) == 3,
            timeout=60,
            what="the new folder stored",
        )
    assert [e["event"] for e in logs if e["event"].startswith("query_service")] == ["query_service_unavailable"]
    assert connect_service(config) is None


def test_a_socket_served_by_someone_else_is_left_alone(served: Config, embedder: Any) -> None:
    """A live socket of another process is not taken over: this daemon runs without a query service."""
    path = served.service.socket
    assert path is not None
    path.parent.mkdir(mode=0o700)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(path))
    other.listen()
    try:
        with capture_logs() as logs, running_daemon(served, embedder):
            pass
        assert path.exists()
        warning = next(e for e in logs if e["event"] == "query_service_unavailable")
        assert "another process already serves" in warning["error"]
    finally:
        other.close()


def test_a_dead_database_is_a_503_and_the_service_keeps_answering(
    served: Config, pg_admin_dsn: str, short_dir: Path
) -> None:
    """With its database gone, a search is a 503 naming the outage; health still answers."""
    assert served.database.dsn is not None
    with Database(served.database, retry=RetryPolicy(deadline_s=5.0)) as db:
        memory = LocalMemory(served, db, via="service", retry=RetryPolicy(deadline_s=2.0))
        service = QueryService(memory, short_dir / "dead.sock")
        assert service.start()
        try:
            assert _post(short_dir / "dead.sock", "search", b'{"query": "x", "mode": "text"}')[0] == 200
            name = psycopg.conninfo.conninfo_to_dict(served.database.dsn)["dbname"]
            with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(str(name))))
            status, body = _post(short_dir / "dead.sock", "search", b'{"query": "x", "mode": "text"}')
            assert status == 503 and body["error"]["type"] == "database_unavailable", body
            client = ServiceClient(short_dir / "dead.sock")
            with pytest.raises(DatabaseUnavailable):
                client.status()
            assert client.health()["ok"] is True
            client.close()
        finally:
            service.stop()


def test_no_daemon_means_in_process_and_required_service_says_why(served: Config) -> None:
    """Without a daemon Memory works in-process; service=True raises an error that says what is missing."""
    with Memory.open(served) as memory:
        assert memory.via == "in-process"
    with pytest.raises(ServiceError, match=r"does not exist \(is `memoryd watch` running\?\)"):
        Memory.open(served, service=True)


def test_cli_search_uses_the_daemon_and_matches_in_process(served: Config, embedder: Any, tmp_path: Path) -> None:
    """`memoryd search --json` gives the same hits (with context) from the daemon and in-process; status says which."""
    assert served.database.dsn is not None and served.service.socket is not None
    cli = make_cli(tmp_path / "cli", served.database.dsn)
    env = {"MEMORYD_SERVICE_SOCKET": str(served.service.socket)}
    daemon_config = replace(
        served, paths=replace(served.paths, conversations=cli.conversations, summaries=cli.summaries)
    )
    for slug in (TRAIN, SOUP):
        shutil.copytree(served.paths.conversations / slug, cli.conversations / slug)
    with running_daemon(daemon_config, embedder) as daemon:
        wait_for(lambda: _embedded(daemon) and not daemon.db.run(_pending), timeout=120, what="embedded")
        status = cli.run("status", env=env)
        assert status.returncode == 0, status.stderr
        assert "answered by:    service" in status.stdout
        served_hits = cli.run("search", "Paris to Vienna by night", "--json", "--context", "1", env=env)
        local_hits = cli.run("search", "Paris to Vienna by night", "--json", "--context", "1", "--in-process", env=env)
    assert served_hits.returncode == 0 and local_hits.returncode == 0, served_hits.stderr + local_hits.stderr
    hits = json.loads(served_hits.stdout)
    assert hits == json.loads(local_hits.stdout)
    assert hits[0]["slug"] == TRAIN and "context" in hits[0]
    text_only = cli.run("search", "onion", "--mode", "text", "--in-process", "--slug-prefix", "2025-04-03", env=env)
    assert text_only.returncode == 0 and SOUP in text_only.stdout and TRAIN not in text_only.stdout
    bad = cli.run("search", "x", "--k", "500", env=env)
    assert bad.returncode == 2 and "k: expected 1 to 200" in bad.stderr
