"""One conversation of a Claude data export (an element of its ``conversations.json``)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from memoryd.errors import ParseError
from memoryd.formats.common import (
    Fail,
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
    """The branch of ``chat_messages`` the Claude interface shows last: ``sender`` is the role, text blocks the content.

    An edited or retried message leaves both branches in ``chat_messages``,
    linked by ``parent_message_uuid``: like ChatGPT's ``current_node``, the
    conversation is the branch that ends at the latest message.  An export
    whose messages carry no parents keeps array order.  Blocks other than
    text (tool use, thinking) are not conversation text; attachments and
    files are noted by name.
    """

    def fail(reason: str) -> ParseError:
        return ParseError(path, reason)

    items = obj.get("chat_messages")
    if not isinstance(items, list):
        raise fail(f"chat_messages: expected an array, got {json_type(items)}")
    skipped: Counter[str] = Counter()
    messages: list[Message] = []
    for item in _latest_branch(items, fail):
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


def _latest_branch(items: list[object], fail: Fail) -> list[object]:
    """The messages from the root to the latest leaf, following ``parent_message_uuid``; ``items`` without parents.

    Non-objects are kept in place so that they are reported, not dropped.
    """
    linked: dict[str, tuple[int, dict[str, object]]] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        uuid, parent = item.get("uuid"), item.get("parent_message_uuid")
        if not isinstance(uuid, str) or not isinstance(parent, str):
            return items  # an export (or a message) without parents: array order
        linked[uuid] = (index, item)
    if not linked:
        return items
    parents = {item["parent_message_uuid"] for _, item in linked.values()}
    leaves = [entry for uuid, entry in linked.items() if uuid not in parents]
    if not leaves:
        raise fail("chat_messages: the parent_message_uuid links form a cycle")
    _, node = max(leaves, key=lambda entry: (_epoch(entry[1].get("created_at")), entry[0]))
    branch: list[object] = []
    seen: set[int] = set()
    while True:
        branch.append(node)
        seen.add(id(node))
        parent_entry = linked.get(str(node["parent_message_uuid"]))
        if parent_entry is None:
            break
        node = parent_entry[1]
        if id(node) in seen:
            raise fail(f"chat_messages: the parents of message {short_repr(node.get('uuid'))} form a cycle")
    branch.reverse()
    others = [item for item in items if not isinstance(item, dict)]
    return [*branch, *others]


def _epoch(value: object) -> float:
    """A ``created_at`` as seconds, for ordering; unreadable or missing sorts first."""
    if not isinstance(value, str):
        return -math.inf
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return -math.inf
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()


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
