"""A Claude export conversation saved as conversation.json: senders, text blocks, attachments."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from memoryd.errors import ParseError
from memoryd.formats import parse_conversation
from tests.formats.helpers import export_conversation, make_folder


def test_claude_conversation_json(tmp_path: Path) -> None:
    """Text blocks of content (or text), sender as role, attachments noted by name, empty turns skipped."""
    document = export_conversation("claude", 0)
    conversation = parse_conversation(make_folder(tmp_path, {"conversation.json": json.dumps(document)}))
    assert conversation.source_format == "claude"
    assert (conversation.title, conversation.created_date) == ("Plan de migration", date(2024, 5, 1))
    assert [(m.role, m.content, m.ts) for m in conversation.messages] == [
        ("user", "Comment migrer la base ?\n\n[attachment: schema.sql]", "2024-05-01T09:30:00.000000Z"),
        ("assistant", "Je regarde le schéma.\n\nVoici le plan.", "2024-05-01T09:31:00.000000Z"),
        ("user", "Merci, et cette photo ?\n\n[file: photo.jpg]", "2024-05-01T09:32:00.000000Z"),
        ("assistant", "De rien.", "2024-05-01T09:34:00.000000Z"),
    ]


def test_claude_odd_messages(tmp_path: Path) -> None:
    """Entries that are not objects or have an unknown sender are skipped with a warning."""
    document = {
        "name": None,
        "chat_messages": [[], {"sender": "robot", "text": "x"}, {"sender": "human", "text": "hi"}],
    }
    conversation = parse_conversation(make_folder(tmp_path, {"conversation.json": json.dumps(document)}))
    assert [(m.role, m.content) for m in conversation.messages] == [("user", "hi")]
    assert conversation.warnings == (
        "skipped 1 message(s): expected an object, got an array",
        "skipped 1 message(s): unknown sender 'robot'",
    )


ROOT = "00000000-0000-4000-8000-000000000000"


def claude_message(uuid: str, parent: str, sender: str, text: str, minute: int) -> dict[str, object]:
    """One element of chat_messages as the Claude export writes it since parents appeared."""
    stamp = f"2025-03-04T10:{minute:02d}:00.000000Z"
    return {
        "uuid": uuid,
        "text": "",
        "content": [{"start_timestamp": stamp, "stop_timestamp": stamp, "type": "text", "text": text, "citations": []}],
        "sender": sender,
        "created_at": stamp,
        "updated_at": stamp,
        "attachments": [],
        "files": [],
        "parent_message_uuid": parent,
    }


def test_claude_branches_follow_the_latest_message(tmp_path: Path) -> None:
    """A retried answer and an edited question leave other branches: only the one ending last is the conversation."""
    document = {
        "uuid": "c-1",
        "name": "Retries",
        "created_at": "2025-03-04T10:00:00.000000Z",
        "chat_messages": [
            claude_message("m1", ROOT, "human", "Première question", 0),
            claude_message("m2a", "m1", "assistant", "Réponse abandonnée", 1),
            claude_message("m2b", "m1", "assistant", "Réponse réessayée", 2),
            claude_message("m3a", "m2b", "human", "Question avant modification", 3),
            claude_message("m4a", "m3a", "assistant", "Réponse à l'ancienne question", 4),
            claude_message("m3b", "m2b", "human", "Question modifiée", 5),
            claude_message("m4b", "m3b", "assistant", "Réponse finale", 6),
        ],
    }
    conversation = parse_conversation(make_folder(tmp_path, {"conversation.json": json.dumps(document)}))
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("user", "Première question"),
        ("assistant", "Réponse réessayée"),
        ("user", "Question modifiée"),
        ("assistant", "Réponse finale"),
    ]
    assert conversation.warnings == ()


def test_claude_branch_order_does_not_depend_on_array_order(tmp_path: Path) -> None:
    """The latest leaf is chosen by created_at, so a shuffled array gives the same branch, root first."""
    messages = [
        claude_message("m1", ROOT, "human", "Q", 0),
        claude_message("m2a", "m1", "assistant", "old", 5),
        claude_message("m2b", "m1", "assistant", "new", 1),
        claude_message("m3", "m2b", "human", "follow-up", 6),
    ]
    document = {"name": "t", "chat_messages": list(reversed(messages))}
    conversation = parse_conversation(make_folder(tmp_path, {"conversation.json": json.dumps(document)}))
    assert [m.content for m in conversation.messages] == ["Q", "new", "follow-up"]


def test_claude_without_parents_keeps_array_order(tmp_path: Path) -> None:
    """An older export without parent_message_uuid keeps every message, in array order."""
    messages = [claude_message(f"m{i}", ROOT, "human" if i % 2 == 0 else "assistant", f"t{i}", i) for i in range(4)]
    for message in messages:
        del message["parent_message_uuid"]
    conversation = parse_conversation(
        make_folder(tmp_path, {"conversation.json": json.dumps({"name": "t", "chat_messages": messages})})
    )
    assert [m.content for m in conversation.messages] == ["t0", "t1", "t2", "t3"]


def test_claude_parent_cycle_is_an_error(tmp_path: Path) -> None:
    """Parents that loop are refused, naming the problem, rather than followed forever."""
    messages = [claude_message("a", "b", "human", "x", 0), claude_message("b", "a", "assistant", "y", 1)]
    folder = make_folder(tmp_path, {"conversation.json": json.dumps({"name": "t", "chat_messages": messages})})
    with pytest.raises(ParseError, match="parent_message_uuid links form a cycle"):
        parse_conversation(folder)
