"""Data exports → conversation folders: ``memoryd import chatgpt|claude PATH``.

An export (the ``.zip`` ChatGPT or Claude mails you, its ``conversations.json``,
or the folder it was unzipped to) holds every conversation in one file.  Each
one becomes ``<conversations>/<slug>/`` with two files:

``conversation.json``
    the export's own object for that conversation, re-serialised (UTF-8,
    indented) but otherwise as exported.  Keeping the raw object rather than
    converting it to the native ``{"title", "created", "messages"}`` format
    is deliberate: nothing is lost (other branches of an edited ChatGPT
    conversation, attachments' metadata, model names), ``parse.py`` has a
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
import errno
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import time
import unicodedata
import zipfile
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path, PurePosixPath
from typing import IO

from memoryd.errors import MemorydError, ParseError
from memoryd.parse import (
    CONVERSATION_JSON,
    MAX_FILE_BYTES,
    META_NAME,
    Transcript,
    decode_text,
    read_json_document,
    short_repr,
)
from memoryd.records import clean_text

SOURCES = ("chatgpt", "claude")
EXPORT_MEMBER = "conversations.json"
# Uncompressed size of conversations.json accepted from a zip: far above any
# real export, far below what a zip bomb would make us read.
MAX_EXPORT_BYTES = 4 * 1024**3
# One conversation larger than this (in characters of JSON) stops the import:
# it is read whole, so this bounds memory.
MAX_CONVERSATION_CHARS = 512 * 1024**2
MAX_SLUG_BYTES = 80

_KIND_KEY = {"chatgpt": "mapping", "claude": "chat_messages"}
_KIND_NAME = {"chatgpt": "ChatGPT", "claude": "Claude"}
_WORD = re.compile(r"[^\W_]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CHUNK_CHARS = 1024 * 1024
_NOT_BLANK = re.compile(r"[^ \t\r\n]")


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
    if source not in SOURCES:
        raise MemorydError(f"unknown export source {source!r} (expected one of {', '.join(SOURCES)})")
    started = time.monotonic()
    report = ImportReport(source=source, path=path)
    try:
        conversations_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = f"the conversations folder {conversations_dir}"
        raise MemorydError(f"cannot create {where}: {exc.strerror or exc}") from exc
    folders = _Folders(conversations_dir, source)
    seen: dict[str, str] = {}
    try:
        with contextlib.closing(iter_export(path, max_bytes=max_bytes)) as values:
            for index, value in values:
                if report.conversations == 0:
                    _check_kind(source, path, value)
                report.conversations += 1
                _import_one(report, folders, seen, source, index, value)
    except ParseError as exc:
        if report.conversations == 0:
            raise
        report.errors.append(f"{exc} (import stopped after {report.conversations} conversation(s))")
    report.seconds = time.monotonic() - started
    return report


def _check_kind(source: str, path: Path, value: object) -> None:
    """Importing a Claude export as ChatGPT (or the reverse) is refused before anything is written."""
    if not isinstance(value, dict):
        return
    for other, key in _KIND_KEY.items():
        if other != source and key in value and _KIND_KEY[source] not in value:
            raise ParseError(
                path,
                f"this is a {_KIND_NAME[other]} export (its conversations have {key!r}), not a"
                f" {_KIND_NAME[source]} one: run `memoryd import {other}`",
            )


def _import_one(
    report: ImportReport, folders: _Folders, seen: dict[str, str], source: str, index: int, value: object
) -> None:
    label = f"conversation {index}"
    if not isinstance(value, dict):
        report.errors.append(f"{label}: expected a JSON object, got {type(value).__name__}")
        return
    title = value.get("title" if source == "chatgpt" else "name")
    if isinstance(title, str) and title.strip():
        label = f"{label} ({short_repr(' '.join(title.split()))})"
    if _KIND_KEY[source] not in value:
        report.errors.append(f"{label}: not a {_KIND_NAME[source]} conversation (no {_KIND_KEY[source]!r})")
        return
    try:
        transcript = read_json_document(Path(EXPORT_MEMBER), value)
        data, replaced = _serialize(value)
        _readable_back(data)
    except ParseError as exc:
        report.errors.append(f"{label}: {exc.reason}")
        return
    except (RecursionError, ValueError) as exc:
        report.errors.append(f"{label}: cannot be written back as JSON ({type(exc).__name__})")
        return
    if not transcript.messages:
        report.skipped.append(f"{label}: no visible message")
        return
    conversation_id = _conversation_id(source, value)
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


def _conversation_id(source: str, value: dict[str, object]) -> str | None:
    keys = ("conversation_id", "id") if source == "chatgpt" else ("uuid", "id")
    for key in keys:
        found = value.get(key)
        if isinstance(found, int | str) and not isinstance(found, bool) and str(found).strip():
            return clean_text(str(found).strip())
    return None


def _readable_back(data: bytes) -> None:
    """Refuse what the daemon would refuse when reading the written file back (size, noise)."""
    if len(data) > MAX_FILE_BYTES:
        raise ParseError(
            CONVERSATION_JSON, f"too large: {len(data)} bytes once written (the limit is {MAX_FILE_BYTES})"
        )
    decode_text(Path(CONVERSATION_JSON), data)


def _serialize(value: object) -> tuple[bytes, int]:
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


# --- slugs


def slug_for(created: date | None, title: str | None, *, suffix: str = "") -> str:
    """``YYYY-MM-DD__title_words`` (``undated``/``untitled`` when missing), at most ``MAX_SLUG_BYTES`` bytes.

    Lower-case letters and digits of any script, joined by ``_``: no ``/``,
    no control or invisible characters, no leading dot, the same on every
    filesystem (NFC).  ``suffix`` (a short id) is kept whole; the title is
    cut at a word boundary when it can be.
    """
    prefix = created.isoformat() if created is not None else "undated"
    words = "_".join(_WORD.findall(unicodedata.normalize("NFC", title or "").lower())) or "untitled"
    tail = f"__{suffix}" if suffix else ""
    budget = MAX_SLUG_BYTES - len(prefix) - 2 - len(tail.encode("utf-8"))
    return f"{prefix}__{_cut(words, budget)}{tail}"


def _cut(words: str, budget: int) -> str:
    if len(words.encode("utf-8")) <= budget:
        return words
    cut = words.encode("utf-8")[:budget].decode("utf-8", "ignore")
    boundary = cut.rfind("_")
    if boundary >= len(cut) // 2:
        cut = cut[:boundary]
    return cut.rstrip("_") or "untitled"


def short_id(conversation_id: str, length: int = 8) -> str:
    """A short, stable, filesystem-safe id: the id's first letters and digits (a UUID's hex), else a hash."""
    alnum = re.sub(r"[^0-9A-Za-z]", "", conversation_id).lower()
    if len(alnum) >= length:
        return alnum[:length]
    return hashlib.sha256(conversation_id.encode("utf-8")).hexdigest()[:length]


# --- folders


class _Folders:
    """The conversations folder as the importer sees it: names taken, and folders by source id."""

    def __init__(self, root: Path, source: str) -> None:
        self.root = root
        self.source = source
        self.taken: set[str] = set()
        self.by_id: dict[str, str] = {}
        try:
            with os.scandir(root) as entries:
                for entry in entries:
                    self.taken.add(_name_key(entry.name))
                    if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                        source_id = self._source_id(Path(entry.path) / META_NAME)
                        if source_id is not None:
                            self.by_id.setdefault(source_id, entry.name)
        except OSError as exc:
            raise MemorydError(f"cannot list the conversations folder {root}: {exc.strerror or exc}") from exc

    def _source_id(self, meta_path: Path) -> str | None:
        """The id an earlier import recorded in meta.json; anything unreadable is simply not ours."""
        try:
            if not meta_path.is_file() or meta_path.is_symlink() or meta_path.stat().st_size > 1024 * 1024:
                return None
            meta = json.loads(meta_path.read_bytes())
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(meta, dict) or meta.get("source") != self.source:
            return None
        source_id = meta.get("source_id")
        return source_id if isinstance(source_id, str) else None

    def write(self, conversation_id: str, transcript: Transcript, data: bytes) -> tuple[str, str]:
        """Write a conversation; returns its slug and ``created``, ``updated`` or ``unchanged``.

        The folder is found by the id in its meta.json; failing that (meta.json
        deleted), a folder of the right name already holding exactly these
        bytes is the same conversation, not a reason for a duplicate.
        """
        slug = self.by_id.get(conversation_id)
        if slug is not None and (self.root / slug).is_dir():
            return slug, self._update(slug, data)
        for candidate in _slug_candidates(conversation_id, transcript):
            if _name_key(candidate) not in self.taken:
                self._create(candidate, conversation_id, data)
                self.by_id[conversation_id] = candidate
                self.taken.add(_name_key(candidate))
                return candidate, "created"
            if self._holds(candidate, data):
                self.by_id[conversation_id] = candidate
                return candidate, "unchanged"
        raise MemorydError(f"no free folder name for conversation {conversation_id!r}")

    def _holds(self, slug: str, data: bytes) -> bool:
        target = self.root / slug / CONVERSATION_JSON
        try:
            return target.is_file() and not target.is_symlink() and target.read_bytes() == data
        except OSError:
            return False

    def _update(self, slug: str, data: bytes) -> str:
        """Replace conversation.json only if its bytes differ (so mtimes, hence the daemon, stay still)."""
        if self._holds(slug, data):
            return "unchanged"
        folder = self.root / slug
        target = folder / CONVERSATION_JSON
        try:
            staged = folder / f".{CONVERSATION_JSON}.import-{secrets.token_hex(4)}"
            try:
                staged.write_bytes(data)
                os.replace(staged, target)
            finally:
                staged.unlink(missing_ok=True)
        except OSError as exc:
            raise MemorydError(f"cannot write {target}: {exc.strerror or exc}") from exc
        return "updated"

    def _create(self, slug: str, conversation_id: str, data: bytes) -> None:
        """Write the folder hidden, then rename it into place: the daemon never sees it half-written."""
        meta = json.dumps({"source": self.source, "source_id": conversation_id}, ensure_ascii=False, indent=2)
        staging = self.root / f".import-{secrets.token_hex(6)}"
        target = self.root / slug
        try:
            staging.mkdir()
            try:
                (staging / CONVERSATION_JSON).write_bytes(data)
                (staging / META_NAME).write_bytes((meta + "\n").encode("utf-8"))
                if target.exists() or target.is_symlink():
                    raise FileExistsError(errno.EEXIST, "appeared meanwhile", str(target))
                staging.rename(target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        except OSError as exc:
            raise MemorydError(f"cannot write {target}: {exc.strerror or exc}") from exc


def _slug_candidates(conversation_id: str, transcript: Transcript) -> Iterator[str]:
    """The slug, then the slug with ever longer prefixes of the id: stable for a given conversation."""
    yield slug_for(transcript.created_date, transcript.title)
    for length in (8, 12, 16, 32):
        yield slug_for(transcript.created_date, transcript.title, suffix=short_id(conversation_id, length))
    for counter in range(2, 10_000):  # the id itself collides: only hand-made folders can do that
        yield slug_for(transcript.created_date, transcript.title, suffix=f"{short_id(conversation_id)}_{counter}")


def _name_key(name: str) -> str:
    """Names compared as a case-insensitive, normalising filesystem (macOS) would."""
    return unicodedata.normalize("NFC", name).casefold()


# --- reading the export


def iter_export(path: Path, *, max_bytes: int = MAX_EXPORT_BYTES) -> Generator[tuple[int, object], None, None]:
    """The conversations of an export, one decoded JSON value at a time, with their index.

    ``path`` is a zip (its ``conversations.json`` member is read), a folder
    holding ``conversations.json``, or a JSON file: an array of
    conversations, or one conversation object.  Raises ``ParseError`` where
    the file stops making sense, after yielding what came before.
    """
    with _open_export(path, max_bytes=max_bytes) as (stream, where):
        yield from _JsonArrayStream(stream, where).values()


@contextlib.contextmanager
def _open_export(path: Path, *, max_bytes: int) -> Iterator[tuple[IO[str], Path]]:
    if path.is_dir():
        path = path / EXPORT_MEMBER
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as exc:
        raise ParseError(path, f"cannot read: {exc.strerror or exc}") from exc
    try:
        if not is_zip:
            with path.open("rb") as raw, _text(raw) as text:
                yield text, path
            return
        with zipfile.ZipFile(path) as archive:
            member = _export_member(archive, path)
            if member.file_size > max_bytes:
                raise ParseError(
                    path,
                    f"{member.filename} is {member.file_size} bytes uncompressed, over the limit of {max_bytes}",
                )
            with archive.open(member) as member_raw, _text(member_raw) as text:
                yield text, path / member.filename
    except OSError as exc:
        raise ParseError(path, f"cannot read: {exc.strerror or exc}") from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise ParseError(path, f"damaged or unsupported zip: {exc}") from exc


def _text(raw: IO[bytes]) -> io.TextIOWrapper:
    """UTF-8 (a BOM dropped); bytes that are not UTF-8 become lone surrogates, replaced when written."""
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape")


def _export_member(archive: zipfile.ZipFile, path: Path) -> zipfile.ZipInfo:
    """The ``conversations.json`` nearest the top of the archive; nothing else is ever read."""
    members = [
        info
        for info in archive.infolist()
        if not info.is_dir()
        and PurePosixPath(info.filename).name == EXPORT_MEMBER
        and not info.filename.startswith("__MACOSX/")
    ]
    if not members:
        raise ParseError(path, f"no {EXPORT_MEMBER} in this zip: is it a ChatGPT or Claude data export?")
    member = min(members, key=lambda info: (info.filename.count("/"), info.filename))
    if member.flag_bits & 0x1:
        raise ParseError(path, f"{member.filename} is encrypted")
    return member


class _JsonArrayStream:
    """The elements of a JSON array read from a text stream, without holding the whole array.

    Each element is decoded with ``raw_decode`` from a buffer that grows
    (doubling) until the element fits, so the work stays linear in the size
    of the file and memory follows the largest element.
    """

    def __init__(self, stream: IO[str], where: Path) -> None:
        self.stream = stream
        self.where = where
        self.buffer = ""
        self.pos = 0
        self.offset = 0  # characters of the file before self.buffer
        self.eof = False
        self.decoder = json.JSONDecoder()

    def values(self) -> Iterator[tuple[int, object]]:
        first = self._peek()
        if first is None:
            raise ParseError(self.where, "empty file")
        if first == "{":
            value = self._value()
            self._expect_end()
            yield 0, value
            return
        if first != "[":
            raise self._error("expected a JSON array of conversations")
        self.pos += 1
        index = 0
        while True:
            char = self._peek()
            if char is None:
                raise self._error(f"cut short: the array of conversations ends after {index} element(s)")
            if char == "]":
                self.pos += 1
                self._expect_end()
                return
            if index > 0:
                if char != ",":
                    raise self._error("expected ',' or ']' between conversations")
                self.pos += 1
                if self._peek() is None:
                    raise self._error(f"cut short after {index} element(s)")
            yield index, self._value()
            index += 1

    def _expect_end(self) -> None:
        if self._peek() is not None:
            raise self._error("extra data after the JSON value")

    def _error(self, reason: str) -> ParseError:
        return ParseError(self.where, f"{reason} (at character {self.offset + self.pos})")

    def _read(self, size: int) -> bool:
        """Append up to ``size`` characters to the buffer; False at the end of the stream."""
        if self.eof:
            return False
        try:
            chunk = self.stream.read(size)
        except OSError as exc:
            raise self._error(f"cannot read: {exc.strerror or exc}") from exc
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise self._error(f"damaged zip: {exc}") from exc
        if not chunk:
            self.eof = True
            return False
        if self.pos > _CHUNK_CHARS:
            self.offset += self.pos
            self.buffer = self.buffer[self.pos :]
            self.pos = 0
        self.buffer += chunk
        return True

    def _peek(self) -> str | None:
        """The next character that is not JSON whitespace (not consumed), None at the end."""
        while True:
            found = _NOT_BLANK.search(self.buffer, self.pos)
            if found is not None:
                self.pos = found.start()
                return self.buffer[self.pos]
            self.pos = len(self.buffer)
            if not self._read(_CHUNK_CHARS):
                return None

    def _value(self) -> object:
        want = _CHUNK_CHARS
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                # Cut by the end of the buffer (an open string, a partial literal) or really wrong?
                cut = exc.msg.startswith("Unterminated string") or exc.pos >= len(self.buffer) - 16
                if cut and self._more(want):
                    want *= 2
                    continue
                raise ParseError(self.where, f"invalid JSON: {exc.msg} (at character {self.offset + exc.pos})") from exc
            except RecursionError as exc:
                raise self._error("invalid JSON: nested too deeply") from exc
            except ValueError as exc:  # an integer of thousands of digits
                raise self._error(f"invalid JSON: {exc}") from exc
            if end == len(self.buffer) and not isinstance(value, dict | list) and self._more(want):
                continue  # a number may go on in the next chunk
            self.pos = end
            return value

    def _more(self, want: int) -> bool:
        if len(self.buffer) - self.pos > MAX_CONVERSATION_CHARS:
            raise self._error(f"one conversation is larger than {MAX_CONVERSATION_CHARS} characters")
        return self._read(want)
