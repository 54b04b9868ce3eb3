"""Chat messages in any accepted shape, and words for the shapes that are not accepted.

A message is an OpenAI chat message (``{"role", "content", "ts"?}``, the
native shape) or a ShareGPT turn (``{"from", "value"}``).  When a value is
neither, the error says what it looks like (a whole OpenAI conversation, a
ShareGPT one, an export…) and what memoryd accepts, so the user knows which
command or file name to use instead.
"""

from __future__ import annotations

from memoryd.formats.common import Fail, json_type, short_repr
from memoryd.formats.openai import openai_message
from memoryd.formats.sharegpt import sharegpt_message
from memoryd.records import Message

MESSAGE_SHAPES = (
    '{"role", "content", "ts"?} (OpenAI chat: content parts and tool_calls allowed) or {"from", "value"} (ShareGPT)'
)
CONVERSATION_SHAPES = (
    '{"title"?, "created"?, "messages": [...]} (native or OpenAI chat), {"conversations": [...]} (ShareGPT),'
    ' or one conversation of a ChatGPT ("mapping") or Claude ("chat_messages") export'
)
DATASET_HINT = "for a file of one conversation per line, run `memoryd import jsonl FILE`"
_MAX_KEYS_SHOWN = 6


def shape_of(value: object) -> str:
    """What a JSON value looks like, in the words of the formats people know."""
    if isinstance(value, dict):
        if isinstance(value.get("messages"), list):
            return 'a whole conversation in OpenAI chat shape ({"messages": [...]})'
        if isinstance(value.get("conversations"), list):
            return 'a whole conversation in ShareGPT shape ({"conversations": [...]})'
        if "mapping" in value:
            return "a ChatGPT export conversation"
        if "chat_messages" in value:
            return "a Claude export conversation"
        if not value:
            return "an empty object"
        keys = [short_repr(key, 30) for key in list(value)[:_MAX_KEYS_SHOWN]]
        more = ", …" if len(value) > _MAX_KEYS_SHOWN else ""
        return f"an object with keys {', '.join(keys)}{more}"
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        first = value[0]
        if "role" in first or "from" in first:
            return "an array of messages"
        if "mapping" in first or "chat_messages" in first or "messages" in first or "conversations" in first:
            return "an array of conversations"
    return json_type(value)


def is_conversation(value: object) -> bool:
    """Whether a value is a whole conversation rather than one message (a dataset line, misplaced)."""
    return isinstance(value, dict) and (
        isinstance(value.get("messages"), list) or isinstance(value.get("conversations"), list)
    )


def chat_message(value: object, seq: int, fail: Fail) -> Message:
    """One message, OpenAI (native) or ShareGPT; anything else is refused, naming what it looks like."""
    if isinstance(value, dict):
        if "role" in value:
            return openai_message(value, seq, fail)
        if "from" in value:
            return sharegpt_message(value, seq, fail)
    hint = f"; {DATASET_HINT}" if is_conversation(value) else ""
    raise fail(f"{shape_of(value)}, not a message: expected {MESSAGE_SHAPES}{hint}")
