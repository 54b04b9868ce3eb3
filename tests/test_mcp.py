"""Tests for memoryd.mcp: the real ``memoryd mcp`` in a subprocess, driven by the ``mcp`` client over stdio.

Each server runs against a real database with a configuration file of its
own (as in test_cli.py).  The client runs in an anyio blocking portal, so
the tests stay synchronous and one server (and its loaded model) serves a
whole module of calls.  Bad input gets a tool error (``isError``) with a
message that names it, and the same server then answers the next call.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.types import CallToolResult, Tool
from psycopg.conninfo import make_conninfo

from memoryd.config import load_config
from tests.conftest import (
    TEMPLATE_DB,
    create_database,
    drop_database,
    own_database,
    write_conversation,
    write_summaries,
)
from tests.daemon_helpers import database_mismatch, fast_config, running_daemon, wait_for
from tests.test_cli import (
    BREAD,
    BREAD_MESSAGES,
    FIREWALL,
    FIREWALL_MESSAGES,
    FIREWALL_SUMMARY,
    RUN_TIMEOUT_S,
    Cli,
    clean_environment,
    make_cli,
    memoryd_command,
)

TOOLS = {"search", "fetch", "conversation", "recent", "status"}
SEARCH_OPTIONS = {
    "query",
    "k",
    "mode",
    "slugs",
    "slug_prefix",
    "roles",
    "levels",
    "kinds",
    "since",
    "until",
    "context",
    "sources",
}
PORTS_QUERY = "which network ports are open on my server"
GARDEN = "2025-07-03__tomato_garden"
GARDEN_MESSAGES = [
    ("user", "My tomato plants have yellow leaves at the bottom, what is wrong?"),
    ("assistant", "Lower leaves yellowing on tomatoes usually means a nitrogen shortage or overwatering."),
]


@dataclass
class McpSession:
    """A connected MCP client, called synchronously through a blocking portal."""

    portal: BlockingPortal
    client: Client
    stderr: Path

    def tools(self) -> list[Tool]:
        return self.portal.call(self.client.list_tools).tools

    def call(self, name: str, arguments: Mapping[str, Any] | None = None) -> CallToolResult:
        return self.portal.call(self.client.call_tool, name, dict(arguments or {}))

    def ok(self, name: str, arguments: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The structured result of a call that must succeed; its text content is the same JSON."""
        result = self.call(name, arguments)
        assert not result.is_error, error_text(result)
        assert isinstance(result.structured_content, dict)
        assert json.loads(error_text(result)) == result.structured_content
        return result.structured_content

    def error(self, name: str, arguments: Mapping[str, Any] | None = None) -> str:
        """The message of a call that must fail with a tool error."""
        result = self.call(name, arguments)
        assert result.is_error, f"{name} {arguments} succeeded: {result.structured_content}"
        return error_text(result)


def error_text(result: CallToolResult) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def with_socket(cli: Cli, socket: Path) -> Cli:
    """Pin the query service's socket (short: AF_UNIX paths are limited to 108 bytes) in the config file."""
    with cli.config_path.open("a", encoding="utf-8") as fh:
        fh.write(f'\n[service]\nsocket = "{socket}"\n')
    return cli


@contextmanager
def mcp_session(cli: Cli, *args: str, env: Mapping[str, str] | None = None) -> Iterator[McpSession]:
    """``memoryd mcp ARGS`` started by the mcp client over stdio, with this configuration and database."""
    command = memoryd_command()
    full_env = clean_environment() | {"MEMORYD_CONFIG": str(cli.config_path), "MEMORYD_DSN": cli.dsn}
    params = StdioServerParameters(
        command=command[0],
        args=[*command[1:], "mcp", *args],
        env=full_env | dict(env or {}),
        cwd=str(cli.cwd),
    )
    stderr = Path(tempfile.mkstemp(prefix="memoryd-mcp-", suffix=".log", dir=cli.root)[1])
    with (
        stderr.open("w", encoding="utf-8") as errlog,
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(
            Client(stdio_client(params, errlog=errlog), read_timeout_seconds=RUN_TIMEOUT_S)
        ) as client,
    ):
        yield McpSession(portal, client, stderr)


@pytest.fixture(scope="module")
def indexed_cli(tmp_path_factory: pytest.TempPathFactory, pg_admin_dsn: str, template_dsn: str) -> Iterator[Cli]:
    """Two conversations and a summary dropped into the folders, then ingested and embedded by the real commands."""
    socket_dir = Path(tempfile.mkdtemp(prefix="md-mcp-"))
    try:
        with own_database(pg_admin_dsn, template=TEMPLATE_DB) as dsn:
            cli = with_socket(make_cli(tmp_path_factory.mktemp("mcp"), dsn), socket_dir / "s")
            write_conversation(cli.conversations, BREAD, BREAD_MESSAGES, title="Baking bread")
            write_conversation(cli.conversations, FIREWALL, FIREWALL_MESSAGES, title="Configuring a firewall")
            write_summaries(cli.summaries, FIREWALL, [FIREWALL_SUMMARY])
            for command in ("ingest", "embed"):
                result = cli.run(command)
                assert result.returncode == 0, result.stderr
            yield cli
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server(indexed_cli: Cli) -> Iterator[McpSession]:
    """One `memoryd mcp` (no daemon answers: in-process) for the module's calls."""
    with mcp_session(indexed_cli, env={"MEMORYD_LOG_LEVEL": "info", "MEMORYD_LOG_FORMAT": "json"}) as session:
        yield session


# -- the tools -----------------------------------------------------------------


def test_lists_five_read_only_tools(server: McpSession) -> None:
    """tools/list gives search, fetch, conversation, recent and status, each described and annotated read-only."""
    tools = {tool.name: tool for tool in server.tools()}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description, tool.name
        assert tool.annotations is not None, tool.name
        assert tool.annotations.read_only_hint is True, tool.name
        assert tool.annotations.destructive_hint is False, tool.name
        assert tool.annotations.open_world_hint is False, tool.name
    search = tools["search"].input_schema
    assert set(search["properties"]) == SEARCH_OPTIONS
    assert search["required"] == ["query"]
    assert set(tools["fetch"].input_schema["required"]) == {"id"}
    assert set(tools["conversation"].input_schema["required"]) == {"slug"}


def test_search_finds_the_dropped_conversation_with_context(server: McpSession) -> None:
    """The search tool ranks the firewall conversation first for a ports query; hits carry their context."""
    answer = server.ok("search", {"query": PORTS_QUERY, "k": 5})
    assert answer["answered_by"] == "in-process"
    hits = answer["hits"]
    assert hits
    assert len(hits) <= 5
    best = hits[0]
    assert (best["slug"], best["title"], best["date"]) == (FIREWALL, "Configuring a firewall", "2025-06-02")
    message = next(hit for hit in hits if hit["kind"] == "message" and hit["slug"] == FIREWALL)
    context = message["context"]
    assert context["before"] or context["after"]
    assert [s["covers"] for s in context["summaries"]] == [FIREWALL_SUMMARY["covers"]]
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)


def test_search_filters(server: McpSession) -> None:
    """slug_prefix, kinds, roles and since/until reach the search: each result respects its filter."""
    by_prefix = server.ok("search", {"query": "crust", "mode": "text", "slug_prefix": "2025-06-01"})["hits"]
    assert by_prefix
    assert {hit["slug"] for hit in by_prefix} == {BREAD}
    summaries = server.ok("search", {"query": PORTS_QUERY, "kinds": ["summary"]})["hits"]
    assert summaries
    assert {hit["kind"] for hit in summaries} == {"summary"}
    users = server.ok("search", {"query": PORTS_QUERY, "roles": ["user"], "context": 0})["hits"]
    assert users
    assert {hit["role"] for hit in users} == {"user"}
    assert all(hit["context"]["before"] == [] == hit["context"]["after"] for hit in users)
    june_2 = server.ok("search", {"query": PORTS_QUERY, "since": "2025-06-02", "until": "2025-06-02"})["hits"]
    assert june_2
    assert {hit["slug"] for hit in june_2} == {FIREWALL}
    here = socket.gethostname()  # the indexed folders' source: no [source] name, so the host name
    mine = server.ok("search", {"query": PORTS_QUERY, "sources": [here]})["hits"]
    assert mine
    assert {hit["source"] for hit in mine} == {here}
    assert server.ok("search", {"query": PORTS_QUERY, "sources": ["another-machine"]})["hits"] == []


def test_fetch_returns_a_hit_again_with_its_context(server: McpSession) -> None:
    """fetch(id) of a search hit returns the same message, with the turns around it."""
    hit = server.ok("search", {"query": PORTS_QUERY, "kinds": ["message"], "k": 1})["hits"][0]
    fetched = server.ok("fetch", {"id": hit["id"], "context": 1})["hit"]
    assert (fetched["id"], fetched["slug"], fetched["seq"], fetched["text"]) == (
        hit["id"],
        hit["slug"],
        hit["seq"],
        hit["text"],
    )
    around = [t["seq"] for t in fetched["context"]["before"] + fetched["context"]["after"]]
    assert around
    assert all(abs(seq - hit["seq"]) == 1 for seq in around)


def test_conversation_whole_and_window(server: McpSession) -> None:
    """conversation(slug) returns every turn and its summaries; around/window returns the turns around a seq."""
    whole = server.ok("conversation", {"slug": FIREWALL})["conversation"]
    assert whole["info"]["slug"] == FIREWALL
    assert [t["text"] for t in whole["turns"]] == [text for _, text in FIREWALL_MESSAGES]
    assert [s["text"] for s in whole["summaries"]] == [FIREWALL_SUMMARY["content"]]
    assert whole["info"]["source"] == socket.gethostname()
    assert server.ok("conversation", {"slug": FIREWALL, "source": socket.gethostname()})["conversation"] == whole
    window = server.ok("conversation", {"slug": BREAD, "around": 2, "window": 1})["conversation"]
    assert [t["seq"] for t in window["turns"]] == [1, 2, 3]
    assert window["first_seq"] == 1


def test_recent_lists_conversations_newest_first(server: McpSession) -> None:
    """recent lists both conversations, newest first, with their counts; since filters by date."""
    listed = server.ok("recent", {"limit": 10})["conversations"]
    assert [(c["slug"], c["messages"], c["summaries"]) for c in listed] == [(FIREWALL, 3, 1), (BREAD, 4, 0)]
    assert [c["slug"] for c in server.ok("recent", {"since": "2025-06-02"})["conversations"]] == [FIREWALL]


def test_status_counts_and_says_who_answers(server: McpSession) -> None:
    """status reports the stored counts and that this process answers in-process."""
    status = server.ok("status")
    assert status["answered_by"] == "in-process"
    assert (status["conversations"], status["messages"], status["summaries"]) == (2, 7, 1)


def test_logs_go_to_stderr(server: McpSession) -> None:
    """The server's structured log lines (mcp_serving, mcp_memory_opened) are on its stderr, not in the protocol."""
    server.ok("status")  # the memory is open by now
    events = [json.loads(line)["event"] for line in server.stderr.read_text().splitlines() if line.startswith("{")]
    assert "mcp_serving" in events
    assert "mcp_memory_opened" in events


# -- bad input -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("search", {"query": PORTS_QUERY, "k": 10**9}, "invalid request: k: expected 1 to 200, got 1,000,000,000"),
        ("search", {"query": "x" * 1_000_000}, "invalid request: query: 1,000,000 characters; at most 4,000"),
        ("search", {"query": "   "}, "invalid request: query: expected a non-empty string"),
        ("search", {"query": PORTS_QUERY, "k": "ten"}, "k"),
        ("search", {"query": PORTS_QUERY, "mode": "psychic"}, "mode"),
        ("search", {"query": PORTS_QUERY, "roles": ["robot"]}, "roles"),
        ("search", {"query": PORTS_QUERY, "since": "yesterday"}, "invalid request: since: expected a date"),
        ("search", {"query": PORTS_QUERY, "since": "2025-06-03", "until": "2025-06-01"}, "invalid request:"),
        ("search", {"query": PORTS_QUERY, "context": 10_000}, "invalid request: context: expected 0 to 20"),
        ("search", {}, "query"),
        ("fetch", {"id": "message:999999999"}, "not found: no message with id 999999999"),
        ("fetch", {"id": "bogus"}, "invalid request:"),
        ("conversation", {"slug": "2099-01-01__nowhere"}, "not found: no conversation '2099-01-01__nowhere'"),
        ("conversation", {"slug": FIREWALL, "around": 1, "window": 100_000}, "invalid request: window"),
        ("recent", {"limit": 0}, "invalid request: limit: expected 1 to 1,000, got 0"),
    ],
)
def test_bad_input_is_a_tool_error_and_the_server_answers_on(
    server: McpSession, tool: str, arguments: dict[str, Any], message: str
) -> None:
    """Each bad call gets a tool error whose text names the input; the next call is answered."""
    assert message in server.error(tool, arguments)
    assert server.ok("status")["conversations"] == 2


def test_unknown_tool_is_an_error_and_the_server_answers_on(server: McpSession) -> None:
    """Calling a tool that does not exist is refused with its name; the next call is answered."""
    try:
        text = server.error("delete_everything", {})
    except Exception as exc:  # a client may refuse an unlisted tool itself, as a protocol error
        text = str(exc)
    assert "delete_everything" in text
    assert server.ok("status")["conversations"] == 2


# -- the database and the daemon -----------------------------------------------


def test_dead_database_is_a_tool_error_and_the_server_keeps_answering(tmp_path: Path) -> None:
    """With nothing listening at the DSN's port, each call says the database is unavailable; the server answers on."""
    cli = make_cli(tmp_path, "postgresql://memoryd@127.0.0.1:9/memoryd?connect_timeout=2")
    env = {"MEMORYD_DATABASE_RETRY_DEADLINE_S": "1", "MEMORYD_SERVICE_ENABLED": "false"}
    with mcp_session(cli, env=env) as session:
        for tool, arguments in (("search", {"query": PORTS_QUERY, "mode": "text"}), ("status", {}), ("recent", {})):
            assert session.error(tool, arguments).startswith(f"Error executing tool {tool}: database unavailable: "), (
                tool
            )
        assert {tool.name for tool in session.tools()} == TOOLS


def test_database_dropped_mid_session_is_a_tool_error(tmp_path: Path, pg_admin_dsn: str, template_dsn: str) -> None:
    """A database that disappears under a running server makes calls fail clearly, and the server stays up."""
    name = create_database(pg_admin_dsn, template=TEMPLATE_DB)
    cli = make_cli(tmp_path, make_conninfo(pg_admin_dsn, dbname=name))
    try:
        with mcp_session(cli, "--in-process", env={"MEMORYD_DATABASE_RETRY_DEADLINE_S": "1"}) as session:
            assert session.ok("status")["conversations"] == 0
            drop_database(pg_admin_dsn, name)
            assert session.error("status").startswith("Error executing tool status: database unavailable: ")
            assert session.error("recent").startswith("Error executing tool recent: database unavailable: ")
            assert {tool.name for tool in session.tools()} == TOOLS
    finally:
        drop_database(pg_admin_dsn, name)


def test_answers_through_a_running_daemon_with_the_in_process_hits(tmp_path: Path, db_dsn: str, embedder: Any) -> None:
    """With `memoryd watch` running, the tools answer through its query service with the hits an in-process
    server finds, and find a conversation dropped into the folder; once the daemon stops, they answer in-process."""
    socket_dir = Path(tempfile.mkdtemp(prefix="md-mcp-"))
    cli = with_socket(make_cli(tmp_path, db_dsn), socket_dir / "s")
    write_conversation(cli.conversations, FIREWALL, FIREWALL_MESSAGES, title="Configuring a firewall")
    write_summaries(cli.summaries, FIREWALL, [FIREWALL_SUMMARY])
    config = fast_config(load_config(cli.config_path, environ={"MEMORYD_DSN": db_dsn}))
    config = replace(config, log=replace(config.log, level="warning"))
    try:
        with ExitStack() as daemon:
            daemon.enter_context(running_daemon(config, embedder))
            with mcp_session(cli) as via_service:
                wait_for(lambda: database_mismatch(db_dsn, config, embedder.name) is None, timeout=120, what="sync")
                assert via_service.ok("status")["answered_by"] == "service"
                write_conversation(cli.conversations, GARDEN, GARDEN_MESSAGES, title="Tomato garden")
                wait_for(lambda: database_mismatch(db_dsn, config, embedder.name) is None, timeout=120, what="drop")
                found = via_service.ok("search", {"query": "why are my tomato leaves turning yellow", "k": 3})
                assert found["answered_by"] == "service"
                assert found["hits"][0]["slug"] == GARDEN
                service_hits = via_service.ok("search", {"query": PORTS_QUERY, "k": 5})["hits"]
                with mcp_session(cli, "--in-process") as in_process:
                    local = in_process.ok("search", {"query": PORTS_QUERY, "k": 5})
                assert local["answered_by"] == "in-process"
                assert [(h["id"], h["text"], h["context"]) for h in local["hits"]] == [
                    (h["id"], h["text"], h["context"]) for h in service_hits
                ]
                local_scores = [h["score"] for h in local["hits"]]
                assert local_scores == pytest.approx([h["score"] for h in service_hits], abs=1e-4)

                daemon.close()  # the daemon stops; this server lives on
                first = via_service.call("status")
                if first.is_error:  # the call that finds the service gone says so
                    assert "query service error: " in error_text(first)
                assert via_service.ok("status")["answered_by"] == "in-process"
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_malformed_json_on_stdin_is_skipped_and_the_server_goes_on(tmp_path: Path) -> None:
    """A line on stdin that is not JSON-RPC is skipped; the request after it is answered, and stdout holds
    only protocol messages."""
    cli = make_cli(tmp_path, "postgresql://memoryd@127.0.0.1:9/memoryd")
    env = clean_environment() | {
        "MEMORYD_CONFIG": str(cli.config_path),
        "MEMORYD_DSN": cli.dsn,
        "MEMORYD_SERVICE_ENABLED": "false",
        "MEMORYD_DATABASE_RETRY_DEADLINE_S": "0",
        "MEMORYD_LOG_LEVEL": "info",
    }
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}},
    }
    pipe = subprocess.PIPE
    with subprocess.Popen(
        [*memoryd_command(), "mcp"], cwd=cli.cwd, env=env, stdin=pipe, stdout=pipe, stderr=pipe
    ) as process:
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        try:
            process.stdin.write(b"{this is not json\n" + json.dumps(initialize).encode() + b"\n")
            process.stdin.flush()
            answer = read_line(process.stdout.fileno(), timeout=RUN_TIMEOUT_S)
            assert process.poll() is None
        finally:
            process.stdin.close()
            stdout_rest = process.stdout.read()
            stderr = process.stderr.read()
            process.wait(timeout=60)
    assert json.loads(answer)["id"] == 1
    assert json.loads(answer)["result"]["serverInfo"]["name"] == "memoryd"
    assert stdout_rest == b""
    assert b'"event": "mcp_serving"' in stderr


def read_line(fd: int, *, timeout: float) -> bytes:
    """One line from a pipe, read unbuffered (so nothing waits in a buffer select cannot see)."""
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no whole line within {timeout} s: {data!r}"
        chunk = os.read(fd, 1)
        assert chunk, f"the pipe closed after {data!r}"
        data += chunk
    return data
