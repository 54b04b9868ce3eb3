"""A Claude export conversation saved as conversation.json: senders, text blocks, attachments."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from memoryd.formats import parse_conversation
from tests.formats.helpers import (
    export_conversation,
    make_folder,
)


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
