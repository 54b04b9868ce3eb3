"""The native ``conversation.json``: ``{"title", "created", "messages": [...]}``, OpenAI chat shape included."""

from __future__ import annotations

from pathlib import Path

from memoryd.errors import ParseError
from memoryd.formats.chat import chat_message
from memoryd.formats.common import Transcript, clean_title, json_type, optional_str, parse_iso_date, short_repr


def read_native(path: Path, obj: dict[str, object]) -> Transcript:
    def fail(reason: str) -> ParseError:
        return ParseError(path, reason)

    items = obj.get("messages")
    if not isinstance(items, list):
        raise fail(f"messages: expected an array, got {json_type(items)}")
    messages = []
    for index, item in enumerate(items):

        def fail_at(reason: str, index: int = index) -> ParseError:
            return ParseError(path, f"messages[{index}]: {reason}")

        messages.append(chat_message(item, index, fail_at))
    created = optional_str(obj, "created", fail)
    created_date = None
    if created is not None and created.strip():
        created_date = parse_iso_date(created)
        if created_date is None:
            raise fail(f"created: not an ISO date or datetime: {short_repr(created)}")
    return Transcript(
        messages=tuple(messages),
        title=clean_title(optional_str(obj, "title", fail)),
        created_date=created_date,
    )
