"""Which reader reads which file: transcript names by precedence, JSON dialects by their keys."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from memoryd.errors import ParseError
from memoryd.formats.chatgpt import read_chatgpt
from memoryd.formats.claude import read_claude
from memoryd.formats.common import (
    Transcript,
    json_type,
    load_json,
)
from memoryd.formats.jsonl import read_jsonl
from memoryd.formats.markdown import read_markdown
from memoryd.formats.native import read_native

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
    """A decoded ``conversation.json``: native, one ChatGPT export conversation or one Claude one.

    The dialect is told by its keys: ``messages`` (native), ``mapping``
    (ChatGPT), ``chat_messages`` (Claude).  ``path`` only names the source in
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
        raise fail(f"expected a JSON object, got {json_type(value)}")
    if "messages" in value:
        return read_native(path, value)
    if "mapping" in value:
        return read_chatgpt(path, value)
    if "chat_messages" in value:
        return read_claude(path, value)
    raise fail('no "messages" list')


def _export_kind(obj: Mapping[str, object]) -> str | None:
    if "mapping" in obj:
        return "ChatGPT"
    if "chat_messages" in obj:
        return "Claude"
    return None


READERS: Mapping[str, Callable[[Path, str], Transcript]] = MappingProxyType(
    {"jsonl": read_jsonl, "json": read_json, "markdown": read_markdown}
)
