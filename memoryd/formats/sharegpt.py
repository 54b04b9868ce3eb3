"""ShareGPT shape: ``{"conversations": [{"from": "human", "value": "..."}]}``.

The shape of many chat datasets (ShareGPT, and the fine-tuning sets that
copied it).  ``from`` is ``human``, ``gpt`` or ``system``; the other names
seen in such sets (``user``, ``assistant``, ``tool``, ``observation``,
``function_call``) are read too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from memoryd.errors import ParseError
from memoryd.formats.common import (
    Fail,
    Transcript,
    clean_title,
    json_type,
    lenient_str,
    normalize_role,
    short_repr,
    ts_text,
)
from memoryd.records import Message, clean_text

SHAREGPT_ROLES: Mapping[str, str] = MappingProxyType(
    {
        "human": "user",
        "gpt": "assistant",
        "system": "system",
        "function_call": "assistant",
        "observation": "tool",
        "function_response": "tool",
    }
)


def sharegpt_message(value: dict[str, object], seq: int, fail: Fail) -> Message:
    """One ``{"from", "value"}`` turn."""
    speaker = value.get("from")
    if not isinstance(speaker, str):
        raise fail(f"from: expected a string, got {json_type(speaker)}")
    role = SHAREGPT_ROLES.get(speaker.strip().casefold()) or normalize_role(speaker)
    if role is None:
        raise fail(f"from: unknown speaker {short_repr(speaker)} (expected human, gpt or system)")
    text = value.get("value")
    if not isinstance(text, str):
        raise fail(f"value: expected a string, got {json_type(text)}")
    return Message(seq=seq, role=role, content=clean_text(text), ts=ts_text(value.get("ts")))


def read_sharegpt(path: Path, obj: dict[str, object]) -> Transcript:
    """A ShareGPT conversation; its optional ``title`` (or ``id``) only names it."""

    def fail(reason: str) -> ParseError:
        return ParseError(path, reason)

    items = obj.get("conversations")
    if not isinstance(items, list):
        raise fail(f"conversations: expected an array, got {json_type(items)}")
    messages = []
    for index, item in enumerate(items):

        def fail_at(reason: str, index: int = index) -> ParseError:
            return ParseError(path, f"conversations[{index}]: {reason}")

        if not isinstance(item, dict):
            raise fail_at(f'expected a {{"from", "value"}} object, got {json_type(item)}')
        messages.append(sharegpt_message(item, index, fail_at))
    return Transcript(messages=tuple(messages), title=clean_title(lenient_str(obj, "title")), source_format="sharegpt")
