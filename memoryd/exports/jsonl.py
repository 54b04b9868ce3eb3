"""Chat datasets → conversation folders: ``memoryd import jsonl FILE``.

One conversation per line, in OpenAI chat shape (``{"messages": [...]}``,
content parts and ``tool_calls`` allowed) or ShareGPT shape
(``{"conversations": [{"from", "value"}]}``).  Each line becomes a folder
whose ``conversation.json`` is the line's object, read by the same readers
as any ``conversation.json`` (``memoryd.formats``), and whose ``meta.json``
says where it came from:

- ``source_id`` is ``FILE_NAME#ID`` when the line has an ``id`` (datasets
  number their records from 0 or 1, so the id alone would collide across
  files), else the hash of the line's content: the same line imported again
  is found again, an edited one is a new conversation;
- ``title``, when the line has none, is the start of the first user message,
  since datasets have neither titles nor dates (the slug is
  ``undated__<first words>``).

A broken line is reported (numbered from 1) and skipped; the other lines are
imported.  Nothing unchanged is rewritten.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

from memoryd.errors import MemorydError, ParseError
from memoryd.exports.folders import ConversationFolders
from memoryd.exports.importer import ImportReport, readable_conversation
from memoryd.formats import Transcript
from memoryd.formats.chat import is_conversation, shape_of
from memoryd.records import clean_text

SOURCE = "jsonl"
DATASET_SHAPES = '{"messages": [...]} (OpenAI chat) or {"conversations": [...]} (ShareGPT)'
# Words of the first user message that make a title for a dataset record without one.
TITLE_WORDS = 12
_ID_KEYS = ("id", "conversation_id", "uuid")


def import_jsonl(path: Path, conversations_dir: Path) -> ImportReport:
    """Write one conversation folder per line of a chat dataset.

    Raises ``ParseError`` when the file cannot be read or is not a dataset
    (its first record is a message, not a conversation) and ``MemorydError``
    when the conversations folder cannot be written.
    """
    started = time.monotonic()
    report = ImportReport(source=SOURCE, path=path)
    try:
        conversations_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = f"the conversations folder {conversations_dir}"
        raise MemorydError(f"cannot create {where}: {exc.strerror or exc}") from exc
    folders = ConversationFolders(conversations_dir, SOURCE)
    seen: dict[str, str] = {}
    try:
        with path.open("rb") as file:
            for number, raw in enumerate(file, start=1):
                if raw.strip():
                    _import_line(report, folders, seen, path, number, raw)
    except OSError as exc:
        raise ParseError(path, f"cannot read: {exc.strerror or exc}") from exc
    if report.conversations == 0 and not report.errors:
        raise ParseError(path, "empty file: no conversation")
    report.seconds = time.monotonic() - started
    return report


def _import_line(
    report: ImportReport, folders: ConversationFolders, seen: dict[str, str], path: Path, number: int, raw: bytes
) -> None:
    label = f"line {number}"
    text = raw.decode("utf-8-sig" if number == 1 else "utf-8", "surrogateescape").rstrip("\r\n")
    try:
        value: object = json.loads(text)
    except json.JSONDecodeError as exc:
        report.errors.append(f"{label}: invalid JSON: {exc.msg} (column {exc.colno})")
        return
    except (ValueError, RecursionError) as exc:
        report.errors.append(f"{label}: invalid JSON: {type(exc).__name__}")
        return
    if not is_conversation(value):
        if report.conversations == 0 and isinstance(value, dict) and ("role" in value or "from" in value):
            raise ParseError(
                path,
                f"{label}: {shape_of(value)}, not a conversation: this file holds one message per line;"
                " put it in a conversation folder as messages.jsonl",
            )
        report.errors.append(f"{label}: {shape_of(value)}, not a conversation: expected {DATASET_SHAPES}")
        return
    assert isinstance(value, dict)  # is_conversation says so; mypy cannot tell
    report.conversations += 1
    checked = readable_conversation(report, label, path.name, value)
    if checked is None:
        return
    transcript, data, replaced = checked
    if not transcript.messages:
        report.skipped.append(f"{label}: no message")
        return
    conversation_id = _conversation_id(path, value, data)
    if conversation_id in seen:
        report.skipped.append(f"{label}: same conversation as {seen[conversation_id]}, already imported")
        return
    meta = {} if transcript.title else {"title": _title(transcript)}
    named = transcript if transcript.title else replace(transcript, title=meta["title"])
    slug, outcome = folders.write(conversation_id, named, data, meta=meta)
    seen[conversation_id] = slug
    {"created": report.created, "updated": report.updated, "unchanged": report.unchanged}[outcome].append(slug)
    if replaced:
        report.warnings.append(f"{slug}: {replaced} invalid character(s) replaced by U+FFFD")


def _conversation_id(path: Path, value: dict[str, object], data: bytes) -> str:
    """``FILE_NAME#ID`` from the record's own id, else the hash of its content."""
    for key in _ID_KEYS:
        found = value.get(key)
        if isinstance(found, int | str) and not isinstance(found, bool) and str(found).strip():
            return clean_text(f"{path.name}#{str(found).strip()}")
    return "sha256:" + hashlib.sha256(data).hexdigest()[:32]


def _title(transcript: Transcript) -> str:
    """The first words of the first user message (else of the first message), on one line."""
    first = next((m for m in transcript.messages if m.role == "user"), transcript.messages[0])
    words = first.content.split()
    title = " ".join(words[:TITLE_WORDS]) + (" …" if len(words) > TITLE_WORDS else "")
    return title or "untitled"
