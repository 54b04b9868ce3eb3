"""``messages.jsonl``: one message per line, ``{"role", "content", "ts"?}`` (or another shape ``chat.py`` reads)."""

from __future__ import annotations

from pathlib import Path

from memoryd.errors import ParseError
from memoryd.formats.chat import chat_message
from memoryd.formats.common import Transcript, load_json
from memoryd.records import Message


def read_jsonl(path: Path, text: str) -> Transcript:
    """One message per line.

    A last line without its newline that does not read as a message, but
    starts like one (``{``, no NUL), is not written yet (a writer is in the
    middle of it), not corrupt: the complete lines are the transcript, marked
    ``in_progress``.  The same text anywhere else is an error naming its line.
    """
    messages: list[Message] = []
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue

        def fail(reason: str, number: int = number) -> ParseError:
            return ParseError(path, reason, line=number)

        try:
            messages.append(chat_message(load_json(line, fail), len(messages), fail))
        except ParseError:
            if number < len(lines) or not line.lstrip().startswith("{") or "\x00" in line:
                raise  # a terminated line, or one no JSONL writer would start: really broken
            return Transcript(messages=tuple(messages), in_progress=True)
    return Transcript(messages=tuple(messages))
