"""Data exports → conversation folders: ``memoryd import chatgpt|claude PATH``.

An export (the ``.zip`` ChatGPT or Claude mails you, its ``conversations.json``,
or the folder it was unzipped to) holds every conversation in one file.  Each
one becomes ``<conversations>/<slug>/`` with two files:

``conversation.json``
    the export's own object for that conversation, re-serialised (UTF-8,
    indented) but otherwise as exported.  Keeping the raw object rather than
    converting it to the native ``{"title", "created", "messages"}`` format
    is deliberate: nothing is lost (other branches of an edited ChatGPT
    conversation, attachments' metadata, model names), ``memoryd.formats`` has a
    single reader per dialect for both imported folders and a conversation
    someone saved by hand, and a better reader later improves every imported
    conversation at the next ``memoryd ingest --force`` without re-importing.

``meta.json``
    ``{"source": "chatgpt", "source_id": "<the export's conversation id>"}``:
    how a later import finds the folder again even when the conversation was
    renamed (its slug is not recomputed) or the folder was renamed by hand.
    Written once; a user's later edits to it (tags…) are left alone.

Folders appear atomically: they are written as a hidden ``.import-…`` folder
(which the daemon ignores) and renamed into place.  A conversation whose
bytes did not change is not touched at all, so importing the same export
twice changes nothing on disk, hence nothing in the database; one that
changed in a newer export is replaced in place, under the same slug.

The export is read as a stream, one conversation at a time, so memory
follows the largest conversation rather than the whole export; from a zip
only the ``conversations.json`` member is read (never extracted), and its
declared uncompressed size is capped.  One broken conversation is reported
and skipped; a file cut short keeps the conversations read before the cut.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from memoryd.errors import MemorydError, ParseError
from memoryd.exports.chatgpt import CHATGPT
from memoryd.exports.claude import CLAUDE
from memoryd.exports.folders import ConversationFolders
from memoryd.exports.source import ExportSource
from memoryd.exports.stream import EXPORT_MEMBER, MAX_EXPORT_BYTES, iter_export
from memoryd.formats import CONVERSATION_JSON, MAX_FILE_BYTES, Transcript, decode_text, read_json_document
from memoryd.formats.common import json_type, short_repr
from memoryd.records import clean_text

EXPORTS: Mapping[str, ExportSource] = MappingProxyType({source.name: source for source in (CHATGPT, CLAUDE)})
SOURCES = tuple(EXPORTS)

_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class ImportReport:
    """What an import did, conversation by conversation (slugs, or descriptions of what was left out)."""

    source: str
    path: Path
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # nothing to import (no visible message, duplicate)
    errors: list[str] = field(default_factory=list)  # could not be read: the export is damaged there
    warnings: list[str] = field(default_factory=list)
    conversations: int = 0  # read from the export, whatever became of them
    seconds: float = 0.0


def import_export(
    source: str,
    path: Path,
    conversations_dir: Path,
    *,
    max_bytes: int = MAX_EXPORT_BYTES,
) -> ImportReport:
    """Write one conversation folder per conversation of a ChatGPT or Claude export.

    Raises ``ParseError`` when nothing can be read from ``path`` (not an
    export, wrong kind of export, damaged before its first conversation) and
    ``MemorydError`` when the conversations folder cannot be written; a
    damaged conversation, or a file damaged after some conversations, is
    recorded in the report and the rest imported.
    """
    kind = EXPORTS.get(source)
    if kind is None:
        raise MemorydError(f"unknown export source {source!r} (expected one of {', '.join(SOURCES)})")
    started = time.monotonic()
    report = ImportReport(source=source, path=path)
    try:
        conversations_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = f"the conversations folder {conversations_dir}"
        raise MemorydError(f"cannot create {where}: {exc.strerror or exc}") from exc
    folders = ConversationFolders(conversations_dir, source)
    seen: dict[str, str] = {}
    try:
        with contextlib.closing(iter_export(path, max_bytes=max_bytes)) as values:
            for index, value in values:
                if report.conversations == 0:
                    _check_kind(kind, path, value)
                report.conversations += 1
                _import_one(report, folders, seen, kind, index, value)
    except ParseError as exc:
        if report.conversations == 0:
            raise
        report.errors.append(f"{exc} (import stopped after {report.conversations} conversation(s))")
    report.seconds = time.monotonic() - started
    return report


def _check_kind(kind: ExportSource, path: Path, value: object) -> None:
    """Importing a Claude export as ChatGPT (or the reverse) is refused before anything is written."""
    if not isinstance(value, dict):
        return
    for other in EXPORTS.values():
        if other != kind and other.key in value and kind.key not in value:
            raise ParseError(
                path,
                f"this is a {other.display} export (its conversations have {other.key!r}), not a"
                f" {kind.display} one: run `memoryd import {other.name}`",
            )


def _import_one(
    report: ImportReport,
    folders: ConversationFolders,
    seen: dict[str, str],
    kind: ExportSource,
    index: int,
    value: object,
) -> None:
    label = f"conversation {index + 1}"  # numbered as people count, from 1
    if not isinstance(value, dict):
        report.errors.append(f"{label}: expected a JSON object, got {json_type(value)}")
        return
    title = value.get(kind.title_key)
    if isinstance(title, str) and title.strip():
        label = f"{label} ({short_repr(' '.join(title.split()))})"
    if kind.key not in value:
        report.errors.append(f"{label}: not a {kind.display} conversation (no {kind.key!r})")
        return
    checked = readable_conversation(report, label, EXPORT_MEMBER, value)
    if checked is None:
        return
    transcript, data, replaced = checked
    if not transcript.messages:
        report.skipped.append(f"{label}: no visible message")
        return
    conversation_id = _conversation_id(kind, value)
    if conversation_id is None:
        conversation_id = "sha256:" + hashlib.sha256(data).hexdigest()[:32]
        report.warnings.append(f"{label}: no conversation id in the export; identified by its content")
    if conversation_id in seen:
        report.skipped.append(f"{label}: same conversation id as {seen[conversation_id]}, already imported")
        return
    slug, outcome = folders.write(conversation_id, transcript, data)
    seen[conversation_id] = slug
    {"created": report.created, "updated": report.updated, "unchanged": report.unchanged}[outcome].append(slug)
    if replaced:
        report.warnings.append(f"{slug}: {replaced} invalid character(s) replaced by U+FFFD")


def _conversation_id(kind: ExportSource, value: dict[str, object]) -> str | None:
    for key in kind.id_keys:
        found = value.get(key)
        if isinstance(found, int | str) and not isinstance(found, bool) and str(found).strip():
            return clean_text(str(found).strip())
    return None


def readable_conversation(
    report: ImportReport, label: str, name: str, value: dict[str, Any]
) -> tuple[Transcript, bytes, int] | None:
    """The transcript the daemon will read from ``value``, the bytes to write and the characters replaced.

    None, with the reason recorded under ``label``, when the conversation
    cannot be read as written back (``name`` is the file it will be).
    """
    try:
        transcript = read_json_document(Path(name), value)
        data, replaced = serialize(value)
        readable_back(data)
    except ParseError as exc:
        report.errors.append(f"{label}: {exc.reason}")
        return None
    except (RecursionError, ValueError) as exc:
        report.errors.append(f"{label}: cannot be written back as JSON ({type(exc).__name__})")
        return None
    return transcript, data, replaced


def readable_back(data: bytes) -> None:
    """Refuse what the daemon would refuse when reading the written file back (size, noise)."""
    if len(data) > MAX_FILE_BYTES:
        raise ParseError(
            CONVERSATION_JSON, f"too large: {len(data)} bytes once written (the limit is {MAX_FILE_BYTES})"
        )
    decode_text(Path(CONVERSATION_JSON), data)


def serialize(value: object) -> tuple[bytes, int]:
    """The bytes written for a conversation, and how many invalid characters had to be replaced.

    Lone surrogates (a ``\\ud83d`` escape cut in half, or bytes that were not
    UTF-8 in the export) cannot be written as UTF-8: they become U+FFFD.
    """
    text = json.dumps(value, ensure_ascii=False, indent=2) + "\n"
    try:
        return text.encode("utf-8"), 0
    except UnicodeEncodeError:
        replaced = len(_SURROGATE.findall(text))
        return clean_text(text).encode("utf-8"), replaced
