"""One conversation of a ChatGPT data export (an element of its ``conversations.json``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from memoryd.errors import ParseError
from memoryd.formats.common import (
    Fail,
    Transcript,
    clean_title,
    epoch_datetime,
    json_type,
    lenient_str,
    names,
    normalize_role,
    short_repr,
    ts_text,
)
from memoryd.records import Message, clean_text

# Content that the ChatGPT interface does not show as a turn: custom
# instructions, memory, and the model's reasoning summaries.
_CHATGPT_HIDDEN_CONTENT = frozenset({"user_editable_context", "model_editable_context", "thoughts", "reasoning_recap"})
_CHATGPT_PART_PLACEHOLDERS: Mapping[str, str] = MappingProxyType(
    {
        "image_asset_pointer": "[image]",
        "audio_asset_pointer": "[audio]",
        "real_time_user_audio_video_asset_pointer": "[audio/video]",
        "video_container_asset_pointer": "[video]",
    }
)


def read_chatgpt(path: Path, obj: dict[str, object]) -> Transcript:
    """The branch the ChatGPT interface shows: from the root to ``current_node``.

    Edits and regenerations leave other branches in ``mapping``; they are not
    part of the conversation as last seen.  Turns without a message, without
    text or hidden from the interface are skipped; parts that are not text
    become a short placeholder (``[image]``); attached files are noted by name.
    """

    def fail(reason: str) -> ParseError:
        return ParseError(path, reason)

    mapping = obj.get("mapping")
    if not isinstance(mapping, dict):
        raise fail(f"mapping: expected an object, got {json_type(mapping)}")
    warnings: list[str] = []
    skipped: Counter[str] = Counter()
    messages: list[Message] = []
    for node in _chatgpt_branch(mapping, obj.get("current_node"), fail, warnings):
        turn = _chatgpt_turn(node, skipped)
        if turn is not None:
            role, content, ts = turn
            messages.append(Message(seq=len(messages), role=role, content=content, ts=ts))
    warnings += [f"skipped {count} message(s): {reason}" for reason, count in sorted(skipped.items())]
    created = epoch_datetime(obj.get("create_time"))
    title = lenient_str(obj, "title")
    return Transcript(
        messages=tuple(messages),
        title=clean_title(title),
        created_date=created.date() if created is not None else None,
        warnings=tuple(warnings),
        source_format="chatgpt",
    )


def _chatgpt_branch(
    mapping: dict[str, object], current: object, fail: Fail, warnings: list[str]
) -> list[Mapping[str, object]]:
    """The nodes from the root down to ``current`` (or the latest leaf when it is missing)."""
    leaf = current if isinstance(current, str) and current in mapping else None
    if leaf is None:
        leaf = _chatgpt_latest_leaf(mapping)
        if leaf is None:
            return []
        warnings.append("current_node missing or unknown: followed the latest branch")
    branch: list[Mapping[str, object]] = []
    seen: set[str] = set()
    node_id: str | None = leaf
    while node_id is not None:
        if node_id in seen:
            raise fail(f"mapping: the parents of node {short_repr(node_id)} form a cycle")
        seen.add(node_id)
        node = mapping[node_id]
        if not isinstance(node, dict):
            raise fail(f"mapping[{short_repr(node_id)}]: expected an object, got {json_type(node)}")
        branch.append(node)
        parent = node.get("parent")
        if isinstance(parent, str) and parent not in mapping:
            warnings.append(f"mapping: parent {short_repr(parent)} of node {short_repr(node_id)} is missing")
        node_id = parent if isinstance(parent, str) and parent in mapping else None
    branch.reverse()
    return branch


def _chatgpt_latest_leaf(mapping: dict[str, object]) -> str | None:
    """From the first root, follow the last child (the latest edit or regeneration) down to a leaf."""
    roots = [
        key
        for key, node in mapping.items()
        if isinstance(node, dict) and not (isinstance(node.get("parent"), str) and node.get("parent") in mapping)
    ]
    if not roots:
        return next(iter(mapping), None)
    node_id = roots[0]
    seen = {node_id}
    while True:
        node = mapping[node_id]
        children = node.get("children") if isinstance(node, dict) else None
        following = [
            child
            for child in (children if isinstance(children, list) else [])
            if isinstance(child, str) and child in mapping and child not in seen
        ]
        if not following:
            return node_id
        node_id = following[-1]
        seen.add(node_id)


def _chatgpt_turn(node: Mapping[str, object], skipped: Counter[str]) -> tuple[str, str, str | None] | None:
    """``(role, content, ts)`` of a node's message, or None when it is not a visible turn."""
    message = node.get("message")
    if not isinstance(message, dict):
        return None
    author = message.get("author")
    role_name = author.get("role") if isinstance(author, dict) else None
    role = normalize_role(role_name) if isinstance(role_name, str) else None
    if role is None:
        skipped[f"unknown author role {short_repr(role_name)}"] += 1
        return None
    recipient = message.get("recipient")
    if isinstance(recipient, str) and recipient != "all":
        return None  # addressed to a tool (code, an image prompt, internal_tool commentary): not shown as a turn
    metadata = message.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    content = message.get("content")
    content = content if isinstance(content, dict) else {}
    content_type = content.get("content_type")
    if metadata.get("is_visually_hidden_from_conversation") or content_type in _CHATGPT_HIDDEN_CONTENT:
        return None
    text = _chatgpt_text(content, skipped)
    notes = [f"[file: {name}]" for name in names(metadata.get("attachments"), "name")]
    if notes and text.strip():
        text = text + "\n\n" + "\n".join(notes)
    elif notes:
        text = "\n".join(notes)
    if not text.strip():
        return None
    ts_value = epoch_datetime(message.get("create_time"))
    ts = ts_value.isoformat(timespec="seconds") if ts_value is not None else ts_text(message.get("create_time"))
    return role, clean_text(text), ts


def _chatgpt_text(content: Mapping[str, object], skipped: Counter[str]) -> str:
    parts = content.get("parts")
    if isinstance(parts, list):
        return "\n".join(piece for piece in map(_chatgpt_part, parts) if piece)
    for key in ("text", "result"):
        value = content.get(key)
        if isinstance(value, str):
            return value
    content_type = content.get("content_type")
    skipped[f"content type {short_repr(content_type)} has no text"] += 1
    return ""


def _chatgpt_part(part: object) -> str:
    """Text as is; anything else (image, audio, file) as a short placeholder, never an error."""
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        return ""
    text = part.get("text")
    if isinstance(text, str) and text.strip():
        return text  # e.g. the transcription of a voice message
    kind = part.get("content_type")
    if isinstance(kind, str):
        return _CHATGPT_PART_PLACEHOLDERS.get(kind, f"[{kind}]")
    return "[attachment]"
