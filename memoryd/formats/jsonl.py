"""``messages.jsonl``: one message per line, ``{"role", "content", "ts"?}`` (or another shape ``chat.py`` reads)."""

from __future__ import annotations

from pathlib import Path

from memoryd.errors import ParseError
from memoryd.formats.chat import chat_message
from memoryd.formats.common import Transcript, load_json
from memoryd.records import Message


def read_jsonl(path: Path, text: str) -> Transcript:
    messages: list[Message] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue

        def fail(reason: str, number: int = number) -> ParseError:
            return ParseError(path, reason, line=number)

        messages.append(chat_message(load_json(line, fail), len(messages), fail))
    return Transcript(messages=tuple(messages))
