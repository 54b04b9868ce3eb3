"""Which reader reads which file: transcript names by precedence, JSON dialects by their keys."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from memoryd.errors import ParseError
from memoryd.formats.chat import CONVERSATION_SHAPES, shape_of
from memoryd.formats.chatgpt import read_chatgpt
from memoryd.formats.claude import read_claude
from memoryd.formats.common import Transcript, load_json
from memoryd.formats.jsonl import read_jsonl
from memoryd.formats.markdown import read_markdown
from memoryd.formats.native import read_native
from memoryd.formats.sharegpt import read_sharegpt

CONVERSATION_JSON = "conversation.json"
# Named transcripts in order of precedence, with the format each one is read as.
TRANSCRIPT_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "messages.jsonl": "jsonl",
        CONVERSATION_JSON: "json",
        "conversation.md": "markdown",
    }
)


def read_json(path: Path, text: str) -> Transcript:
    def fail(reason: str) -> ParseError:
        return ParseError(path, reason)

    return read_json_document(path, load_json(text, fail))


def read_json_document(path: Path, value: object) -> Transcript:
    """A decoded ``conversation.json``: native (OpenAI chat), ShareGPT, one ChatGPT or Claude export conversation.

    The dialect is told by its keys: ``messages`` (native or OpenAI chat),
    ``conversations`` (ShareGPT), ``mapping`` (ChatGPT), ``chat_messages``
    (Claude).  ``path`` only names the source in
    errors; ``memoryd.exports`` calls this on the conversations of an export.
    """

    def fail(reason: str) -> ParseError:
        return ParseError(path, reason)

    if not isinstance(value, dict):
        if isinstance(value, list) and value and isinstance(value[0], dict) and _export_kind(value[0]):
            raise fail(
                f"a whole {_export_kind(value[0])} data export (an array of conversations), not one conversation:"
                " split it with `memoryd import`"
            )
        raise fail(f"{shape_of(value)}, not a conversation: expected one object, {CONVERSATION_SHAPES}")
    if "messages" in value:
        return read_native(path, value)
    if "conversations" in value:
        return read_sharegpt(path, value)
    if "mapping" in value:
        return read_chatgpt(path, value)
    if "chat_messages" in value:
        return read_claude(path, value)
    raise fail(f"{shape_of(value)}, not a conversation: expected {CONVERSATION_SHAPES}")


def _export_kind(obj: Mapping[str, object]) -> str | None:
    if "mapping" in obj:
        return "ChatGPT"
    if "chat_messages" in obj:
        return "Claude"
    return None


READERS: Mapping[str, Callable[[Path, str], Transcript]] = MappingProxyType(
    {"jsonl": read_jsonl, "json": read_json, "markdown": read_markdown}
)
