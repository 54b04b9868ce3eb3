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
        ('["user", "hi"]', "an array, not a message"),
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


@pytest.mark.parametrize(
    ("line", "shape"),
    [
        (
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
            'a whole conversation in OpenAI chat shape ({"messages": [...]})',
        ),
        (
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
            'a whole conversation in ShareGPT shape ({"conversations": [...]})',
        ),
    ],
)
def test_jsonl_dataset_line_names_the_shape(tmp_path: Path, line: dict[str, object], shape: str) -> None:
    """A dataset line (a whole conversation) in messages.jsonl names its shape, the accepted ones and the command."""
    error = parse_error(make_folder(tmp_path, {"messages.jsonl": jsonl(line)}))
    assert error.line == 1
    assert error.reason == (
        f"{shape}, not a message: expected"
        ' {"role", "content", "ts"?} (OpenAI chat: content parts and tool_calls allowed) or {"from", "value"}'
        " (ShareGPT); for a file of one conversation per line, run `memoryd import jsonl FILE`"
    )


def test_jsonl_sharegpt_turns(tmp_path: Path) -> None:
    """ShareGPT turns ({"from", "value"}) are messages too: human, gpt and system become roles."""
    text = jsonl(
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Capital of Peru?"},
        {"from": "gpt", "value": "Lima."},
    )
    conversation = parse_conversation(make_folder(tmp_path, {"messages.jsonl": text}))
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("system", "Be brief."),
        ("user", "Capital of Peru?"),
        ("assistant", "Lima."),
    ]


def test_jsonl_openai_parts_and_tool_calls(tmp_path: Path) -> None:
    """Content parts keep their text (images as placeholders); tool calls become [tool: NAME] arguments lines."""
    text = jsonl(
        {"role": "developer", "content": "Use the weather tool."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        {"role": "assistant", "content": [{"type": "text", "text": "21 °C in Lyon."}]},
    )
    conversation = parse_conversation(make_folder(tmp_path, {"messages.jsonl": text}))
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("system", "Use the weather tool."),
        ("user", "Weather here?\n\n[image]"),
        ("assistant", '[tool: get_weather] {"city": "Lyon"}'),
        ("tool", '{"temp": 21}'),
        ("assistant", "21 °C in Lyon."),
    ]


@pytest.mark.parametrize(
    ("fields", "speaker"),
    [
        ({"speaker": "Kate"}, "Kate"),
        ({"name": "  Fahim   Khan "}, "Fahim Khan"),
        ({"author": "Emi"}, "Emi"),
        ({"author": {"role": "user", "name": "Paola"}}, "Paola"),
        ({"speaker": "Kate", "name": "ignored"}, "Kate"),
        ({"speaker": ""}, None),
        ({"speaker": 3}, None),
        ({}, None),
    ],
)
def test_jsonl_speaker_name(tmp_path: Path, fields: dict[str, object], speaker: str | None) -> None:
    """A message's speaker is read from speaker, name or author (a string or an object's name), first present."""
    folder = make_folder(tmp_path, {"messages.jsonl": jsonl({"role": "user", "content": "x", **fields})})
    assert parse_conversation(folder).messages[0].speaker == speaker


def test_jsonl_tool_name_is_no_speaker(tmp_path: Path) -> None:
    """A tool message's name is the function's, so it is not taken for a speaker."""
    folder = make_folder(tmp_path, {"messages.jsonl": jsonl({"role": "tool", "content": "22 C", "name": "weather"})})
    assert parse_conversation(folder).messages[0].speaker is None
