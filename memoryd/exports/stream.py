"""Reading an export as a stream: a zip, a folder or a JSON file → one conversation value at a time.

Memory follows the largest conversation rather than the whole export; from a
zip only the ``conversations.json`` member is read (never extracted), and its
declared uncompressed size is capped.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import zipfile
import zlib
from collections.abc import Generator, Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from memoryd.errors import ParseError

EXPORT_MEMBER = "conversations.json"
# Uncompressed size of conversations.json accepted from a zip: far above any
# real export, far below what a zip bomb would make us read.
MAX_EXPORT_BYTES = 4 * 1024**3
# One conversation larger than this (in characters of JSON) stops the import:
# it is read whole, so this bounds memory.
MAX_CONVERSATION_CHARS = 512 * 1024**2

_CHUNK_CHARS = 1024 * 1024
# What every zip starts with (a local file header): a file that starts so but
# that zipfile cannot open has lost its end, where the member list is.
_ZIP_MAGIC = b"PK\x03\x04"
# What a file that is not an export starts with, in words.
_FIRST_CHARACTER = {'"': "a string", "t": "a boolean", "f": "a boolean", "n": "null"}
_TRUNCATED_ZIP = (
    "a truncated or damaged zip: it starts like a zip archive but its end (the list of its files) is missing;"
    " download the export again"
)
_NOT_BLANK = re.compile(r"[^ \t\r\n]")


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
            with path.open("rb") as raw:
                if raw.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC:
                    raise ParseError(path, _TRUNCATED_ZIP)
                raw.seek(0)
                with _text(raw) as text:
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
            found = _FIRST_CHARACTER.get(first, "a number" if first in "-0123456789" else "text that is not JSON")
            raise self._error(f"expected a JSON array of conversations, or one conversation object; found {found}")
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
        following = self._peek()
        if following == "{":
            raise self._error(
                "extra data after the JSON value: another object follows, as in a file of one conversation per"
                " line (JSONL); for such a dataset, run `memoryd import jsonl FILE`"
            )
        if following is not None:
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
