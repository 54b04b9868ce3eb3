"""messages.jsonl: one message per line, its errors named by line."""

from __future__ import annotations

from pathlib import Path

import pytest

from memoryd.formats import parse_conversation
from tests.formats.helpers import SLUG, jsonl, make_folder, parse_error

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
