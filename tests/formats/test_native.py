"""The native conversation.json: title, created, messages."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from memoryd.formats import parse_conversation
from memoryd.formats.chat import CONVERSATION_SHAPES
from tests.formats.helpers import make_folder, parse_error

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
        ("[]", f"an array, not a conversation: expected one object, {CONVERSATION_SHAPES}"),
        ('"text"', f"a string, not a conversation: expected one object, {CONVERSATION_SHAPES}"),
        ('{"mapping": {}}', "no messages"),
        ('{"chat_messages": []}', "no messages"),
        ('{"mapping": []}', "mapping: expected an object, got an array"),
        ('{"chat_messages": {}}', "chat_messages: expected an array, got an object"),
        (
            '[{"mapping": {}}]',
            "a whole ChatGPT data export (an array of conversations), not one conversation:"
            " split it with `memoryd import`",
        ),
        ('{"title": "x"}', f"an object with keys 'title', not a conversation: expected {CONVERSATION_SHAPES}"),
        (
            '{"conversations": [{"from": "bot", "value": "x"}]}',
            "conversations[0]: from: unknown speaker 'bot' (expected human, gpt or system)",
        ),
        ('{"conversations": [{"from": "gpt"}]}', "conversations[0]: value: expected a string, got null"),
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


def test_openai_conversation_json(tmp_path: Path) -> None:
    """A conversation.json in OpenAI chat shape (a dataset record) is read natively, parts and tool calls included."""
    document = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "2+2?"}]},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"type": "function", "function": {"name": "calc", "arguments": '{"expr": "2+2"}'}}],
            },
            {"role": "tool", "content": "4"},
            {"role": "assistant", "content": "4."},
        ]
    }
    conversation = parse_conversation(make_folder(tmp_path, {"conversation.json": json.dumps(document)}))
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("system", "You are terse."),
        ("user", "2+2?"),
        ("assistant", '[tool: calc] {"expr": "2+2"}'),
        ("tool", "4"),
        ("assistant", "4."),
    ]
    assert conversation.source_format == "json"


def test_sharegpt_conversation_json(tmp_path: Path) -> None:
    """A conversation.json in ShareGPT shape is read natively: human, gpt and system turns, the title if any."""
    document = {
        "id": "identity_0",
        "title": "Pérou",
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Capital of Peru?"},
            {"from": "gpt", "value": "Lima."},
        ],
    }
    conversation = parse_conversation(make_folder(tmp_path, {"conversation.json": json.dumps(document)}))
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("system", "Be brief."),
        ("user", "Capital of Peru?"),
        ("assistant", "Lima."),
    ]
    assert (conversation.title, conversation.source_format) == ("Pérou", "sharegpt")
