"""A conversation folder: which transcript, encodings, titles, dates, meta.json, hashing, fuzzing."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memoryd.errors import ParseError
from memoryd.formats import find_transcript, parse_conversation
from memoryd.records import ROLES, clean_text
from tests.formats.helpers import BASIC_MD, SLUG, jsonl, make_folder, parse_error

# --- choosing the transcript


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        (
            ["messages.jsonl", "conversation.json", "conversation.md", "x.md"],
            "messages.jsonl",
        ),
        (["conversation.json", "conversation.md", "x.md"], "conversation.json"),
        (["conversation.md", "x.md", "y.txt"], "conversation.md"),
        (["notes.txt"], "notes.txt"),
        (["chat.md", ".hidden.md", "chat.md~", "#chat.md#", "chat.md.swp"], "chat.md"),
    ],
)
def test_transcript_precedence(tmp_path: Path, present: list[str], expected: str) -> None:
    """messages.jsonl, then conversation.json, conversation.md, the single *.md/*.txt."""
    folder = make_folder(tmp_path, dict.fromkeys(present, "x"))
    assert find_transcript(folder) == folder / expected


def test_several_fallback_candidates_is_an_error(tmp_path: Path) -> None:
    """Two *.md/*.txt files and no conversation.md: the folder is named and both files listed."""
    folder = make_folder(tmp_path, {"a.md": BASIC_MD, "b.txt": BASIC_MD})
    error = parse_error(folder)
    assert error.path == folder
    assert "a.md" in error.reason
    assert "b.txt" in error.reason


def test_no_transcript_is_an_error(tmp_path: Path) -> None:
    """A folder without any transcript names the folder and the expected files."""
    folder = make_folder(tmp_path, {"meta.json": "{}", "notes.pdf": b"%PDF"})
    error = parse_error(folder)
    assert error.path == folder
    assert error.reason == ("no transcript (expected messages.jsonl, conversation.json or conversation.md)")


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    """A slug whose folder vanished is a ParseError, not an OSError."""
    error = parse_error(tmp_path / "gone")
    assert error.path == tmp_path / "gone"


def test_shadowed_transcript_gives_a_warning(tmp_path: Path) -> None:
    """messages.jsonl beside conversation.md is read, and the ignored file is mentioned."""
    folder = make_folder(
        tmp_path,
        {
            "messages.jsonl": jsonl({"role": "user", "content": "hi"}),
            "conversation.md": BASIC_MD,
        },
    )
    conversation = parse_conversation(folder)
    assert conversation.source_format == "jsonl"
    assert conversation.warnings == ("ignored conversation.md, messages.jsonl takes precedence",)


# --- bytes and text


def test_bom_is_stripped(tmp_path: Path) -> None:
    """A leading UTF-8 BOM is not part of the first line."""
    folder = make_folder(
        tmp_path,
        {"messages.jsonl": b"\xef\xbb\xbf" + jsonl({"role": "user", "content": "x"}).encode()},
    )
    conversation = parse_conversation(folder)
    assert conversation.messages[0].content == "x"
    assert conversation.total_chars == len(jsonl({"role": "user", "content": "x"}))


def test_invalid_utf8_is_replaced_with_a_warning(tmp_path: Path) -> None:
    """Undecodable bytes become U+FFFD; the warning names the file, the byte offset and the line."""
    folder = make_folder(tmp_path, {"conversation.md": b"## User\nabc\xff\n"})
    conversation = parse_conversation(folder)
    assert conversation.messages[0].content == "abc\ufffd"
    assert conversation.warnings == (
        "conversation.md: not valid UTF-8 (first bad byte at offset 11, line 2), undecodable bytes replaced by U+FFFD",
    )


@pytest.mark.parametrize("name", ["messages.jsonl", "conversation.json", "conversation.md"])
def test_empty_file_is_an_error(tmp_path: Path, name: str) -> None:
    """A 0-byte transcript (often one still being written) is an error, not a conversation."""
    folder = make_folder(tmp_path, {name: b""})
    error = parse_error(folder)
    assert (error.path, error.reason) == (folder / name, "empty file")


def test_clean_text_applied(tmp_path: Path) -> None:
    """NUL and lone surrogates in content become U+FFFD so PostgreSQL can store them."""
    text = '{"role": "user", "content": "a\\u0000b\\ud800c", "ts": "t\\u0000"}\n'
    folder = make_folder(tmp_path, {"messages.jsonl": text})
    message = parse_conversation(folder).messages[0]
    assert message.content == clean_text("a\x00b\ud800c")
    assert message.content.startswith("a\ufffdb\ufffd")
    assert message.ts == "t\ufffd"


def test_clean_text_applied_to_markdown(tmp_path: Path) -> None:
    """A raw NUL byte in a Markdown transcript is replaced too."""
    folder = make_folder(tmp_path, {"conversation.md": "## User\na\x00b\n"})
    assert parse_conversation(folder).messages[0].content == "a\ufffdb"


def test_totals_describe_the_transcript(tmp_path: Path) -> None:
    """total_chars counts decoded characters, total_lines counts lines, the last one too."""
    text = "## User\nété\n## Assistant\nok"
    folder = make_folder(tmp_path, {"conversation.md": text})
    conversation = parse_conversation(folder)
    assert conversation.total_chars == len(text)
    assert conversation.total_lines == 4


# --- titles, dates, meta.json


def test_invalid_slug_date_is_not_an_error(tmp_path: Path) -> None:
    """A folder named with an impossible date still parses, without created_date."""
    folder = make_folder(tmp_path, {"conversation.md": BASIC_MD}, slug="2025-13-40__x")
    conversation = parse_conversation(folder)
    assert conversation.created_date is None
    assert conversation.title == "x"


def test_meta_json_wins(tmp_path: Path) -> None:
    """meta.json's title, created_date and tags beat the transcript's and the slug's."""
    document = {
        "title": "JSON title",
        "created": "2024-01-01",
        "messages": [{"role": "user", "content": "a"}],
    }
    meta = {
        "title": "Meta title",
        "created_date": "2023-03-03",
        "tags": ["a", " b ", "a", ""],
    }
    folder = make_folder(
        tmp_path,
        {"conversation.json": json.dumps(document), "meta.json": json.dumps(meta)},
    )
    conversation = parse_conversation(folder)
    assert conversation.title == "Meta title"
    assert conversation.created_date == date(2023, 3, 3)
    assert conversation.tags == ("a", "b")


def test_markdown_title_beats_slug(tmp_path: Path) -> None:
    """Without meta.json, the Markdown `# Title` beats the slug."""
    folder = make_folder(tmp_path, {"conversation.md": "# Mon titre\n" + BASIC_MD})
    assert parse_conversation(folder).title == "Mon titre"


def test_empty_meta_fields_fall_back(tmp_path: Path) -> None:
    """meta.json with null or blank values leaves title and date to the next source."""
    folder = make_folder(
        tmp_path,
        {
            "conversation.md": BASIC_MD,
            "meta.json": '{"title": "  ", "created_date": null, "tags": null, "other": 1}',
        },
    )
    conversation = parse_conversation(folder)
    assert conversation.title == "orage codé textuel"
    assert conversation.created_date == date(2025, 6, 25)
    assert conversation.tags == ()


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        ('{"title": 1}', "title: expected a string, got a number"),
        ('{"created_date": 20250625}', "created_date: expected a string, got a number"),
        (
            '{"created_date": "2025-13-01"}',
            "created_date: not a YYYY-MM-DD date: '2025-13-01'",
        ),
        ('{"tags": "a,b"}', "tags: expected a list of strings"),
        ('{"tags": ["a", 1]}', "tags: expected a list of strings"),
        ("[]", "expected a JSON object"),
        ("", "empty file"),
    ],
)
def test_meta_json_errors(tmp_path: Path, meta: str, reason: str) -> None:
    """A wrong meta.json fails the folder, naming meta.json and the key at fault."""
    folder = make_folder(tmp_path, {"conversation.md": BASIC_MD, "meta.json": meta})
    error = parse_error(folder)
    assert (error.path, error.reason) == (folder / "meta.json", reason)


def test_meta_json_syntax_error(tmp_path: Path) -> None:
    """Invalid JSON in meta.json names meta.json and the line."""
    folder = make_folder(tmp_path, {"conversation.md": BASIC_MD, "meta.json": '{\n"title": }'})
    error = parse_error(folder)
    assert error.path == folder / "meta.json"
    assert error.line == 2
    assert error.reason.startswith("invalid JSON")


# --- hashing


def test_source_hash_is_stable(tmp_path: Path) -> None:
    """Parsing the same folder twice, or an identical copy elsewhere, gives the same hash."""
    files: dict[str, str | bytes] = {
        "conversation.md": BASIC_MD,
        "meta.json": '{"tags": ["x"]}',
    }
    first = make_folder(tmp_path / "a", files)
    second = make_folder(tmp_path / "b", files)
    assert parse_conversation(first).source_hash == parse_conversation(first).source_hash
    assert parse_conversation(first).source_hash == parse_conversation(second).source_hash


def test_source_hash_follows_every_file(tmp_path: Path) -> None:
    """Changing the transcript, adding, changing or removing meta.json changes the hash."""
    folder = make_folder(tmp_path, {"conversation.md": BASIC_MD})
    hashes = [parse_conversation(folder).source_hash]
    (folder / "conversation.md").write_text(BASIC_MD + "more\n", encoding="utf-8")
    hashes.append(parse_conversation(folder).source_hash)
    (folder / "meta.json").write_text("{}", encoding="utf-8")
    hashes.append(parse_conversation(folder).source_hash)
    (folder / "meta.json").write_text('{"title": "t"}', encoding="utf-8")
    hashes.append(parse_conversation(folder).source_hash)
    (folder / "meta.json").unlink()
    hashes.append(parse_conversation(folder).source_hash)
    assert len(set(hashes[:4])) == 4
    assert hashes[4] == hashes[1]


def test_source_hash_covers_transcript_name(tmp_path: Path) -> None:
    """The same bytes under another transcript name are another source."""
    first = make_folder(tmp_path / "a", {"conversation.md": BASIC_MD})
    second = make_folder(tmp_path / "b", {"chat.md": BASIC_MD})
    assert parse_conversation(first).source_hash != parse_conversation(second).source_hash


# --- never anything but ParseError

_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(["user", "Assistant", "human", "gpt", "robot", "tool", "all", "python", "2025-06-25"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    *("role", "content", "ts", "messages", "title", "created", "mapping"),
                    *("conversations", "from", "value", "tool_calls", "function", "name", "type", "text"),
                    *("chat_messages", "uuid", "parent_message_uuid", "sender", "recipient", "created_at"),
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=12,
)
_MD_LINES = st.sampled_from(
    [
        "## User",
        "## Sven",
        "# _Question_",
        "# _Answer_",
        "----------",
        "**Maria:** hi",
        "## assistant (12:00)",
        "## Notes",
        "# T",
        "```",
        "~~~",
        "````x",
        "",
        "text",
        "\r",
    ]
) | st.text(max_size=20)
_TRANSCRIPT_TEXT = st.one_of(
    st.text(),
    st.lists(_MD_LINES, max_size=20).map("\n".join),
    st.lists(_JSON_VALUES.map(json.dumps), max_size=5).map("\n".join),
    _JSON_VALUES.map(json.dumps),
)
_NAMES = st.sampled_from(["messages.jsonl", "conversation.json", "conversation.md", "x.txt", "meta.json"])


def _check_fuzzed(folder: Path) -> None:
    try:
        conversation = parse_conversation(folder)
    except ParseError:
        return
    assert [m.seq for m in conversation.messages] == list(range(len(conversation.messages)))
    assert all(m.role in ROLES for m in conversation.messages)
    assert all("\x00" not in m.content for m in conversation.messages)
    assert conversation.title


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=300)
@given(name=_NAMES, text=_TRANSCRIPT_TEXT)
def test_random_text_only_raises_parse_error(tmp_path: Path, name: str, text: str) -> None:
    """Any text in a transcript or meta.json gives a Conversation or a ParseError, nothing else."""
    folder = tmp_path / SLUG
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    if name == "meta.json":
        (folder / "conversation.md").write_text(BASIC_MD, encoding="utf-8")
    (folder / name).write_bytes(text.encode("utf-8", "surrogatepass"))
    _check_fuzzed(folder)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(name=_NAMES, data=st.binary())
def test_random_bytes_only_raise_parse_error(tmp_path: Path, name: str, data: bytes) -> None:
    """Any bytes in a transcript or meta.json give a Conversation or a ParseError, nothing else."""
    folder = tmp_path / SLUG
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    if name == "meta.json":
        (folder / "conversation.md").write_text(BASIC_MD, encoding="utf-8")
    (folder / name).write_bytes(data)
    _check_fuzzed(folder)
