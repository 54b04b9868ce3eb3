"""ChatGPT and Claude exports → conversation folders: slugs, idempotence, updates, zips, damaged exports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from memoryd.config import Config
from memoryd.db import Database
from memoryd.embed import Embedder
from memoryd.errors import MemorydError, ParseError
from memoryd.exports import import_export, iter_export
from memoryd.formats import parse_conversation
from memoryd.sync import Syncer
from tests.daemon_helpers import database_mismatch, fast_config, running_daemon, wait_for

FIXTURES = Path(__file__).parent.parent / "fixtures"
CHATGPT = FIXTURES / "chatgpt" / "conversations.json"
CLAUDE = FIXTURES / "claude" / "conversations.json"
CHATGPT_SLUGS = ["2024-06-25__orage_codé_textuel", "2024-06-26__new_chat", "2024-06-26__new_chat__7c5d1a0e"]
CLAUDE_SLUGS = ["2024-05-01__plan_de_migration", "2024-05-02__untitled"]


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root with its bytes and mtime: any write shows."""
    return {
        str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def export_list(path: Path) -> list[dict[str, Any]]:
    value = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(value, list)
    return value


def write_export(path: Path, conversations: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(conversations, ensure_ascii=False), encoding="utf-8")
    return path


def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


# --- the ChatGPT export


def test_chatgpt_export_becomes_folders(tmp_path: Path) -> None:
    """One folder per conversation with the raw object and meta.json; empty conversations are skipped."""
    root = tmp_path / "conversations"
    report = import_export("chatgpt", CHATGPT, root)
    assert report.created == CHATGPT_SLUGS
    assert report.skipped == ["conversation 4 ('Vide'): no visible message"]
    assert (report.updated, report.unchanged, report.errors, report.warnings) == ([], [], [], [])
    assert sorted(p.name for p in root.iterdir()) == CHATGPT_SLUGS
    storm = root / CHATGPT_SLUGS[0]
    assert sorted(p.name for p in storm.iterdir()) == ["conversation.json", "meta.json"]
    assert json.loads((storm / "conversation.json").read_text(encoding="utf-8")) == export_list(CHATGPT)[0]
    assert json.loads((storm / "meta.json").read_text(encoding="utf-8")) == {
        "source": "chatgpt",
        "source_id": "6a1c2b3d-1111-4000-8000-000000000001",
    }
    conversation = parse_conversation(storm)
    assert (conversation.title, conversation.created_date, len(conversation.messages)) == (
        "Orage codé / textuel",
        date(2024, 6, 25),
        5,
    )


def test_colliding_titles_get_a_stable_suffix(tmp_path: Path) -> None:
    """Two conversations with the same date and title: the second gets its id's first 8 characters."""
    import_export("chatgpt", CHATGPT, tmp_path)
    first, second = (parse_conversation(tmp_path / slug) for slug in CHATGPT_SLUGS[1:])
    assert first.messages[0].content == "Quelle heure est-il à Tokyo ?"
    assert second.messages[0].content == "Convert 5 miles to km"


def test_claude_export_becomes_folders(tmp_path: Path) -> None:
    """A Claude export gives one folder per non-empty conversation, `name` as title, untitled when blank."""
    report = import_export("claude", CLAUDE, tmp_path)
    assert report.created == CLAUDE_SLUGS
    assert report.skipped == ["conversation 3 ('Jamais commencée'): no visible message"]
    conversation = parse_conversation(tmp_path / CLAUDE_SLUGS[0])
    assert (conversation.title, conversation.source_format) == ("Plan de migration", "claude")
    assert [m.role for m in conversation.messages] == ["user", "assistant", "user", "assistant"]
    assert json.loads((tmp_path / CLAUDE_SLUGS[1] / "meta.json").read_text(encoding="utf-8")) == {
        "source": "claude",
        "source_id": "c2b0f6a3-6666-4000-8000-000000000006",
    }


@pytest.mark.parametrize(("source", "other"), [("chatgpt", CLAUDE), ("claude", CHATGPT)])
def test_wrong_kind_of_export_writes_nothing(tmp_path: Path, source: str, other: Path) -> None:
    """Importing a Claude export as ChatGPT (or the reverse) fails up front, naming the right command."""
    with pytest.raises(ParseError) as info:
        import_export(source, other, tmp_path)
    assert "run `memoryd import" in info.value.reason
    assert list(tmp_path.iterdir()) == []


def test_unknown_source_is_refused(tmp_path: Path) -> None:
    """Only chatgpt and claude are sources."""
    with pytest.raises(MemorydError, match="unknown export source 'gemini'"):
        import_export("gemini", CHATGPT, tmp_path)


# --- idempotence and updates


def test_second_import_changes_nothing_on_disk(tmp_path: Path) -> None:
    """Importing the same export again rewrites no file: bytes and mtimes stay, all reported unchanged."""
    root = tmp_path / "conversations"
    import_export("chatgpt", CHATGPT, root)
    import_export("claude", CLAUDE, root)
    before = tree(root)
    again = import_export("chatgpt", CHATGPT, root)
    again_claude = import_export("claude", CLAUDE, root)
    assert (again.created, again.updated, again.unchanged) == ([], [], CHATGPT_SLUGS)
    assert (again_claude.created, again_claude.updated, again_claude.unchanged) == ([], [], CLAUDE_SLUGS)
    assert tree(root) == before


def _snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the data tables with its xmin: any rewrite changes it."""
    return {
        table: conn.execute(f"SELECT xmin::text, * FROM {table} ORDER BY 2").fetchall()
        for table in ("conversations", "messages", "folder_state", "ingest_errors")
    }


def test_second_import_changes_nothing_in_the_database(db: Database, config: Config) -> None:
    """Import, ingest, import again, ingest again: the second round writes no row."""
    import_export("chatgpt", CHATGPT, config.paths.conversations)
    syncer = Syncer(db, config)
    first = syncer.reconcile()
    assert (first.checked, first.wrote, first.failed) == (3, 3, 0)
    with db.connection() as conn:
        before = _snapshot(conn)
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (9,)
        assert conn.execute("SELECT DISTINCT source_format FROM conversations").fetchall() == [("chatgpt",)]
    import_export("chatgpt", CHATGPT, config.paths.conversations)
    assert syncer.slugs_to_sync() == []
    forced = syncer.reconcile(force=True)
    assert forced.wrote == 0
    with db.connection() as conn:
        assert _snapshot(conn) == before


def test_newer_export_updates_in_place(tmp_path: Path) -> None:
    """A renamed and continued conversation keeps its slug; only its conversation.json is replaced."""
    root = tmp_path / "conversations"
    import_export("chatgpt", CHATGPT, root)
    meta_before = (root / CHATGPT_SLUGS[1] / "meta.json").stat().st_mtime_ns
    conversations = export_list(CHATGPT)
    tokyo = conversations[1]
    tokyo["title"] = "Heure à Tokyo"
    tokyo["mapping"]["a"]["children"] = ["q2"]
    tokyo["mapping"]["q2"] = {
        "id": "q2",
        "parent": "a",
        "children": [],
        "message": {"author": {"role": "user"}, "content": {"content_type": "text", "parts": ["Et à Paris ?"]}},
    }
    tokyo["current_node"] = "q2"
    report = import_export("chatgpt", write_export(tmp_path / "newer.json", conversations), root)
    assert report.updated == [CHATGPT_SLUGS[1]]
    assert sorted(report.unchanged) == sorted([CHATGPT_SLUGS[0], CHATGPT_SLUGS[2]])
    assert sorted(p.name for p in root.iterdir()) == CHATGPT_SLUGS
    conversation = parse_conversation(root / CHATGPT_SLUGS[1])
    assert conversation.title == "Heure à Tokyo"
    assert conversation.messages[-1].content == "Et à Paris ?"
    assert (root / CHATGPT_SLUGS[1] / "meta.json").stat().st_mtime_ns == meta_before


def test_renamed_folder_is_found_by_its_id(tmp_path: Path) -> None:
    """A folder renamed by hand is still the conversation's: re-import updates it, makes no duplicate."""
    import_export("chatgpt", CHATGPT, tmp_path)
    (tmp_path / CHATGPT_SLUGS[0]).rename(tmp_path / "mon_orage")
    report = import_export("chatgpt", CHATGPT, tmp_path)
    assert report.created == []
    assert "mon_orage" in report.unchanged


def test_folder_without_meta_json_is_recognised_by_its_content(tmp_path: Path) -> None:
    """With meta.json deleted, a folder already holding the same bytes is the same conversation: no duplicate."""
    import_export("chatgpt", CHATGPT, tmp_path)
    for slug in CHATGPT_SLUGS:
        (tmp_path / slug / "meta.json").unlink()
    report = import_export("chatgpt", CHATGPT, tmp_path)
    assert (report.created, report.unchanged) == ([], CHATGPT_SLUGS)
    assert sorted(p.name for p in tmp_path.iterdir()) == CHATGPT_SLUGS


def test_existing_hand_made_folder_is_never_overwritten(tmp_path: Path) -> None:
    """A folder already holding the slug but not from this conversation makes the import pick another name."""
    mine = tmp_path / CHATGPT_SLUGS[0]
    mine.mkdir()
    (mine / "conversation.md").write_text("## User\nà moi\n", encoding="utf-8")
    report = import_export("chatgpt", CHATGPT, tmp_path)
    assert report.created[0] == f"{CHATGPT_SLUGS[0]}__6a1c2b3d"
    assert (mine / "conversation.md").read_text(encoding="utf-8") == "## User\nà moi\n"
    assert sorted(p.name for p in mine.iterdir()) == ["conversation.md"]


def test_duplicate_ids_in_one_export(tmp_path: Path) -> None:
    """The same conversation twice in one export is imported once; the second is reported as skipped."""
    conversations = export_list(CHATGPT)[:2]
    report = import_export(
        "chatgpt", write_export(tmp_path / "e.json", [*conversations, conversations[1]]), tmp_path / "c"
    )
    assert report.created == CHATGPT_SLUGS[:2]
    assert report.skipped == [
        f"conversation 3 ('New chat'): same conversation id as {CHATGPT_SLUGS[1]}, already imported"
    ]


def test_no_staging_folder_is_left(tmp_path: Path) -> None:
    """Folders are staged hidden and renamed: after an import no `.import-*` entry remains."""
    import_export("chatgpt", CHATGPT, tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert [p.name for p in tmp_path.rglob(".*")] == []


# --- zips, folders, damaged exports


def test_zip_folder_and_file_give_the_same_folders(tmp_path: Path) -> None:
    """The export's zip, its unzipped folder and its conversations.json import identically."""
    data = CHATGPT.read_bytes()
    archive = zip_of(tmp_path / "export.zip", {"chat.html": b"<html/>", "conversations.json": data})
    unzipped = tmp_path / "unzipped"
    unzipped.mkdir()
    (unzipped / "conversations.json").write_bytes(data)
    trees = []
    for index, source in enumerate((archive, unzipped, CHATGPT)):
        root = tmp_path / f"out{index}"
        assert import_export("chatgpt", source, root).created == CHATGPT_SLUGS
        trees.append({name: content for name, (content, _mtime) in tree(root).items()})
    assert trees[0] == trees[1] == trees[2]


def test_zip_reads_only_the_top_conversations_json(tmp_path: Path) -> None:
    """Nothing is extracted: members with escaping paths are never written, the shallowest export is read."""
    archive = zip_of(
        tmp_path / "export.zip",
        {
            "../../evil.txt": b"x",
            "__MACOSX/conversations.json": b"garbage",
            "deep/er/conversations.json": b"garbage",
            "export/conversations.json": CLAUDE.read_bytes(),
        },
    )
    out = tmp_path / "out"
    assert import_export("claude", archive, out).created == CLAUDE_SLUGS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.zip", "out"]


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ({"chat.html": b"x"}, "no conversations.json in this zip: is it a ChatGPT or Claude data export?"),
        ({"conversations.json": b""}, "empty file"),
    ],
)
def test_zip_without_an_export(tmp_path: Path, members: dict[str, bytes], reason: str) -> None:
    """A zip that holds no (usable) conversations.json is a clear error."""
    archive = zip_of(tmp_path / "x.zip", members)
    with pytest.raises(ParseError) as info:
        import_export("chatgpt", archive, tmp_path / "out")
    assert info.value.reason == reason


def test_zip_bomb_is_refused_by_declared_size(tmp_path: Path) -> None:
    """A member whose uncompressed size is over the limit is refused before reading."""
    archive = zip_of(tmp_path / "bomb.zip", {"conversations.json": b"[" + b" " * 5_000_000 + b"]"})
    assert archive.stat().st_size < 50_000
    with pytest.raises(ParseError) as info:
        import_export("chatgpt", archive, tmp_path / "out", max_bytes=1_000_000)
    assert info.value.reason == "conversations.json is 5000002 bytes uncompressed, over the limit of 1000000"


def test_damaged_zip(tmp_path: Path) -> None:
    """A zip cut in half is reported as a truncated zip, not as bad JSON."""
    whole = zip_of(tmp_path / "a.zip", {"conversations.json": CHATGPT.read_bytes()}).read_bytes()
    (tmp_path / "b.zip").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ParseError) as info:
        import_export("chatgpt", tmp_path / "b.zip", tmp_path / "out")
    assert info.value.reason == (
        "a truncated or damaged zip: it starts like a zip archive but its end (the list of its files) is missing;"
        " download the export again"
    )


def test_truncated_export_keeps_what_came_before(tmp_path: Path) -> None:
    """An export cut short imports the complete conversations before the cut and reports the damage."""
    data = json.dumps(export_list(CHATGPT), ensure_ascii=False)
    cut = data.index('"title": "New chat"', data.index('"title": "New chat"') + 1)
    truncated = tmp_path / "conversations.json"
    truncated.write_text(data[:cut], encoding="utf-8")
    report = import_export("chatgpt", truncated, tmp_path / "out")
    assert report.created == CHATGPT_SLUGS[:2]
    assert len(report.errors) == 1
    assert "import stopped after 2 conversation(s)" in report.errors[0]


def test_damaged_conversations_are_skipped(tmp_path: Path) -> None:
    """Elements that are not conversations are reported; the others are imported."""
    conversations: list[Any] = [[1, 2], {"title": "no mapping"}, export_list(CHATGPT)[1], {"mapping": []}]
    report = import_export("chatgpt", write_export(tmp_path / "e.json", conversations), tmp_path / "out")
    assert report.created == [CHATGPT_SLUGS[1]]
    assert report.errors == [
        "conversation 1: expected a JSON object, got an array",
        "conversation 2 ('no mapping'): not a ChatGPT conversation (no 'mapping')",
        "conversation 4: mapping: expected an object, got an array",
    ]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "empty file"),
        (
            '"text"',
            "expected a JSON array of conversations, or one conversation object; found a string (at character 0)",
        ),
        (
            '{"mapping": {}}\n{"mapping": {}}\n',
            "extra data after the JSON value: another object follows, as in a file of one conversation per line"
            " (JSONL); for such a dataset, run `memoryd import jsonl FILE` (at character 16)",
        ),
        ("  [ ", "cut short: the array of conversations ends after 0 element(s) (at character 4)"),
        ("[{]", "invalid JSON: Expecting property name enclosed in double quotes (at character 2)"),
    ],
)
def test_unreadable_exports(tmp_path: Path, content: str, reason: str) -> None:
    """An export that breaks before its first conversation is a ParseError with its reason."""
    path = tmp_path / "conversations.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ParseError) as info:
        import_export("chatgpt", path, tmp_path / "out")
    assert info.value.reason == reason


def test_one_conversation_object_is_an_export_of_one(tmp_path: Path) -> None:
    """A file holding a single conversation object (not an array) imports that conversation."""
    path = tmp_path / "one.json"
    path.write_text(json.dumps(export_list(CLAUDE)[0]), encoding="utf-8")
    assert import_export("claude", path, tmp_path / "out").created == CLAUDE_SLUGS[:1]


def test_invalid_bytes_and_lone_surrogates_are_replaced(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 and half surrogate pairs become U+FFFD in the written file, with a warning."""
    conversation = export_list(CLAUDE)[1]
    conversation["chat_messages"][0]["text"] = "Hello \ud83d"
    data = json.dumps([conversation]).encode("ascii").replace(b"Hi!", b"Hi\xff!")
    (tmp_path / "conversations.json").write_bytes(data)
    report = import_export("claude", tmp_path / "conversations.json", tmp_path / "out")
    assert report.created == CLAUDE_SLUGS[1:]
    assert report.warnings == [f"{CLAUDE_SLUGS[1]}: 2 invalid character(s) replaced by U+FFFD"]
    messages = parse_conversation(tmp_path / "out" / CLAUDE_SLUGS[1]).messages
    assert [m.content for m in messages] == ["Hello \ufffd", "Hi\ufffd! How can I help?"]


def test_iter_export_streams_large_arrays(tmp_path: Path) -> None:
    """Conversations larger than the read chunk, and many of them, come out whole and in order."""
    big = "x" * 3_000_000
    values = [{"n": n, "text": big if n % 50 == 0 else str(n)} for n in range(200)]
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(values, indent=1), encoding="utf-8")
    assert [(index, value) for index, value in iter_export(path)] == list(enumerate(values))


def test_unwritable_conversations_folder(tmp_path: Path) -> None:
    """A conversations folder that is a file is a MemorydError naming it."""
    (tmp_path / "conversations").write_text("x", encoding="utf-8")
    with pytest.raises(MemorydError, match="conversations"):
        import_export("chatgpt", CHATGPT, tmp_path / "conversations")


# --- with the daemon running


def test_daemon_stores_an_import_once(config: Config, db_dsn: str, embedder: Embedder) -> None:
    """Imported while the daemon watches: each folder appears complete and is stored exactly once."""
    config = fast_config(config)
    with capture_logs() as logs, running_daemon(config, embedder):
        import_export("chatgpt", CHATGPT, config.paths.conversations)
        wait_for(
            lambda: (
                database_mismatch(db_dsn, config, config.embedding.model) is None
                and len(list(config.paths.conversations.iterdir())) == len(CHATGPT_SLUGS)
            ),
            timeout=90,
            what="the imported conversations stored and embedded",
        )
    stored = sorted(event["slug"] for event in logs if event.get("event") == "slug_stored")
    assert stored == CHATGPT_SLUGS
    assert not [event for event in logs if event.get("log_level") in ("error", "warning")]


# --- the command


def run_import(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.toml"
    config.write_text('[paths]\nconversations = "conversations"\nsummaries = "summaries"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMORYD_")}
    return subprocess.run(
        [sys.executable, "-m", "memoryd.cli", "--config", str(config), "import", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )


def test_cli_import(tmp_path: Path) -> None:
    """`memoryd import chatgpt FILE` writes the folders and says what it did; again, all unchanged."""
    result = run_import(tmp_path, "chatgpt", str(CHATGPT))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"imported 4 conversation(s) from {CHATGPT} into {tmp_path / 'conversations'}:")
    assert lines[0].split(": ", 1)[1].startswith("3 new, 0 updated, 0 unchanged, 1 skipped, 0 damaged in ")
    assert lines[1:] == ["  skipped: conversation 4 ('Vide'): no visible message"]
    assert sorted(p.name for p in (tmp_path / "conversations").iterdir()) == CHATGPT_SLUGS
    again = run_import(tmp_path, "chatgpt", str(CHATGPT))
    assert "0 new, 0 updated, 3 unchanged, 1 skipped, 0 damaged" in again.stdout


def test_cli_import_errors(tmp_path: Path) -> None:
    """A missing file exits 1 with the reason; a damaged conversation exits 1 and is listed on stderr."""
    missing = run_import(tmp_path, "claude", str(tmp_path / "nope.zip"))
    assert missing.returncode == 1
    assert missing.stderr == f"memoryd: error: {tmp_path / 'nope.zip'}: cannot read: No such file or directory\n"
    damaged = write_export(tmp_path / "e.json", [*export_list(CLAUDE)[:1], {"chat_messages": 3}])
    result = run_import(tmp_path, "claude", str(damaged))
    assert result.returncode == 1
    assert result.stderr == "  error: conversation 2: chat_messages: expected an array, got a number\n"
