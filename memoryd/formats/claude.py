"""One conversation of a Claude data export (an element of its ``conversations.json``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from memoryd.errors import ParseError
from memoryd.formats.common import (
    Transcript,
    clean_title,
    json_type,
    lenient_str,
    names,
    normalize_role,
    parse_iso_date,
    short_repr,
    ts_text,
)
from memoryd.records import Message, clean_text


def read_claude(path: Path, obj: dict[str, object]) -> Transcript:
    """``chat_messages`` in order: ``sender`` is the role, the text blocks of ``content`` (or ``text``) the content.

    Blocks other than text (tool use, thinking) are not conversation text;
    attachments and files are noted by name.
    """

    def fail(reason: str) -> ParseError:
        return ParseError(path, reason)

    items = obj.get("chat_messages")
    if not isinstance(items, list):
        raise fail(f"chat_messages: expected an array, got {json_type(items)}")
    skipped: Counter[str] = Counter()
    messages: list[Message] = []
    for item in items:
        if not isinstance(item, dict):
            skipped[f"expected an object, got {json_type(item)}"] += 1
            continue
        sender = item.get("sender")
        role = normalize_role(sender) if isinstance(sender, str) else None
        if role is None:
            skipped[f"unknown sender {short_repr(sender)}"] += 1
            continue
        text = _claude_text(item)
        notes = [f"[attachment: {name}]" for name in names(item.get("attachments"), "file_name")]
        notes += [f"[file: {name}]" for name in names(item.get("files"), "file_name")]
        text = "\n\n".join(piece for piece in (text, "\n".join(notes)) if piece.strip())
        if not text:
            continue
        ts = ts_text(item.get("created_at"))
        messages.append(Message(seq=len(messages), role=role, content=clean_text(text), ts=ts))
    created = lenient_str(obj, "created_at")
    return Transcript(
        messages=tuple(messages),
        title=clean_title(lenient_str(obj, "name")),
        created_date=parse_iso_date(created) if created else None,
        warnings=tuple(f"skipped {count} message(s): {reason}" for reason, count in sorted(skipped.items())),
        source_format="claude",
    )


def _claude_text(item: Mapping[str, object]) -> str:
    """The text blocks of ``content``, or the older ``text`` field when there are none."""
    blocks = item.get("content")
    if isinstance(blocks, list):
        texts = [
            block["text"]
            for block in blocks
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)
        ]
        joined = "\n\n".join(text for text in texts if text.strip())
        if joined:
            return joined
    text = item.get("text")
    return text if isinstance(text, str) and text.strip() else ""
