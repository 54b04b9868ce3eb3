"""Tests for memoryd.cli: the real ``memoryd`` command in a subprocess, on a real
database of the test's own, asserting exit codes and exact output.

Each run gets a configuration file of its own (MEMORYD_CONFIG) and a database
from the ``db_dsn`` fixture (MEMORYD_DSN), and runs in a working directory that
is not the configuration's folder, so relative paths are pinned to the file.
Runs that load the embedding model take seconds each, so there are only three
(one ``embed`` and two ``search``), sharing one indexed database.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from memoryd.cli import COMMANDS, build_parser
from memoryd.db import redact_dsn
from tests.conftest import TEMPLATE_DB, own_database, write_conversation, write_summaries

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 300
HIT_FIELDS = {
    *("id", "kind", "slug", "title", "date", "seq", "level", "role", "ts", "score", "text", "snippet"),
    *("truncated", "context", "vector_rank", "text_rank", "speaker", "source"),
}
CONFIG_TOML = """\
[paths]
conversations = "conversations"
summaries = "summaries"

[log]
level = "warning"
"""

BREAD = "2025-06-01__baking_bread"
FIREWALL = "2025-06-02__firewall_setup"
BREAD_MESSAGES = [
    ("user", "How do I get a crispier crust on my sourdough bread?"),
    (
        "assistant",
        "Bake the loaf in a preheated Dutch oven at 250 °C with the lid on for twenty minutes, then remove"
        " the lid so the crust browns. The trapped steam keeps the dough expanding before the crust sets.",
    ),
    ("user", "And how long should the dough rise before baking?"),
    ("assistant", "Let it proof in the fridge overnight; the slow fermentation gives flavour and a blistered crust."),
]
FIREWALL_MESSAGES = [
    ("user", "How do I configure the firewall on my Linux server so that only SSH and HTTPS are reachable?"),
    (
        "assistant",
        "Use ufw: `ufw default deny incoming`, `ufw allow 22/tcp`, `ufw allow 443/tcp`, then `ufw enable`."
        " Check which network ports are still listening with `ss -tlnp` and close the others.",
    ),
    ("user", "Thanks, the server is locked down now."),
]
FIREWALL_SUMMARY = {
    "level": 1,
    "covers": [0, 1, 2],
    "content": "The user locks down a Linux server firewall with ufw, allowing only the SSH and HTTPS ports.",
    "topics": ["firewall", "linux"],
}


def memoryd_command() -> list[str]:
    """The installed console script, else the module (a source checkout without `pip install -e`)."""
    script = Path(sys.executable).with_name("memoryd")
    return [str(script)] if script.exists() else [sys.executable, "-m", "memoryd.cli"]


def clean_environment() -> dict[str, str]:
    """This process's environment without the developer's own MEMORYD_* variables."""
    return {name: value for name, value in os.environ.items() if not name.startswith("MEMORYD_")}


def run_memoryd(
    args: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float = RUN_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*memoryd_command(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class Cli:
    """A working directory, a configuration file and a database to run ``memoryd`` against."""

    root: Path
    cwd: Path
    config_path: Path
    dsn: str

    @property
    def conversations(self) -> Path:
        return self.root / "conversations"

    @property
    def summaries(self) -> Path:
        return self.root / "summaries"

    def run(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: float = RUN_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """``memoryd ARGS`` with this configuration and database; ``env`` adds or replaces variables."""
        full_env = clean_environment() | {"MEMORYD_CONFIG": str(self.config_path), "MEMORYD_DSN": self.dsn}
        return run_memoryd(args, cwd=self.cwd, env=full_env | dict(env or {}), timeout=timeout)


def make_cli(root: Path, dsn: str) -> Cli:
    cwd = root / "elsewhere"
    for folder in (cwd, root / "conversations", root / "summaries"):
        folder.mkdir(parents=True)
    config_path = root / "config.toml"
    config_path.write_text(CONFIG_TOML, encoding="utf-8")
    return Cli(root=root, cwd=cwd, config_path=config_path, dsn=dsn)


@pytest.fixture
def cli(tmp_path: Path, db_dsn: str) -> Cli:
    """``memoryd`` with this test's folders and its own migrated database."""
    return make_cli(tmp_path, db_dsn)


@dataclass
class Indexed:
    cli: Cli
    ingest: subprocess.CompletedProcess[str]
    embed: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, pg_admin_dsn: str, template_dsn: str) -> Iterator[Indexed]:
    """Two conversations and one summary, ingested and embedded by the real commands, shared by the module."""
    with own_database(pg_admin_dsn, template=TEMPLATE_DB) as dsn:
        cli = make_cli(tmp_path_factory.mktemp("indexed"), dsn)
        write_conversation(cli.conversations, BREAD, BREAD_MESSAGES, title="Baking bread")
        write_conversation(cli.conversations, FIREWALL, FIREWALL_MESSAGES, title="Configuring a firewall")
        write_summaries(cli.summaries, FIREWALL, [FIREWALL_SUMMARY])
        yield Indexed(cli=cli, ingest=cli.run("ingest"), embed=cli.run("embed"))


def last_line(text: str) -> str:
    """The last line of stderr: the error message, after any JSON log lines."""
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


# -- help ----------------------------------------------------------------------


def subcommand_parsers() -> dict[str, tuple[argparse.ArgumentParser, str | None]]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in action._choices_actions}
    return {name: (sub, helps.get(name)) for name, sub in action.choices.items()}


def test_every_command_has_help_with_an_example() -> None:
    """Every command of COMMANDS is a subcommand with a one-line help and an `Example:` line in its description."""
    parsers = subcommand_parsers()
    assert set(parsers) == set(COMMANDS)
    for name, (sub, help_line) in parsers.items():
        assert help_line, f"{name} has no one-line help"
        description = sub.description or ""
        assert any(line.strip().startswith("Example:") for line in description.splitlines()), name


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_help_runs(tmp_path: Path, command: str) -> None:
    """`memoryd <command> --help` exits 0 and shows the example, without a database or configuration."""
    result = run_memoryd([command, "--help"], cwd=tmp_path, env=clean_environment())
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: memoryd {command}")
    assert "Example:" in result.stdout


# -- init ----------------------------------------------------------------------


def test_init_twice_applies_each_migration_once(cli: Cli, empty_dsn: str) -> None:
    """`init` on an empty database and again both exit 0; schema_migrations has one row per sql/*.sql."""
    for _ in range(2):
        result = cli.run("init", env={"MEMORYD_DSN": empty_dsn})
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"database ready: {redact_dsn(empty_dsn)}\n"
    with psycopg.connect(empty_dsn) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == sorted(path.stem for path in (REPO_ROOT / "sql").glob("*.sql"))


# -- ingest, embed, search, status ---------------------------------------------


def test_ingest_embed_search_finds_the_firewall_conversation(indexed: Indexed) -> None:
    """ingest → embed → `search --json` exit 0 and rank the firewall conversation first for a ports query."""
    assert indexed.ingest.returncode == 0, indexed.ingest.stderr
    assert indexed.ingest.stdout.startswith(
        "ingested: 2 slug(s) checked, 2 changed, 0 file(s) with errors, 0 failed in "
    )
    assert indexed.embed.returncode == 0, indexed.embed.stderr
    assert indexed.embed.stdout.startswith("embedded 8 text(s) in 8 chunk(s) in ")

    result = indexed.cli.run("search", "which network ports are open on my server", "--json")
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert isinstance(hits, list)
    assert hits
    assert all(set(hit) == HIT_FIELDS for hit in hits)
    best = hits[0]
    assert best["slug"] == FIREWALL
    assert best["title"] == "Configuring a firewall"
    assert best["date"] == "2025-06-02"
    assert best["kind"] in ("message", "summary")
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= score <= 1.0 for score in scores)
    by_kind = {hit["kind"] for hit in hits}
    assert by_kind == {"message", "summary"}
    for hit in hits:
        if hit["kind"] == "message":
            assert hit["role"] in ("user", "assistant")
            assert hit["level"] is None
            assert isinstance(hit["seq"], int)
        else:
            assert hit["role"] is None
            assert hit["level"] == 1
            assert hit["seq"] == 0  # a summary's first covered message
        assert hit["id"].startswith(hit["kind"] + ":")
        assert hit["snippet"]
        assert hit["text"]
        assert set(hit["context"]) == {"before", "after", "summaries", "covered"}


def test_status_json_counts_match(indexed: Indexed) -> None:
    """`status --json` counts what was ingested and embedded, with nothing pending and no problems."""
    result = indexed.cli.run("status", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    messages = len(BREAD_MESSAGES) + len(FIREWALL_MESSAGES)
    assert data["conversations"] == 2
    assert data["messages"] == messages
    assert data["summaries"] == 1
    assert data["embeddings"] == messages + 1  # every text is short: one chunk each
    assert data["pending_embeddings"] == 0
    assert data["summaries_waiting_for_conversation"] == 0
    assert data["problems"] == []
    assert data["last_sync"] is not None
    assert data["model"] == "all-MiniLM-L6-v2"
    assert data["database"] == redact_dsn(indexed.cli.dsn)
    assert data["conversations_dir"] == str(indexed.cli.conversations)
    assert data["summaries_dir"] == str(indexed.cli.summaries)


def test_search_role_returns_only_that_role(indexed: Indexed) -> None:
    """`search --role assistant` returns every assistant message and nothing else (no summaries)."""
    result = indexed.cli.run("search", "bread crust or firewall ports", "--role", "assistant", "--json")
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert all(hit["kind"] == "message" and hit["role"] == "assistant" for hit in hits)
    expected = {
        (slug, seq)
        for slug, messages in ((BREAD, BREAD_MESSAGES), (FIREWALL, FIREWALL_MESSAGES))
        for seq, (role, _) in enumerate(messages)
        if role == "assistant"
    }
    assert {(hit["slug"], hit["seq"]) for hit in hits} == expected


def test_search_mode_text_needs_no_model(indexed: Indexed) -> None:
    """`search --mode text` ranks by words without loading a model; hits carry a text rank and no vector rank."""
    no_model = {"MEMORYD_EMBEDDING_MODEL": str(indexed.cli.root / "no-such-model")}
    result = indexed.cli.run("search", "listening", "--mode", "text", "--json", env=no_model)
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert [(hit["slug"], hit["kind"], hit["seq"]) for hit in hits] == [(FIREWALL, "message", 1)]
    assert hits[0]["text_rank"] == 1 and hits[0]["vector_rank"] is None
    assert "listening" in hits[0]["snippet"]
    nothing = indexed.cli.run("search", "xylophonic zeppelin", "--mode", "text", env=no_model)
    assert (nothing.returncode, nothing.stdout) == (0, "no results\n")


# -- errors --------------------------------------------------------------------


def test_ingest_outside_the_folders_is_an_error(cli: Cli, tmp_path: Path) -> None:
    """`ingest PATH` outside the configured folders exits 1 and says which folders it should be in."""
    outside = tmp_path / "outside" / "2025-01-01__stray"
    outside.mkdir(parents=True)
    result = cli.run("ingest", str(outside))
    assert result.returncode == 1
    assert last_line(result.stderr) == (
        f"memoryd: error: {outside} is not inside the conversations folder ({cli.conversations.resolve()})"
        f" or the summaries folder ({cli.summaries.resolve()}); move it there or point [paths] at its parent"
    )
    assert result.stdout == ""


def test_ingest_with_a_broken_file_exits_1_and_counts_it(cli: Cli) -> None:
    """`ingest` exits 1 while a file has an error, counts the files with errors and names each one, run after run."""
    write_conversation(cli.conversations, "2025-01-01__good", [("user", "fine"), ("assistant", "yes")])
    broken = cli.conversations / "2025-01-02__broken"
    broken.mkdir()
    # Cut, then a newline: broken for good (without the newline the line is still being written, not an error).
    (broken / "messages.jsonl").write_text('{"role": "user", "content": "cut\n', encoding="utf-8")
    for _ in range(2):  # the second run re-reads nothing, yet the error still stands
        result = cli.run("ingest")
        assert result.returncode == 1, result.stderr
        assert ", 1 file(s) with errors, 0 failed in " in result.stdout
        assert f"  error: {broken / 'messages.jsonl'}: line 1: invalid JSON" in result.stderr
    (broken / "messages.jsonl").write_text('{"role": "user", "content": "fixed"}\n', encoding="utf-8")
    result = cli.run("ingest")
    assert result.returncode == 0, result.stderr
    assert ", 0 file(s) with errors, 0 failed in " in result.stdout


def test_bad_config_file_exits_2(cli: Cli) -> None:
    """A wrong key in the configuration file exits 2 with `memoryd: configuration error:` and the key."""
    cli.config_path.write_text("[watch]\ndebounce = 500\n", encoding="utf-8")
    result = cli.run("status")
    assert result.returncode == 2
    assert result.stderr == (
        "memoryd: configuration error: unknown key [watch] debounce"
        " (known: debounce_ms, max_wait_ms, on_delete, rescan_interval_s)\n"
    )
    assert result.stdout == ""


def test_bad_environment_variable_exits_2(cli: Cli) -> None:
    """A MEMORYD_* variable that is not an integer where one is needed exits 2 naming the key."""
    result = cli.run("status", env={"MEMORYD_WATCH_DEBOUNCE_MS": "soon"})
    assert result.returncode == 2
    assert result.stderr == "memoryd: configuration error: [watch] debounce_ms must be an integer, got 'soon'\n"


def test_k_zero_is_rejected_by_argparse(cli: Cli) -> None:
    """`search --k 0` is a usage error (exit 2) before any model or database is touched."""
    result = cli.run("search", "anything", "--k", "0")
    assert result.returncode == 2
    assert last_line(result.stderr) == "memoryd search: error: argument --k: must be >= 1: 0"
    assert result.stdout == ""


def test_db_url_prints_the_dsn(cli: Cli) -> None:
    """`db url` prints the configured DSN as is when it holds no password (see test_shared_server for one that does)."""
    result = cli.run("db", "url")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{cli.dsn}\n"


def test_unreachable_database_exits_3(cli: Cli) -> None:
    """`status` against a port where nothing listens retries until the deadline, then exits 3."""
    started = time.monotonic()
    result = cli.run(
        "status",
        env={"MEMORYD_DSN": "postgresql://x@127.0.0.1:1/x", "MEMORYD_DATABASE_RETRY_DEADLINE_S": "2"},
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 3
    assert elapsed < 30, "the deadline bounds the whole wait, not only the last try"
    message = last_line(result.stderr)
    assert message.startswith("memoryd: database unavailable: connection failed: ")
    assert "127.0.0.1" in message
    assert "Connection refused" in message
    assert result.stdout == ""
