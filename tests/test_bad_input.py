"""Bad input never hurts: every bad file ends as a recorded error or warning, the rest is stored.

Broken encodings, binary files, symlinks out of the watched folder or in
loops, odd folder names, huge transcripts and lines, and fuzzed files (random
and mutated from the hand-made fixtures), first through the parsers, then
through a full ingest into a real database.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import time
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memoryd.config import Config
from memoryd.db import Database
from memoryd.errors import ParseError
from memoryd.exports import ImportReport, import_export, import_jsonl
from memoryd.formats import parse_conversation, read_bytes
from memoryd.records import ROLES, Conversation
from memoryd.summaries import parse_summary_folder
from memoryd.sync import Syncer
from tests.conftest import write_conversation, write_summaries

FIXTURES = Path(__file__).parent / "fixtures"
SLUG = "2025-06-25__bad"
GOOD_JSONL = b'{"role": "user", "content": "original"}\n{"role": "assistant", "content": "kept"}\n'


def make_folder(root: Path, files: dict[str, bytes], slug: str = SLUG) -> Path:
    folder = root / slug
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def parse_error(folder: Path) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_conversation(folder)
    return info.value


def noise(size: int, seed: int = 0) -> bytes:
    """Random bytes, like an image or an archive."""
    return random.Random(seed).randbytes(size)


# --- encodings and binary data


def test_binary_file_is_refused(tmp_path: Path) -> None:
    """A binary file in place of a transcript is an error, never a conversation of noise."""
    folder = make_folder(tmp_path, {"conversation.md": b"\x89PNG\r\n\x1a\n" + noise(4096)})
    error = parse_error(folder)
    assert error.path == folder / "conversation.md"
    assert error.reason.startswith("not text (binary data, or an encoding other than UTF-8): ")


def test_legacy_encoding_is_decoded_with_a_warning(tmp_path: Path) -> None:
    """Latin-1 text: the accented letters become U+FFFD, the rest is kept, the warning says where."""
    folder = make_folder(tmp_path, {"conversation.md": "## User\nun café crème\n".encode("latin-1")})
    conversation = parse_conversation(folder)
    assert conversation.messages[0].content == "un caf\ufffd cr\ufffdme"
    assert conversation.warnings == (
        "conversation.md: not valid UTF-8 (first bad byte at offset 14, line 2), undecodable bytes replaced by U+FFFD",
    )


def test_utf16_with_bom_is_decoded(tmp_path: Path) -> None:
    """A UTF-16 file with its byte order mark (Windows Notepad) is read, with a warning."""
    folder = make_folder(tmp_path, {"conversation.md": "## User\nété\n".encode("utf-16")})
    conversation = parse_conversation(folder)
    assert conversation.messages[0].content == "été"
    assert conversation.warnings == ("conversation.md: decoded as UTF-16 (byte order mark)",)


def test_non_utf8_meta_json_is_decoded_with_a_warning(tmp_path: Path) -> None:
    """meta.json is decoded leniently too; its warning names it."""
    folder = make_folder(tmp_path, {"messages.jsonl": GOOD_JSONL, "meta.json": '{"title": "café"}'.encode("latin-1")})
    conversation = parse_conversation(folder)
    assert conversation.title == "caf\ufffd"
    assert conversation.warnings[0].startswith("meta.json: not valid UTF-8")


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("messages.jsonl", b"", "empty file"),
        ("conversation.json", b"\xef\xbb\xbf", "empty file"),
        ("messages.jsonl", b'{"role": "user", "content": "cut', "invalid JSON"),
        ("conversation.json", b'{"messages": [{"role": "user", "content": "a"}', "invalid JSON"),
        ("conversation.json", b'[{"role": "user", "content": "a"}]', "an array of messages, not a conversation"),
        ("messages.jsonl", b"[1, 2]\n", "an array, not a message"),
        ("conversation.md", b"\x00" * 100, "not text"),
    ],
)
def test_broken_files_are_errors(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    """Empty, truncated, wrongly shaped and binary transcripts are errors naming the file."""
    folder = make_folder(tmp_path, {name: data})
    error = parse_error(folder)
    assert error.path == folder / name
    assert reason in error.reason


def test_size_limit(tmp_path: Path) -> None:
    """A file over the size limit is refused before it is read."""
    path = tmp_path / "big"
    path.write_bytes(b"x" * 100)
    with pytest.raises(ParseError) as info:
        read_bytes(path, limit=10)
    assert info.value.reason == "too large: 100 bytes (the limit is 10)"


# --- symlinks and special files


def test_symlink_out_of_the_watched_folder_is_not_followed(tmp_path: Path) -> None:
    """A transcript symlinked to a file outside the watched folder is an error, and that file is not read."""
    secret = tmp_path / "secret.md"
    secret.write_text("## User\nsecret\n", encoding="utf-8")
    root = tmp_path / "conversations"
    folder = make_folder(root, {})
    (folder / "conversation.md").symlink_to(secret)
    error = parse_error(folder)
    assert error.path == folder / "conversation.md"
    assert error.reason == f"symlink to {secret}, outside the watched folder {root}: not followed"


def test_symlink_inside_the_watched_folder_is_followed(tmp_path: Path) -> None:
    """A symlink to a file elsewhere in the watched folder is read like the file."""
    shared = make_folder(tmp_path, {"messages.jsonl": GOOD_JSONL}, slug="shared")
    folder = make_folder(tmp_path, {})
    (folder / "messages.jsonl").symlink_to(shared / "messages.jsonl")
    assert [m.content for m in parse_conversation(folder).messages] == ["original", "kept"]


@pytest.mark.parametrize("name", ["conversation.md", "chat.md", "meta.json"])
def test_symlink_loop_is_an_error(tmp_path: Path, name: str) -> None:
    """A looping symlink, whatever its role in the folder, is an error rather than silently skipped."""
    folder = make_folder(tmp_path, {"messages.jsonl": GOOD_JSONL} if name == "meta.json" else {})
    (folder / "a").symlink_to(folder / name)
    (folder / name).symlink_to(folder / "a")
    error = parse_error(folder)
    assert (error.path, error.reason) == (folder / name, "symlink loop: not followed")


def test_shadowed_symlink_is_not_followed(tmp_path: Path) -> None:
    """A bad symlink hidden by a transcript of higher precedence is only mentioned, never followed."""
    folder = make_folder(tmp_path, {"messages.jsonl": GOOD_JSONL})
    (folder / "conversation.json").symlink_to("/etc/hostname")
    conversation = parse_conversation(folder)
    assert [m.content for m in conversation.messages] == ["original", "kept"]
    assert conversation.warnings == ("ignored conversation.json, messages.jsonl takes precedence",)


def test_broken_symlink_is_an_error(tmp_path: Path) -> None:
    """A dangling transcript symlink is named, not taken for an absent file."""
    folder = make_folder(tmp_path, {})
    (folder / "messages.jsonl").symlink_to(folder / "gone.jsonl")
    assert parse_error(folder).reason == "broken symlink: its target does not exist"


def test_slug_folder_symlinked_out_is_refused(tmp_path: Path) -> None:
    """A slug folder that is a symlink to a folder outside the watched one is refused."""
    outside = make_folder(tmp_path / "elsewhere", {"messages.jsonl": GOOD_JSONL}, slug="x")
    root = tmp_path / "conversations"
    root.mkdir()
    (root / SLUG).symlink_to(outside, target_is_directory=True)
    assert "outside the watched folder" in parse_error(root / SLUG).reason


def test_summary_symlinks(tmp_path: Path) -> None:
    """Summary files symlinked out of the summaries folder, or looping, are errors of their own."""
    secret = tmp_path / "secret.json"
    secret.write_text('{"level": 1, "content": "secret"}', encoding="utf-8")
    root = tmp_path / "summaries"
    folder = make_folder(root, {"good.json": b'{"level": 1, "content": "ok"}'})
    (folder / "out.json").symlink_to(secret)
    (folder / "loop.json").symlink_to(folder / "loop.json")
    results = parse_summary_folder(folder)
    assert [s.content for s in results[folder / "good.json"]] == ["ok"]  # type: ignore[union-attr]
    assert isinstance(results[folder / "out.json"], ParseError)
    assert "outside the watched folder" in results[folder / "out.json"].reason  # type: ignore[union-attr]
    assert results[folder / "loop.json"].reason == "symlink loop: not followed"  # type: ignore[union-attr]


def test_fifo_is_not_read(tmp_path: Path) -> None:
    """A FIFO named like a transcript is not input: parsing never blocks on it."""
    folder = make_folder(tmp_path, {})
    os.mkfifo(folder / "conversation.md")
    os.mkfifo(folder / "chat.md")
    assert parse_error(folder).reason == "no transcript (expected messages.jsonl, conversation.json or conversation.md)"


# --- a full ingest


def problems(db: Database, slug: str) -> dict[str, tuple[str, str]]:
    with db.connection() as conn:
        rows = conn.execute("SELECT path, severity, error FROM ingest_errors WHERE slug = %s", (slug,)).fetchall()
    return {path: (severity, error) for path, severity, error in rows}


def stored_messages(db: Database, slug: str) -> list[tuple[int, str, str, str | None]]:
    with db.connection() as conn:
        return conn.execute(
            "SELECT m.seq, m.role, m.content, m.ts FROM messages m JOIN conversations c ON c.id = m.conversation_id"
            " WHERE c.slug = %s ORDER BY m.seq",
            (slug,),
        ).fetchall()


def garbage_folder(folder: Path, kind: str) -> Path:
    """Replace a good transcript by one kind of garbage; the path the error will name."""
    transcript = folder / "messages.jsonl"
    if kind == "binary":
        transcript.write_bytes(noise(2048))
    elif kind == "truncated":
        transcript.write_bytes(GOOD_JSONL[:-10])
    elif kind == "empty":
        transcript.write_bytes(b"")
    elif kind == "json-array":
        transcript.unlink()
        (folder / "conversation.json").write_bytes(b'[{"role": "user", "content": "x"}]')
        return folder / "conversation.json"
    elif kind == "no-transcript":
        transcript.unlink()
        (folder / "notes.pdf").write_bytes(b"%PDF-1.4")
        return folder
    elif kind == "symlink-loop":
        transcript.unlink()
        transcript.symlink_to(transcript)
    return transcript


@pytest.mark.parametrize("kind", ["binary", "truncated", "empty", "json-array", "no-transcript", "symlink-loop"])
def test_stored_conversation_survives_garbage(db: Database, config: Config, kind: str) -> None:
    """A stored conversation survives its transcript turning into garbage, and is updated when a good one returns."""
    folder = make_folder(config.paths.conversations, {"messages.jsonl": GOOD_JSONL})
    other = write_conversation(config.paths.conversations, "2025-06-26__other", [("user", "first")])
    syncer = Syncer(db, config)
    syncer.reconcile()
    bad_path = garbage_folder(folder, kind)
    write_conversation(config.paths.conversations, other.name, [("user", "second")])
    report = syncer.reconcile()
    assert (report.checked, report.failed) == (2, 0)
    assert [row[2] for row in stored_messages(db, SLUG)] == ["original", "kept"]
    assert [row[2] for row in stored_messages(db, other.name)] == ["second"]
    assert list(problems(db, SLUG)) == [str(bad_path)]
    assert problems(db, SLUG)[str(bad_path)][0] == "error"
    for leftover in folder.iterdir():
        leftover.unlink()
    (folder / "messages.jsonl").write_bytes(b'{"role": "user", "content": "fixed"}\n')
    syncer.reconcile()
    assert [row[2] for row in stored_messages(db, SLUG)] == ["fixed"]
    assert problems(db, SLUG) == {}


def test_warnings_are_recorded_and_cleared(db: Database, config: Config) -> None:
    """A repaired transcript is stored and its warning recorded; the warning goes when the file is clean."""
    folder = make_folder(config.paths.conversations, {"conversation.md": b"## User\ncaf\xe9\n"})
    syncer = Syncer(db, config)
    syncer.reconcile()
    assert [row[2] for row in stored_messages(db, SLUG)] == ["caf\ufffd"]
    assert problems(db, SLUG) == {
        str(folder / "conversation.md"): (
            "warning",
            "conversation.md: not valid UTF-8 (first bad byte at offset 11, line 2),"
            " undecodable bytes replaced by U+FFFD",
        )
    }
    (folder / "conversation.md").write_text("## User\ncafé\n", encoding="utf-8")
    syncer.reconcile()
    assert [row[2] for row in stored_messages(db, SLUG)] == ["café"]
    assert problems(db, SLUG) == {}


def test_symlinked_slug_folders_in_a_full_ingest(db: Database, config: Config, tmp_path: Path) -> None:
    """A slug folder replaced by a looping or escaping symlink is a recorded error and the stored version stays."""
    outside = make_folder(tmp_path / "elsewhere", {"messages.jsonl": b'{"role": "user", "content": "secret"}\n'})
    looped = make_folder(config.paths.conversations, {"messages.jsonl": GOOD_JSONL}, slug="2025-06-25__loop")
    escaped = make_folder(config.paths.conversations, {"messages.jsonl": GOOD_JSONL}, slug="2025-06-25__out")
    summaries = write_summaries(config.paths.summaries, looped.name, [{"level": 1, "content": "résumé"}]).parent
    syncer = Syncer(db, config)
    syncer.reconcile()
    for folder in (looped, escaped, summaries):
        shutil.rmtree(folder)
    looped.symlink_to(looped, target_is_directory=True)
    summaries.symlink_to(summaries, target_is_directory=True)
    escaped.symlink_to(outside, target_is_directory=True)
    (config.paths.conversations / "2025-06-25__alias").symlink_to(config.paths.conversations / SLUG)
    make_folder(config.paths.conversations, {"messages.jsonl": GOOD_JSONL})
    report = syncer.reconcile()
    assert report.failed == 0
    for slug in (looped.name, escaped.name, "2025-06-25__alias", SLUG):
        assert [row[2] for row in stored_messages(db, slug)] == ["original", "kept"], slug
    with db.connection() as conn:
        assert conn.execute("SELECT content FROM summaries").fetchall() == [("résumé",)]
    assert problems(db, looped.name) == {
        str(looped): ("error", "symlink loop: not followed"),
        str(summaries): ("error", "symlink loop: not followed"),
    }
    assert problems(db, escaped.name) == {
        str(escaped): (
            "error",
            f"symlink to {outside}, outside the watched folder {config.paths.conversations}: not followed",
        )
    }


ODD_SLUGS = [
    "2025-06-25 avec des espaces",
    unicodedata.normalize("NFD", "2025-06-25__café_décomposé"),
    "2025-06-25__שלום_עולם",
    "2025-06-25__🎉_fête",
    "2025-06-25__zero\u200bwidth",
    "-leading-dash",
    "2025-06-25__" + "é" * 100,
]


def test_odd_folder_names_are_stored(db: Database, config: Config) -> None:
    """Spaces, decomposed accents, right-to-left scripts, emoji and long names are ordinary slugs."""
    for slug in ODD_SLUGS:
        write_conversation(config.paths.conversations, slug, [("user", slug)])
    report = Syncer(db, config).reconcile()
    assert (report.checked, report.wrote, report.failed) == (len(ODD_SLUGS), len(ODD_SLUGS), 0)
    for slug in ODD_SLUGS:
        assert [row[2] for row in stored_messages(db, slug)] == [slug]


def test_non_utf8_names_are_recorded_not_fatal(db: Database, config: Config) -> None:
    """A folder or file name that is not UTF-8 is a recorded error; the other slugs and files are stored."""
    root = os.fsencode(config.paths.conversations)
    os.mkdir(root + b"/2025-06-25__caf\xe9")
    with open(root + b"/2025-06-25__caf\xe9/messages.jsonl", "wb") as file:
        file.write(GOOD_JSONL)
    write_conversation(config.paths.conversations, "2025-06-26__ok", [("user", "ok")])
    summaries = write_summaries(config.paths.summaries, "2025-06-26__ok", [{"level": 1, "content": "s"}])
    with open(os.fsencode(summaries.parent) + b"/r\xe9sum\xe9.json", "wb") as file:
        file.write(b'{"level": 2, "content": "s2"}')
    report = Syncer(db, config).reconcile()
    assert report.checked == 2
    assert [row[2] for row in stored_messages(db, "2025-06-26__ok")] == ["ok"]
    bad_slug = "2025-06-25__caf\ufffd"
    assert problems(db, bad_slug) == {
        str(config.paths.conversations / bad_slug): (
            "error",
            f"ParseError: {config.paths.conversations / bad_slug}: folder name is not valid UTF-8: rename it",
        )
    }
    assert problems(db, "2025-06-26__ok") == {
        str(summaries.parent / "r\ufffdsum\ufffd.json"): ("error", "file name is not valid UTF-8")
    }


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_folder_is_recorded(db: Database, config: Config) -> None:
    """A slug folder that cannot be listed is an ingest error; the other slugs are stored."""
    folder = make_folder(config.paths.conversations, {"messages.jsonl": GOOD_JSONL})
    write_conversation(config.paths.conversations, "2025-06-26__ok", [("user", "ok")])
    folder.chmod(0)
    try:
        report = Syncer(db, config).reconcile()
    finally:
        folder.chmod(0o755)
    assert report.failed == 0
    assert list(problems(db, SLUG)) == [str(folder)]


# --- huge transcripts and lines


def _markdown_of_size(size: int, shape: str) -> str:
    if shape == "paragraphs":
        turn = "## User\n" + "Une question assez longue sur l'orage. " * 20 + "\n\n## Assistant\n"
        turn += ("Une réponse avec du `code` et des accents éàü. " * 30 + "\n") * 3 + "\n"
    else:  # a million short lines, with fenced code holding role headings
        turn = "## User\nQuestion courte ?\n\n## Assistant\n" + "Une ligne de réponse ordinaire.\n" * 40
        turn += "```markdown\n## User\nprint('x')\n```\n\n"
    return turn * (size // len(turn.encode("utf-8")) + 1)


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["paragraphs", "short-lines"])
def test_50mb_markdown_transcript(tmp_path: Path, shape: str) -> None:
    """A 50 MB Markdown transcript parses completely, in linear time (about 1 to 2 s on a quiet machine)."""
    text = _markdown_of_size(50 * 1024 * 1024, shape)
    folder = make_folder(tmp_path, {"conversation.md": text.encode("utf-8")})
    started = time.monotonic()
    conversation = parse_conversation(folder)
    seconds = time.monotonic() - started
    assert len(conversation.messages) == text.count("## Assistant") * 2
    assert conversation.total_chars == len(text)
    print(f"50 MB markdown ({shape}) parsed in {seconds:.2f}s")  # the figure, shown with -s; never asserted


@pytest.mark.slow
def test_50mb_jsonl_transcript(tmp_path: Path) -> None:
    """A 50 MB JSONL transcript parses completely."""
    line = json.dumps({"role": "user", "content": "é" * 2000, "ts": "2025-06-25T14:03:00+02:00"}) + "\n"
    count = 50 * 1024 * 1024 // len(line) + 1
    folder = make_folder(tmp_path, {"messages.jsonl": (line * count).encode("utf-8")})
    assert len(parse_conversation(folder).messages) == count


TEN_MB = 10 * 1024 * 1024


@pytest.mark.slow
@pytest.mark.parametrize(
    "line",
    [
        "x" * TEN_MB,
        "## a" + " " * TEN_MB + "b",  # backtracking bait for a heading pattern
        "# " + "t " * (TEN_MB // 2),
        "**User:** " + "y" * TEN_MB,
        "**" + "z" * TEN_MB,
        "```" + "`" * TEN_MB,
        "User:" + " " * TEN_MB,
    ],
    ids=["plain", "heading-spaces", "h1", "bold", "open-bold", "fence", "plain-role"],
)
def test_10mb_lines(tmp_path: Path, line: str) -> None:
    """Lines of 10 MB of any shape are read in linear time and kept whole."""
    text = f"## User\nq\n## Assistant\n{line}\nend\n"
    folder = make_folder(tmp_path, {"conversation.md": text.encode("utf-8")})
    started = time.monotonic()
    messages = parse_conversation(folder).messages
    assert time.monotonic() - started < 20  # a quadratic pattern would take hours, not seconds
    assert sum(len(m.content) for m in messages) >= TEN_MB


@pytest.mark.slow
def test_10mb_message_is_stored(db: Database, config: Config) -> None:
    """A message of 10 MB goes through a full ingest into the database."""
    big = "mot " * (TEN_MB // 4)
    write_conversation(config.paths.conversations, SLUG, [("user", "q"), ("assistant", big)])
    report = Syncer(db, config).reconcile()
    assert (report.wrote, report.failed) == (1, 0)
    with db.connection() as conn:
        assert conn.execute("SELECT max(length(content)) FROM messages").fetchone() == (len(big),)


# --- fuzzing: random and mutated files, through the parsers and a full ingest


_ROOT_UUID = "00000000-0000-4000-8000-000000000000"
# Claude branches (a retried answer), ChatGPT turns addressed to tools, and
# messages.jsonl in OpenAI (content parts, tool_calls) and ShareGPT shapes.
_SHAPE_SEEDS: list[tuple[str, object]] = [
    (
        "conversation.json",
        {
            "name": "branches",
            "chat_messages": [
                {
                    "uuid": "a",
                    "parent_message_uuid": _ROOT_UUID,
                    "sender": "human",
                    "text": "Q",
                    "created_at": "2025-01-01T00:00:00Z",
                },
                {
                    "uuid": "b",
                    "parent_message_uuid": "a",
                    "sender": "assistant",
                    "text": "old",
                    "created_at": "2025-01-01T00:01:00Z",
                },
                {
                    "uuid": "c",
                    "parent_message_uuid": "a",
                    "sender": "assistant",
                    "text": "new",
                    "created_at": "2025-01-01T00:02:00Z",
                },
            ],
        },
    ),
    (
        "conversation.json",
        {
            "current_node": "t",
            "mapping": {
                "u": {
                    "parent": None,
                    "message": {
                        "author": {"role": "user"},
                        "recipient": "all",
                        "content": {"content_type": "text", "parts": ["draw"]},
                    },
                },
                "p": {
                    "parent": "u",
                    "message": {
                        "author": {"role": "assistant"},
                        "recipient": "dalle.text2im",
                        "content": {"content_type": "text", "parts": ["{}"]},
                    },
                },
                "t": {
                    "parent": "p",
                    "message": {
                        "author": {"role": "tool"},
                        "recipient": "all",
                        "content": {
                            "content_type": "multimodal_text",
                            "parts": [{"content_type": "image_asset_pointer"}],
                        },
                    },
                },
            },
        },
    ),
]
_JSONL_SEEDS = [
    b'{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]}\n'
    b'{"role": "assistant", "content": null, "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}\n'
    b'{"role": "tool", "content": "ok"}\n',
    b'{"from": "human", "value": "hi"}\n{"from": "gpt", "value": "hello"}\n',
]
DATASET = FIXTURES / "datasets" / "chat.jsonl"


def _seeds() -> list[tuple[str, bytes]]:
    seeds = [("conversation.md", path.read_bytes()) for path in sorted((FIXTURES / "markdown").iterdir())]
    seeds += [(path.name, path.read_bytes()) for path in sorted((FIXTURES / "native").iterdir())]
    for source in ("chatgpt", "claude"):
        first = json.loads((FIXTURES / source / "conversations.json").read_text(encoding="utf-8"))[0]
        seeds.append(("conversation.json", json.dumps(first, ensure_ascii=False).encode("utf-8")))
    seeds += [(name, json.dumps(doc).encode("utf-8")) for name, doc in _SHAPE_SEEDS]
    seeds += [("messages.jsonl", data) for data in _JSONL_SEEDS]
    seeds += [("conversation.json", line) for line in DATASET.read_bytes().splitlines()]  # OpenAI and ShareGPT
    return seeds


SEEDS = _seeds()
TRANSCRIPT_SEEDS = [(name, data) for name, data in SEEDS if name != "meta.json"]
TRANSCRIPT_NAMES = ["messages.jsonl", "conversation.json", "conversation.md", "chat.txt"]


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """A few truncations, byte changes, insertions, deletions and duplications of ``data``."""
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "duplicate"]))
        end = min(len(data), at + draw(st.integers(0, 64)))
        if kind == "truncate":
            data = data[:at]
        elif kind == "flip" and data:
            index = min(at, len(data) - 1)
            data = data[:index] + bytes([draw(st.integers(0, 255))]) + data[index + 1 :]
        elif kind == "insert":
            inserted = draw(st.binary(max_size=16) | st.sampled_from([b"\n## User\n", b"```\n", b'"}', b"\x00"]))
            data = data[:at] + inserted + data[at:]
        elif kind == "delete":
            data = data[:at] + data[end:]
        elif kind == "duplicate":
            data = data[:end] + data[at:end] + data[end:]
    return data


@st.composite
def good_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid transcript: a fixture as is, or generated JSONL messages."""
    if draw(st.booleans()):
        return draw(st.sampled_from(TRANSCRIPT_SEEDS))
    messages = draw(
        st.lists(st.tuples(st.sampled_from(ROLES), st.text(max_size=40)), min_size=1, max_size=5),
    )
    lines = [json.dumps({"role": role, "content": content}) for role, content in messages]
    return "messages.jsonl", ("\n".join(lines) + "\n").encode("utf-8")


@st.composite
def any_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """Good files, mutated fixtures, random bytes and random text, under any transcript name."""
    choice = draw(st.sampled_from(["good", "mutated", "bytes", "text"]))
    if choice == "good":
        return draw(good_files())
    name = draw(st.sampled_from(TRANSCRIPT_NAMES))
    if choice == "mutated":
        seed_name, seed = draw(st.sampled_from(SEEDS))
        return (name if draw(st.booleans()) else seed_name), draw(mutations(seed))
    if choice == "bytes":
        return name, draw(st.binary(max_size=300))
    return name, draw(st.text(max_size=300)).encode("utf-8", "surrogatepass")


SUMMARY_SEED = b'{"level": 1, "covers": [0, 1], "content": "r\xc3\xa9sum\xc3\xa9", "topics": ["t"]}\n'


@st.composite
def summary_files(draw: st.DrawFn) -> bytes | None:
    return draw(st.none() | st.just(SUMMARY_SEED) | mutations(SUMMARY_SEED) | st.binary(max_size=100))


def parse_or_error(folder: Path) -> Conversation | ParseError:
    try:
        return parse_conversation(folder)
    except ParseError as exc:
        return exc


def _check_conversation(folder: Path) -> None:
    conversation = parse_or_error(folder)
    if isinstance(conversation, ParseError):
        assert conversation.path == folder or conversation.path.parent == folder
        return
    assert conversation.messages
    assert [m.seq for m in conversation.messages] == list(range(len(conversation.messages)))
    assert all(m.role in ROLES for m in conversation.messages)
    assert all("\x00" not in m.content for m in conversation.messages)
    assert conversation.title


def _reset(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=400, deadline=None)
@given(file=any_files(), with_meta=st.booleans())
def test_parser_fuzz(tmp_path: Path, file: tuple[str, bytes], with_meta: bool) -> None:
    """Random and mutated files give a Conversation or a ParseError naming a file of the folder, nothing else."""
    folder = tmp_path / SLUG
    _reset(folder)
    name, data = file
    (folder / name).write_bytes(data)
    if with_meta and name != "meta.json":
        (folder / "meta.json").write_bytes(data[:80])
    _check_conversation(folder)


_EXPORTS = {source: (FIXTURES / source / "conversations.json").read_bytes() for source in ("chatgpt", "claude")}
_COUNTER = itertools.count()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150, deadline=None)
@given(source=st.sampled_from(sorted(_EXPORTS)), data=st.data())
def test_import_fuzz(tmp_path: Path, source: str, data: st.DataObject) -> None:
    """A mutated export gives a report or a ParseError; every folder it writes parses."""
    export = tmp_path / f"export{next(_COUNTER)}.json"
    export.write_bytes(data.draw(mutations(_EXPORTS[source]) | st.binary(max_size=200)))
    out = tmp_path / f"out{next(_COUNTER)}"
    report: ImportReport | ParseError
    try:
        report = import_export(source, export, out)
    except ParseError as exc:
        report = exc
    if isinstance(report, ParseError):
        assert report.path == export
        return
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(report.created)
    for slug in written:
        assert parse_conversation(out / slug).messages


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150, deadline=None)
@given(data=st.data())
def test_import_jsonl_fuzz(tmp_path: Path, data: st.DataObject) -> None:
    """A mutated dataset gives a report or a ParseError; every line is accounted for once, every folder parses."""
    dataset = tmp_path / f"dataset{next(_COUNTER)}.jsonl"
    dataset.write_bytes(data.draw(mutations(DATASET.read_bytes()) | st.binary(max_size=200)))
    out = tmp_path / f"out{next(_COUNTER)}"
    report: ImportReport | ParseError
    try:
        report = import_jsonl(dataset, out)
    except ParseError as exc:
        report = exc
    if isinstance(report, ParseError):
        assert report.path == dataset
        return
    lines = sum(1 for line in dataset.read_bytes().split(b"\n") if line.strip())
    outcomes = [report.created, report.updated, report.unchanged, report.skipped, report.errors]
    assert sum(len(outcome) for outcome in outcomes) == lines
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(report.created)
    for slug in written:
        assert parse_conversation(out / slug).messages


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=25, deadline=None)
@given(
    files=st.lists(st.tuples(st.one_of(good_files(), any_files()), summary_files()), min_size=1, max_size=4),
    odd_name=st.text(st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="/"), max_size=12),
)
def test_full_ingest_fuzz(
    db: Database, config: Config, files: list[tuple[tuple[str, bytes], bytes | None]], odd_name: str
) -> None:
    """One reconcile over good and bad folders: nothing escapes, each bad file is recorded, each good one stored."""
    run = next(_COUNTER)
    slugs = []
    for index, ((name, data), summary) in enumerate(files):
        slug = f"2025-01-01__fuzz_{run}_{index}_{odd_name}".rstrip(" .")
        slugs.append(slug)
        make_folder(config.paths.conversations, {name: data}, slug=slug)
        if summary is not None:
            make_folder(config.paths.summaries, {"s.jsonl": summary}, slug=slug)
    report = Syncer(db, config).reconcile()
    assert report.failed == 0
    for slug in slugs:
        expected: dict[str, str] = {}
        conversation = parse_or_error(config.paths.conversations / slug)
        if isinstance(conversation, ParseError):
            expected[str(conversation.path)] = "error"
            assert stored_messages(db, slug) == []
        else:
            if conversation.warnings:
                expected[str(conversation.source_path)] = "warning"
            assert stored_messages(db, slug) == [(m.seq, m.role, m.content, m.ts) for m in conversation.messages]
        summaries = parse_summary_folder(config.paths.summaries / slug)
        expected.update({str(path): "error" for path, result in summaries.items() if isinstance(result, ParseError)})
        assert {path: severity for path, (severity, _error) in problems(db, slug).items()} == expected
        if not isinstance(conversation, ParseError):
            good = sorted(
                (s.level, s.key, s.content)
                for result in summaries.values()
                if not isinstance(result, ParseError)
                for s in result
            )
            with db.connection() as conn:
                rows = conn.execute(
                    "SELECT s.level, s.key, s.content FROM summaries s JOIN conversations c ON c.id = s.conversation_id"
                    " WHERE c.slug = %s ORDER BY 1, 2, 3",
                    (slug,),
                ).fetchall()
            assert rows == good
