"""Conversation folders → Conversation: formats, precedence, metadata and bad input."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.errors import ParseError
from daemon.models import ROLES, clean_text
from daemon.parse import (
    date_from_slug,
    find_transcript,
    parse_conversation,
    role_heading,
    title_from_slug,
)

SLUG = "2025-06-25__orage_codé_textuel"


def make_folder(tmp_path: Path, files: dict[str, str | bytes], slug: str = SLUG) -> Path:
    folder = tmp_path / slug
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content.encode("utf-8") if isinstance(content, str) else content
        (folder / name).write_bytes(data)
    return folder


def jsonl(*objects: object) -> str:
    return "".join(json.dumps(obj, ensure_ascii=False) + "\n" for obj in objects)


def parse_error(folder: Path) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_conversation(folder)
    return info.value


BASIC_MD = "## User\nHello\n\n## Assistant\nHi!\n"


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


# --- messages.jsonl


def test_jsonl_messages(tmp_path: Path) -> None:
    """Each line is a message; seq is its position, ts kept as text, blank lines skipped."""
    text = (
        jsonl({"role": "user", "content": "Bonjour", "ts": "2025-06-25T14:03:00+02:00"})
        + "\n   \n"
        + jsonl({"role": "assistant", "content": "Salut", "extra": 1})
    )
    folder = make_folder(tmp_path, {"messages.jsonl": text})
    conversation = parse_conversation(folder)
    assert conversation.slug == SLUG
    assert conversation.source_format == "jsonl"
    assert conversation.source_path == folder / "messages.jsonl"
    assert [(m.seq, m.role, m.content, m.ts) for m in conversation.messages] == [
        (0, "user", "Bonjour", "2025-06-25T14:03:00+02:00"),
        (1, "assistant", "Salut", None),
    ]
    assert conversation.warnings == ()


@pytest.mark.parametrize(
    ("ts", "expected"),
    [(1719316980, "1719316980"), (1.5, "1.5"), (None, None), ("", None)],
)
def test_jsonl_ts_becomes_text(tmp_path: Path, ts: object, expected: str | None) -> None:
    """A numeric ts is kept as its JSON spelling; null or empty means no ts."""
    folder = make_folder(tmp_path, {"messages.jsonl": jsonl({"role": "user", "content": "x", "ts": ts})})
    assert parse_conversation(folder).messages[0].ts == expected


@pytest.mark.parametrize(
    ("written", "role"),
    [
        ("USER", "user"),
        ("Human", "user"),
        ("utilisateur", "user"),
        ("AI", "assistant"),
        ("ChatGPT", "assistant"),
        ("claude", "assistant"),
        ("Assistant", "assistant"),
        ("System", "system"),
        ("tool", "tool"),
    ],
)
def test_jsonl_role_aliases(tmp_path: Path, written: str, role: str) -> None:
    """Roles are case-insensitive and common aliases map to the four roles."""
    folder = make_folder(tmp_path, {"messages.jsonl": jsonl({"role": written, "content": "x"})})
    assert parse_conversation(folder).messages[0].role == role


def test_jsonl_keeps_empty_content(tmp_path: Path) -> None:
    """An explicit empty message keeps its place, so seq matches the file's numbering."""
    folder = make_folder(
        tmp_path,
        {"messages.jsonl": jsonl({"role": "user", "content": ""}, {"role": "assistant", "content": "b"})},
    )
    assert [(m.seq, m.content) for m in parse_conversation(folder).messages] == [
        (0, ""),
        (1, "b"),
    ]


@pytest.mark.parametrize(
    ("bad_line", "reason_part"),
    [
        ('{"role": "user", "content": ', "invalid JSON"),
        ('["user", "hi"]', "expected a JSON object"),
        ('{"role": "user"}', "content"),
        ('{"role": "user", "content": 3}', "content"),
        ('{"role": "robot", "content": "x"}', "unknown role 'robot'"),
        ('{"role": 1, "content": "x"}', "role"),
        ('{"content": "x"}', "role"),
    ],
)
def test_jsonl_errors_name_path_and_line(tmp_path: Path, bad_line: str, reason_part: str) -> None:
    """A bad line fails the file with its path and 1-based line number (blank lines counted)."""
    text = jsonl({"role": "user", "content": "ok"}) + "\n" + bad_line + "\n"
    folder = make_folder(tmp_path, {"messages.jsonl": text})
    error = parse_error(folder)
    assert error.path == folder / "messages.jsonl"
    assert error.line == 3
    assert reason_part in error.reason


def test_jsonl_without_messages_is_an_error(tmp_path: Path) -> None:
    """A transcript holding only blank lines has no messages, which is an error."""
    folder = make_folder(tmp_path, {"messages.jsonl": "\n  \n"})
    error = parse_error(folder)
    assert (error.path, error.reason) == (folder / "messages.jsonl", "no messages")


# --- conversation.json


def test_json_transcript(tmp_path: Path) -> None:
    """conversation.json gives messages, its title and its created date."""
    document = {
        "title": "Un orage",
        "created": "2024-01-02T10:00:00Z",
        "messages": [
            {"role": "user", "content": "a", "ts": "t1"},
            {"role": "assistant", "content": "b"},
        ],
    }
    folder = make_folder(tmp_path, {"conversation.json": json.dumps(document)}, slug="no-date-here")
    conversation = parse_conversation(folder)
    assert conversation.source_format == "json"
    assert conversation.title == "Un orage"
    assert conversation.created_date == date(2024, 1, 2)
    assert [(m.seq, m.role, m.content, m.ts) for m in conversation.messages] == [
        (0, "user", "a", "t1"),
        (1, "assistant", "b", None),
    ]


def test_json_created_beats_slug_date(tmp_path: Path) -> None:
    """conversation.json's created wins over the slug's date."""
    document = {"created": "2024-01-02", "messages": [{"role": "user", "content": "a"}]}
    folder = make_folder(tmp_path, {"conversation.json": json.dumps(document)})
    assert parse_conversation(folder).created_date == date(2024, 1, 2)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ("[]", "expected a JSON object, got an array"),
        ('"text"', "expected a JSON object, got a string"),
        (
            '{"mapping": {}}',
            "ChatGPT/Claude export conversations are not supported yet",
        ),
        (
            '{"chat_messages": []}',
            "ChatGPT/Claude export conversations are not supported yet",
        ),
        ('{"title": "x"}', 'no "messages" list'),
        ('{"messages": {}}', "messages: expected an array, got an object"),
        ('{"messages": []}', "no messages"),
        (
            '{"messages": [{"role": "user", "content": "a"}], "title": 3}',
            "title: expected a string, got a number",
        ),
        (
            '{"messages": [{"role": "user", "content": "a"}], "created": "soon"}',
            "created: not an ISO date or datetime: 'soon'",
        ),
    ],
)
def test_json_document_errors(tmp_path: Path, document: str, reason: str) -> None:
    """A conversation.json of the wrong shape fails with its path and a precise reason."""
    folder = make_folder(tmp_path, {"conversation.json": document})
    error = parse_error(folder)
    assert (error.path, error.reason) == (folder / "conversation.json", reason)


def test_json_message_error_names_index(tmp_path: Path) -> None:
    """An error in a message names its index in the messages array."""
    document = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": None},
        ]
    }
    folder = make_folder(tmp_path, {"conversation.json": json.dumps(document)})
    error = parse_error(folder)
    assert error.path == folder / "conversation.json"
    assert error.reason.startswith("messages[2]: content")


def test_json_syntax_error_has_line(tmp_path: Path) -> None:
    """Invalid JSON in conversation.json reports the line the decoder stopped at."""
    folder = make_folder(tmp_path, {"conversation.json": '{\n  "messages": [\n  ,]\n}'})
    error = parse_error(folder)
    assert error.path == folder / "conversation.json"
    assert error.line == 3
    assert error.reason.startswith("invalid JSON")


# --- Markdown


def test_markdown_transcript(tmp_path: Path) -> None:
    """Role headings open messages; the content between them is kept verbatim."""
    text = "# Le titre\n\n## User\n\nBonjour,\n  indented *markdown*\n\nsecond paragraph\n\n\n## Assistant\nSalut\n"
    folder = make_folder(tmp_path, {"conversation.md": text})
    conversation = parse_conversation(folder)
    assert conversation.source_format == "markdown"
    assert conversation.title == "Le titre"
    assert [(m.seq, m.role, m.content) for m in conversation.messages] == [
        (0, "user", "Bonjour,\n  indented *markdown*\n\nsecond paragraph"),
        (1, "assistant", "Salut"),
    ]
    assert conversation.warnings == ()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("## User", ("user", None)),
        ("## user:", ("user", None)),
        ("## HUMAN", ("user", None)),
        ("## Utilisateur", ("user", None)),
        ("## ChatGPT", ("assistant", None)),
        ("## Claude", ("assistant", None)),
        ("## AI", ("assistant", None)),
        ("## System", ("system", None)),
        ("## Tool", ("tool", None)),
        ("## User 2025-06-25T14:03:00+02:00", ("user", "2025-06-25T14:03:00+02:00")),
        ("## Assistant (2025-06-25 14:03)", ("assistant", "2025-06-25 14:03")),
        ("## Assistant [2025-06-25 14:03]", ("assistant", "2025-06-25 14:03")),
        ("## User — 2025-06-25 14:03", ("user", "2025-06-25 14:03")),
        ("## User - 14:03", ("user", "14:03")),
        ("## User: 25/06/2025", ("user", "25/06/2025")),
        ("## User ##", ("user", None)),
        ("## User\r", ("user", None)),
        ("   ## User", ("user", None)),
        ("## Notes", None),
        ("## User stories", None),
        ("## Users", None),
        ("### User", None),
        ("# User", None),
        ("    ## User", None),
        ("##User", None),
        ("User", None),
    ],
)
def test_role_heading(line: str, expected: tuple[str, str | None] | None) -> None:
    """Which lines open a message, with which role and timestamp."""
    assert role_heading(line) == expected


def test_markdown_heading_timestamps(tmp_path: Path) -> None:
    """A timestamp after the role on the heading line becomes the message's ts."""
    text = "## User 2025-06-25T14:03:00+02:00\nq\n## Assistant (2025-06-25 14:03)\na\n## User\nq2\n"
    folder = make_folder(tmp_path, {"conversation.md": text})
    assert [m.ts for m in parse_conversation(folder).messages] == [
        "2025-06-25T14:03:00+02:00",
        "2025-06-25 14:03",
        None,
    ]


@pytest.mark.parametrize("fence", ["```", "~~~", "````"])
def test_fenced_role_heading_does_not_split(tmp_path: Path, fence: str) -> None:
    """`## User` inside a fenced code block is content, not a new message."""
    body = f"Voici:\n{fence}markdown\n## User\nfake\n## Assistant\n{fence}\nfin"
    text = f"## User\nq\n## Assistant\n{body}\n## User\nmerci\n"
    folder = make_folder(tmp_path, {"conversation.md": text})
    messages = parse_conversation(folder).messages
    assert [m.role for m in messages] == ["user", "assistant", "user"]
    assert messages[1].content == body


def test_fence_needs_matching_closer(tmp_path: Path) -> None:
    """A ``` fence is not closed by ~~~ nor by a shorter fence."""
    body = "````\n~~~\n```\n## User\n````"
    folder = make_folder(tmp_path, {"conversation.md": f"## Assistant\n{body}\n"})
    assert parse_conversation(folder).messages[0].content == body


def test_unclosed_fence_does_not_swallow_the_rest(tmp_path: Path) -> None:
    """A code block left open (truncated output) does not hide the headings after it."""
    text = "## Assistant\n```python\nprint(1)\n## User\nnext question\n"
    folder = make_folder(tmp_path, {"conversation.md": text})
    messages = parse_conversation(folder).messages
    assert [(m.role, m.content) for m in messages] == [
        ("assistant", "```python\nprint(1)"),
        ("user", "next question"),
    ]


def test_non_role_headings_are_content(tmp_path: Path) -> None:
    """`## Notes`, `## User stories` and `# Heading` inside a message stay in its content."""
    body = "intro\n## Notes\n- a\n## User stories\n# Big\nend"
    folder = make_folder(tmp_path, {"conversation.md": f"## Assistant\n{body}\n"})
    conversation = parse_conversation(folder)
    assert [m.content for m in conversation.messages] == [body]
    assert conversation.title == "orage codé textuel"


def test_empty_markdown_messages_are_skipped(tmp_path: Path) -> None:
    """A heading with nothing under it is dropped and seq stays contiguous."""
    text = "## User\n\n## System\n   \n\n## Assistant\nA\n## Tool\n## User\nB\n"
    folder = make_folder(tmp_path, {"conversation.md": text})
    messages = parse_conversation(folder).messages
    assert [(m.seq, m.role, m.content) for m in messages] == [
        (0, "assistant", "A"),
        (1, "user", "B"),
    ]


def test_markdown_without_role_heading_is_an_error(tmp_path: Path) -> None:
    """Markdown without any role heading is not a transcript."""
    folder = make_folder(tmp_path, {"conversation.md": "# Title\n\n## Notes\ntext\n"})
    error = parse_error(folder)
    assert error.path == folder / "conversation.md"
    assert error.reason == "no role heading (## User / ## Assistant) found"


def test_markdown_with_only_empty_messages_is_an_error(tmp_path: Path) -> None:
    """Role headings with no content make a transcript with no messages."""
    folder = make_folder(tmp_path, {"conversation.md": "## User\n\n## Assistant\n"})
    error = parse_error(folder)
    assert (error.path, error.reason) == (folder / "conversation.md", "no messages")


def test_markdown_preamble_is_reported(tmp_path: Path) -> None:
    """Text before the first role heading (other than the title) is dropped with a warning."""
    text = "# T\nsome notes\n\nmore\n## User\nq\n"
    folder = make_folder(tmp_path, {"conversation.md": text})
    conversation = parse_conversation(folder)
    assert conversation.title == "T"
    assert conversation.warnings == ("ignored 2 line(s) before the first role heading",)


def test_markdown_crlf(tmp_path: Path) -> None:
    """Windows line endings: headings are recognised and content keeps its own CRLFs."""
    text = "# T\r\n## User 14:03\r\nline1\r\nline2\r\n\r\n## Assistant\r\nok\r\n"
    folder = make_folder(tmp_path, {"conversation.md": text})
    conversation = parse_conversation(folder)
    assert conversation.title == "T"
    assert [(m.role, m.content, m.ts) for m in conversation.messages] == [
        ("user", "line1\r\nline2", "14:03"),
        ("assistant", "ok", None),
    ]


def test_single_txt_is_markdown(tmp_path: Path) -> None:
    """A folder's single .txt file is read as a Markdown transcript."""
    folder = make_folder(tmp_path, {"chat.txt": BASIC_MD})
    conversation = parse_conversation(folder)
    assert conversation.source_format == "markdown"
    assert conversation.source_path == folder / "chat.txt"
    assert len(conversation.messages) == 2


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


def test_invalid_utf8_is_an_error(tmp_path: Path) -> None:
    """Undecodable bytes name the file and the byte offset."""
    folder = make_folder(tmp_path, {"conversation.md": b"## User\nabc\xff\n"})
    error = parse_error(folder)
    assert error.path == folder / "conversation.md"
    assert error.reason == "not valid UTF-8 at byte 11"
    assert error.line == 2


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


@pytest.mark.parametrize(
    ("slug", "title"),
    [
        ("2025-06-25__orage_codé_textuel", "orage codé textuel"),
        ("2025-06-25-orage", "orage"),
        ("2025-06-25_a__b", "a b"),
        ("plain-slug_name", "plain-slug name"),
        ("2025-06-25", "2025-06-25"),
        ("2025-06-25__", "2025-06-25__"),
    ],
)
def test_title_from_slug(slug: str, title: str) -> None:
    """The slug minus date and separators, `_` as spaces; the slug if nothing is left."""
    assert title_from_slug(slug) == title


@pytest.mark.parametrize(
    ("slug", "expected"),
    [
        ("2025-06-25__x", date(2025, 6, 25)),
        ("2025-06-25", date(2025, 6, 25)),
        ("2025-13-40__x", None),
        ("2025-02-30", None),
        ("x_2025-06-25", None),
        ("2025-06-250", None),
    ],
)
def test_date_from_slug(slug: str, expected: date | None) -> None:
    """A leading valid YYYY-MM-DD is the date; anything else is no date, never an error."""
    assert date_from_slug(slug) == expected


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
    | st.sampled_from(["user", "Assistant", "human", "robot", "2025-06-25"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["role", "content", "ts", "messages", "title", "created", "mapping"]),
            children,
            max_size=5,
        )
    ),
    max_leaves=12,
)
_MD_LINES = st.sampled_from(
    [
        "## User",
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
