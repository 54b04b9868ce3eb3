"""Typed values that flow between the stages.

Parsers produce them from folders, the store writes them, nothing mutates them.
Hashes are computed here so that every stage agrees on what "the same content"
means.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

ROLES = ("user", "assistant", "system", "tool")


def content_hash(text: str) -> str:
    """SHA-256 of the UTF-8 text: the identity of content across the whole system."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def clean_text(text: str) -> str:
    """Make text storable in PostgreSQL.

    PostgreSQL ``text`` cannot hold NUL, and JSON may decode to lone surrogates
    that UTF-8 cannot encode; both are replaced by U+FFFD rather than dropped,
    so the damage stays visible.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATE.sub("\ufffd", text)
    return text


_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a transcript; ``seq`` is its 0-based position."""

    seq: int
    role: str
    content: str
    ts: str | None = None
    speaker: str | None = None
    """Who said it, by name, where the transcript says (``Kate``); the role says only user or assistant."""

    @property
    def content_hash(self) -> str:
        return content_hash(self.content)


@dataclass(frozen=True, slots=True)
class Conversation:
    """A parsed conversation folder.

    ``source_hash`` covers every file the conversation was read from (transcript
    and ``meta.json``), so an unchanged folder can be recognised without
    re-parsing it.
    """

    slug: str
    title: str
    created_date: date | None
    messages: tuple[Message, ...]
    source_path: Path
    source_format: str
    source_hash: str
    total_chars: int
    total_lines: int
    tags: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())
    in_progress: bool = False
    """The transcript is still being written: what is here is its complete part."""


@dataclass(frozen=True, slots=True)
class Summary:
    """One summary of some of a conversation's messages.

    Its identity within a conversation is (level, key).
    """

    level: int
    key: str
    covers: tuple[int, ...]
    content: str
    topics: tuple[str, ...]
    source_path: Path

    @property
    def content_hash(self) -> str:
        return content_hash(self.content)
