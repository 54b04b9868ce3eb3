"""Session folders as written and rewritten: idempotence, growth, user edits, storage, the command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg

from memoryd.config import Config
from memoryd.db import Database
from memoryd.exports.claude_code import import_claude_code
from memoryd.exports.codex import import_codex
from memoryd.formats import parse_conversation
from memoryd.sync import Syncer
from tests.exports.session_helpers import CLAUDE_CODE, CODEX, messages, meta, tree, write_log

MAIN_21 = "2026-03-04__ledger_why_does_the_nightly_import_double_count_refunds"


def session_records(first: int, last: int) -> list[dict[str, object]]:
    """Turns first..last of a Claude Code session, alternating prompt and reply."""
    records: list[dict[str, object]] = []
    for n in range(first, last + 1):
        base = {"uuid": f"u{n}", "sessionId": "s9", "cwd": "/home/me/garden", "timestamp": f"2026-04-01T10:00:{n:02d}Z"}
        if n % 2:
            records.append(
                {**base, "type": "assistant", "message": {"id": f"m{n}", "role": "assistant", "content": f"reply {n}"}}
            )
        else:
            records.append({**base, "type": "user", "message": {"role": "user", "content": f"prompt {n}"}})
    return records


def test_reimport_writes_nothing(tmp_path: Path) -> None:
    """Importing the same logs again changes no file (bytes and mtimes) and reports every folder unchanged."""
    conversations, summaries = tmp_path / "c", tmp_path / "s"
    import_claude_code(CLAUDE_CODE, conversations, summaries)
    import_codex(CODEX, conversations, summaries)
    before = tree(tmp_path)
    again = import_claude_code(CLAUDE_CODE, conversations, summaries)
    again_codex = import_codex(CODEX, conversations, summaries)
    assert tree(tmp_path) == before
    assert again.created == again.updated == again_codex.created == again_codex.updated == []
    assert len(again.unchanged) == 6 and len(again_codex.unchanged) == 3


def test_appended_lines_update_the_same_folder(tmp_path: Path) -> None:
    """A session that grew is rewritten in place, under the slug it got from its first prompt."""
    log = write_log(tmp_path / "logs" / "-home-me-garden" / "s9.jsonl", session_records(0, 1))
    first = import_claude_code(log, tmp_path / "c", tmp_path / "s")
    assert first.created == ["2026-04-01__garden_prompt_0"]
    write_log(log, session_records(2, 3), mode="a")
    second = import_claude_code(log.parent, tmp_path / "c", tmp_path / "s")
    assert second.updated == ["2026-04-01__garden_prompt_0"]
    assert [text for _, text in messages(tmp_path / "c", "2026-04-01__garden_prompt_0")] == [
        "prompt 0",
        "reply 1",
        "prompt 2",
        "reply 3",
    ]
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["2026-04-01__garden_prompt_0"]


def test_user_edits_to_meta_survive(tmp_path: Path) -> None:
    """A title and tags a person put in meta.json survive a re-import; the importer's own keys are refreshed."""
    log = write_log(tmp_path / "logs" / "-home-me-garden" / "s9.jsonl", session_records(0, 1))
    import_claude_code(log, tmp_path / "c", tmp_path / "s")
    path = tmp_path / "c" / "2026-04-01__garden_prompt_0" / "meta.json"
    edited = {**json.loads(path.read_text(encoding="utf-8")), "title": "Garden log", "tags": ["plants"]}
    edited["cwd"] = "/somewhere/else"
    path.write_text(json.dumps(edited), encoding="utf-8")
    write_log(log, session_records(2, 3), mode="a")
    import_claude_code(log, tmp_path / "c", tmp_path / "s")
    found = meta(tmp_path / "c", "2026-04-01__garden_prompt_0")
    assert (found["title"], found["tags"], found["cwd"]) == ("Garden log", ["plants"], "/home/me/garden")


def test_renamed_folder_found_again(tmp_path: Path) -> None:
    """A folder renamed by hand is found by the session id in its meta.json, not duplicated."""
    conversations = tmp_path / "c"
    import_claude_code(CLAUDE_CODE / "v2.1", conversations, tmp_path / "s")
    (conversations / MAIN_21).rename(conversations / "refunds")
    report = import_claude_code(CLAUDE_CODE / "v2.1", conversations, tmp_path / "s")
    assert report.created == []
    assert "refunds" in report.unchanged or "refunds" in report.updated
    assert MAIN_21 not in {p.name for p in conversations.iterdir()}


def test_a_deleted_log_keeps_its_folder(tmp_path: Path) -> None:
    """Deleting the agent's log and importing again leaves the conversation folder where it is."""
    logs = tmp_path / "logs"
    shutil.copytree(CLAUDE_CODE / "v2.0", logs)
    import_claude_code(logs, tmp_path / "c", tmp_path / "s")
    before = tree(tmp_path / "c")
    for path in logs.rglob("agent-*.jsonl"):
        path.unlink()
    import_claude_code(logs, tmp_path / "c", tmp_path / "s")
    assert set(tree(tmp_path / "c")) == set(before)


def test_written_folders_are_stored(db: Database, config: Config, db_dsn: str) -> None:
    """The folders parse as native transcripts and a sync stores them, compactions as level-1 summaries."""
    import_claude_code(CLAUDE_CODE, config.paths.conversations, config.paths.summaries)
    import_codex(CODEX, config.paths.conversations, config.paths.summaries)
    conversation = parse_conversation(config.paths.conversations / MAIN_21)
    assert conversation.title == "Why does the nightly import double-count refunds?"
    assert [m.role for m in conversation.messages] == ["user", "assistant", "tool", "user", "assistant"]
    report = Syncer(db, config).reconcile()
    assert report.failed == 0
    with psycopg.connect(db_dsn) as conn:
        conversations = conn.execute("SELECT count(*) FROM conversations").fetchone()
        summaries = conn.execute(
            "SELECT c.slug, s.level, s.key FROM summaries s JOIN conversations c ON c.id = s.conversation_id ORDER BY 1"
        ).fetchall()
    assert conversations == (9,)
    assert summaries == [
        ("2026-03-04__ledger_why_does_the_nightly_import_double_count_refunds", 1, "compaction-1"),
        ("2026-05-08__weather_is_open_meteo_still_free_for_commercial_use", 1, "compaction-1"),
    ]


# --- the command


def run_import(tmp_path: Path, *args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.toml"
    config.write_text('[paths]\nconversations = "conversations"\nsummaries = "summaries"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMORYD_")}
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "memoryd.cli", "--config", str(config), "import", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )


def test_cli_import_claude_code_default_folder(tmp_path: Path) -> None:
    """`memoryd import claude-code` reads ~/.claude/projects by default and says what it wrote."""
    home = tmp_path / "home"
    shutil.copytree(CLAUDE_CODE / "v2.0", home / ".claude" / "projects")
    result = run_import(tmp_path, "claude-code", home=home)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"imported 3 conversation(s) from {home / '.claude' / 'projects'} into ")
    assert "2 new, 0 updated, 0 unchanged, 1 skipped, 0 damaged" in lines[0]
    assert lines[1].startswith("  skipped: ") and "Warmup" in lines[1]


def test_cli_import_codex_errors(tmp_path: Path) -> None:
    """A missing session folder exits 1 naming it; an export source without PATH is a usage error (2)."""
    missing = run_import(tmp_path, "codex", str(tmp_path / "nope"))
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"memoryd: error: {tmp_path / 'nope'}: no such file or folder")
    no_path = run_import(tmp_path, "chatgpt")
    assert no_path.returncode == 2
    assert "import chatgpt needs PATH" in no_path.stderr
