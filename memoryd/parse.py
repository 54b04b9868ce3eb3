"""Conversation folders → ``Conversation`` values.

Pure: this module reads files and returns values or raises ``ParseError``; it
never touches the database, the model or the logger, so ``sync.py`` decides
what a bad folder means (record the error, keep what was stored before).

Every format ends in the same ``Transcript`` so that title, date and hashing
rules live in one place whatever the transcript looked like.

Bad input is either refused with a ``ParseError`` naming the file (and line),
or accepted with a warning (``Conversation.warnings``) saying what was
repaired: bytes that are not UTF-8 are decoded with U+FFFD, a Markdown file
without any role marker becomes one ``user`` message.  What is refused is what
would replace a stored conversation with garbage: binary data, an empty or
truncated file, JSON of the wrong shape, a symlink leading out of the watched
folder.
"""

from __future__ import annotations

import bisect
import errno
import hashlib
import json
import math
import os
import re
import stat
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType

from memoryd.errors import ParseError
from memoryd.records import ROLES, Conversation, Message, clean_text

CONVERSATION_JSON = "conversation.json"
# Named transcripts in order of precedence, with the format each one is read as.
TRANSCRIPT_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "messages.jsonl": "jsonl",
        CONVERSATION_JSON: "json",
        "conversation.md": "markdown",
    }
)
# Suffixes of the fallback transcript: a folder's single file of one of these kinds.
FALLBACK_SUFFIXES = (".md", ".txt")
META_NAME = "meta.json"
# A transcript or meta.json larger than this is refused before it is read: it
# would cost the daemon that much memory several times over.
MAX_FILE_BYTES = 256 * 1024 * 1024

# One alias table for every format, so "Human" means the same in JSONL and Markdown.
ROLE_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        **{role: role for role in ROLES},
        "human": "user",
        "you": "user",
        "utilisateur": "user",
        "ai": "assistant",
        "chatgpt": "assistant",
        "claude": "assistant",
    }
)

_NO_TRANSCRIPT = "no transcript (expected messages.jsonl, conversation.json or conversation.md)"
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_SLUG_DATE = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})(?![0-9])")
_ISO_DATE_PREFIX = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})")
# Characters no text file holds in quantity: C0 controls other than
# \t \n \v \f \r and ESC (terminal transcripts keep colour codes), DEL, and
# the U+FFFD that undecodable bytes become.
_NOT_TEXT = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f\ufffd]")
_BINARY_SAMPLE = 65536  # characters looked at, like git and grep look at a file's head
_BINARY_RATIO = 0.3  # random bytes score about 0.6, text in a legacy 8-bit encoding far below 0.3

Fail = Callable[[str], ParseError]


# --- shared helpers


def normalize_role(name: str) -> str | None:
    """Map a role as written (any case, any alias) to one of ``ROLES``, or None."""
    return ROLE_ALIASES.get(name.strip().casefold())


def is_ignored_name(name: str) -> bool:
    """Hidden files and editor leftovers are never input, whatever their suffix."""
    return name.startswith(".") or name.endswith(("~", "#")) or name.lower().endswith((".tmp", ".swp", ".swx", ".part"))


def readable_file(path: Path, root: Path) -> bool:
    """Whether ``path`` is a regular file that may be read, a symlink only if it stays inside ``root``.

    A missing path, a folder or a special file (FIFO, socket, device) is
    simply not input: False.  A symlink that loops, dangles or leads out of
    ``root`` (the watched folder) is a ``ParseError``: following it could read
    anything on the machine, and skipping it silently would hide the problem.
    """
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ParseError(path, f"cannot read: {exc.strerror or exc}") from exc
    if stat.S_ISLNK(st.st_mode):
        target = resolve_link(path, root)
        try:
            st = target.stat()
        except OSError as exc:
            raise ParseError(path, f"cannot read: {exc.strerror or exc}") from exc
    return stat.S_ISREG(st.st_mode)


def is_file_or_link(path: Path) -> bool:
    """A regular file or a symlink (to be judged by ``readable_file``), without following anything."""
    try:
        mode = path.lstat().st_mode
    except OSError:  # absent, or removed while listing
        return False
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


def resolve_link(path: Path, root: Path) -> Path:
    """The real path of a symlink, refused if it loops, dangles or leaves ``root``."""
    try:
        target = Path(os.path.realpath(path, strict=True))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ParseError(path, "symlink loop: not followed") from exc
        if exc.errno == errno.ENOENT:
            raise ParseError(path, "broken symlink: its target does not exist") from exc
        raise ParseError(path, f"cannot follow symlink: {exc.strerror or exc}") from exc
    try:
        base = Path(os.path.realpath(root, strict=True))
    except OSError as exc:
        raise ParseError(root, f"cannot resolve the watched folder: {exc.strerror or exc}") from exc
    if not target.is_relative_to(base):
        raise ParseError(path, f"symlink to {target}, outside the watched folder {base}: not followed")
    return target


def read_bytes(path: Path, *, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file no larger than ``limit``.

    Opened non-blocking and checked after opening, so a FIFO that replaced the
    file meanwhile is refused instead of blocking the daemon forever.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ParseError(path, f"cannot read: {exc.strerror or exc}") from exc
    try:
        with open(fd, "rb", closefd=False) as file:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ParseError(path, "not a regular file")
            if st.st_size > limit:
                raise ParseError(path, f"too large: {st.st_size} bytes (the limit is {limit})")
            data = file.read(limit + 1)
    except OSError as exc:
        raise ParseError(path, f"cannot read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ParseError(path, f"too large: over {limit} bytes")
    return data


def read_text(path: Path, *, allow_empty: bool = False) -> tuple[bytes, str]:
    """Read a file as bytes and decode it strictly as UTF-8, a leading BOM dropped.

    Bytes are returned too because hashes must describe what is on disk, not
    the decoded text; a single read keeps both consistent if the file changes
    meanwhile.  An empty file (or a lone BOM) is an error unless the format
    gives emptiness a meaning, as JSONL does ("nothing").  Transcripts use the
    lenient ``decode_text`` instead.
    """
    data = read_bytes(path)
    offset = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    try:
        text = data[offset:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = offset + exc.start
        line = data[:at].count(b"\n") + 1
        raise ParseError(path, f"not valid UTF-8 at byte {at}", line=line) from exc
    if not text and not allow_empty:
        raise ParseError(path, "empty file")
    return data, text


def decode_text(path: Path, data: bytes) -> tuple[str, str | None]:
    """Bytes → text without failing on the encoding; the warning says what was repaired.

    UTF-8 is expected (a BOM is dropped); a UTF-16 byte order mark is
    honoured; other bytes that are not UTF-8 become U+FFFD.  Data that is
    mostly not text (an image, an archive, text in an 8-bit encoding that
    would come out as mostly U+FFFD) is refused: stored, it would only
    replace a good conversation with noise.
    """
    warning = None
    if data.startswith(_UTF16_BOMS):
        text = data.decode("utf-16", "replace")
        warning = f"{path.name}: decoded as UTF-16 (byte order mark)"
    else:
        offset = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
        try:
            text = data[offset:].decode("utf-8")
        except UnicodeDecodeError as exc:
            text = data[offset:].decode("utf-8", "replace")
            at = offset + exc.start
            line = data[:at].count(b"\n") + 1
            warning = (
                f"{path.name}: not valid UTF-8 (first bad byte at offset {at}, line {line}),"
                " undecodable bytes replaced by U+FFFD"
            )
    sample = text[:_BINARY_SAMPLE]
    if sample:
        bad = sum(1 for _ in _NOT_TEXT.finditer(sample))
        if bad / len(sample) > _BINARY_RATIO:
            raise ParseError(
                path,
                f"not text (binary data, or an encoding other than UTF-8): {bad} of the first {len(sample)}"
                " characters are control characters or undecodable bytes",
            )
    return text, warning


def short_repr(value: object, limit: int = 60) -> str:
    """``repr`` cut short: an error message must stay one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_json(text: str, fail: Fail) -> object:
    """``json.loads`` whose every failure becomes the caller's ``ParseError``.

    A caller that has no line of its own (a whole-file document) gets the
    decoder's.  Deep nesting (RecursionError) and over-long integers
    (ValueError) are failures of the input too, not bugs of the daemon.
    """
    try:
        value: object = json.loads(text)
    except json.JSONDecodeError as exc:
        error = fail(f"invalid JSON: {exc.msg} (column {exc.colno})")
        if error.line is None:
            error = ParseError(error.path, error.reason, line=exc.lineno)
        raise error from exc
    except (ValueError, RecursionError) as exc:
        raise fail(f"invalid JSON: {type(exc).__name__}") from exc
    return value


def parse_iso_date(value: str) -> date | None:
    """The calendar date an ISO date or datetime string names, as written.

    The date is taken before any time-zone conversion: "2025-06-25T23:30-05:00"
    is the 25th for whoever wrote it.
    """
    text = value.strip()
    match = _ISO_DATE_PREFIX.match(text)
    if match is None:
        return None
    try:
        if len(text) > 10:
            datetime.fromisoformat(text)  # validates the rest; Python 3.11 accepts "Z"
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def epoch_datetime(value: object) -> datetime | None:
    """A Unix timestamp (seconds, as the ChatGPT export writes them) as an aware UTC datetime."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, tz=UTC) if math.isfinite(value) else None
    except (OverflowError, OSError, ValueError):
        return None


# --- choosing the transcript


def find_transcript(folder: Path, *, root: Path | None = None) -> Path:
    """The transcript of a conversation folder, by the precedence of DESIGN.md."""
    chosen, _shadowed = _select_transcript(folder, folder.parent if root is None else root)
    return chosen


def _select_transcript(folder: Path, root: Path) -> tuple[Path, tuple[Path, ...]]:
    """The chosen transcript and the named transcripts it hides (worth a warning)."""
    try:
        return _select_transcript_unguarded(folder, root)
    except OSError as exc:  # a folder we may not look into is bad input, like any other
        raise ParseError(folder, f"cannot list: {exc.strerror or exc}") from exc


def _select_transcript_unguarded(folder: Path, root: Path) -> tuple[Path, tuple[Path, ...]]:
    _check_folder(folder, root)
    present: list[Path] = []
    for name in TRANSCRIPT_NAMES:
        path = folder / name
        # Only the transcript that wins is followed (and judged, if a symlink);
        # those it shadows are merely mentioned.
        if is_file_or_link(path) and (present or readable_file(path, root)):
            present.append(path)
    if present:
        return present[0], tuple(present[1:])
    candidates = _fallback_candidates(folder, root)
    if not candidates:
        raise ParseError(folder, _NO_TRANSCRIPT)
    if len(candidates) > 1:
        names = ", ".join(path.name for path in candidates)
        raise ParseError(
            folder,
            f"several possible transcripts ({names}): rename the right one conversation.md",
        )
    return candidates[0], ()


def _check_folder(folder: Path, root: Path) -> None:
    """A slug folder that is a symlink must stay inside the watched folder, like any file."""
    try:
        st = folder.lstat()
    except FileNotFoundError as exc:
        raise ParseError(folder, "not a folder") from exc
    if stat.S_ISLNK(st.st_mode):
        resolve_link(folder, root)
    if not folder.is_dir():
        raise ParseError(folder, "not a folder")


def _fallback_candidates(folder: Path, root: Path) -> list[Path]:
    return [
        path
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in FALLBACK_SUFFIXES and not is_ignored_name(path.name) and readable_file(path, root)
    ]


# --- the conversation


@dataclass(frozen=True, slots=True)
class Transcript:
    """What a transcript says, before folder-level rules (meta.json, slug) apply.

    ``source_format`` names a dialect more precise than the file's kind
    (``chatgpt`` for a ``conversation.json`` taken from a ChatGPT export).
    """

    messages: tuple[Message, ...]
    title: str | None = None
    created_date: date | None = None
    tags: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    source_format: str | None = None
    in_progress: bool = False


@dataclass(frozen=True, slots=True)
class _Meta:
    title: str | None = None
    created_date: date | None = None
    tags: tuple[str, ...] = ()


def parse_conversation(folder: Path, *, root: Path | None = None) -> Conversation:
    """Read one conversation folder.

    ``root`` is the watched folder (default: the folder's parent); no symlink
    is followed out of it.  Raises ``ParseError`` naming the file (and line)
    at fault; nothing partial is ever returned, so a bad edit cannot shrink
    what is stored.  Repairs (undecodable bytes, a transcript without role
    markers) are accepted and listed in ``Conversation.warnings``.
    """
    slug = folder.name
    root = folder.parent if root is None else root
    _require_utf8_name(folder)
    transcript_path, shadowed = _select_transcript(folder, root)
    _require_utf8_name(transcript_path)
    source_format = TRANSCRIPT_NAMES.get(transcript_path.name, "markdown")
    data = read_bytes(transcript_path)
    text, decode_warning = decode_text(transcript_path, data)
    if not text:
        raise ParseError(transcript_path, "empty file")
    transcript = _READERS[source_format](transcript_path, text)
    if not transcript.messages:
        if transcript.in_progress:
            raise ParseError(transcript_path, "no complete line yet", in_progress=True)
        raise ParseError(transcript_path, "no messages")

    meta_path = folder / META_NAME
    meta_bytes: bytes | None = None
    meta = _Meta()
    meta_warning = None
    if readable_file(meta_path, root):
        meta_bytes = read_bytes(meta_path)
        meta_text, meta_warning = decode_text(meta_path, meta_bytes)
        if not meta_text:
            raise ParseError(meta_path, "empty file")
        meta = _parse_meta(meta_path, meta_text)

    warnings = [f"ignored {path.name}, {transcript_path.name} takes precedence" for path in shadowed]
    warnings += [w for w in (decode_warning, meta_warning) if w is not None]
    return Conversation(
        slug=slug,
        title=meta.title or transcript.title or title_from_slug(slug),
        created_date=meta.created_date or transcript.created_date or date_from_slug(slug),
        messages=transcript.messages,
        source_path=transcript_path,
        source_format=transcript.source_format or source_format,
        source_hash=_source_hash(transcript_path.name, data, meta_bytes),
        total_chars=len(text),
        total_lines=_count_lines(text),
        tags=meta.tags or transcript.tags,
        warnings=(*warnings, *transcript.warnings),
        in_progress=transcript.in_progress,
    )


def _require_utf8_name(path: Path) -> None:
    """Names become database text; an undecodable file name would fail there, later."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ParseError(path, "file name is not valid UTF-8") from exc


def date_from_slug(slug: str) -> date | None:
    """A leading YYYY-MM-DD; an impossible date is no date rather than an error."""
    match = _SLUG_DATE.match(slug)
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def title_from_slug(slug: str) -> str:
    """``2025-06-25__orage_codé_textuel`` → ``orage codé textuel``; the slug if nothing is left."""
    rest = _SLUG_DATE.sub("", slug).strip("_- ")
    title = " ".join(rest.replace("_", " ").split())
    return title or slug


def _source_hash(name: str, transcript: bytes, meta: bytes | None) -> str:
    """Length-prefixed parts, so no two different folders can feed the same byte stream."""
    digest = hashlib.sha256()
    parts = [name.encode("utf-8"), transcript]
    if meta is not None:
        parts.append(meta)
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _count_lines(text: str) -> int:
    """Lines as an editor shows them: a last line without a newline still counts."""
    if not text:
        return 0
    return text.count("\n") + (0 if text.endswith("\n") else 1)


def _parse_meta(path: Path, text: str) -> _Meta:
    def fail(reason: str) -> ParseError:
        return ParseError(path, reason)

    value = load_json(text, fail)
    if not isinstance(value, dict):
        raise fail("expected a JSON object")
    title = _optional_str(value, "title", fail)
    created = _optional_str(value, "created_date", fail)
    created_date = None
    if created is not None and created.strip():
        created_date = parse_iso_date(created)
        if created_date is None:
            raise fail(f"created_date: not a YYYY-MM-DD date: {short_repr(created)}")
    return _Meta(
        title=_clean_title(title),
        created_date=created_date,
        tags=_tags(value.get("tags"), fail),
    )


def _tags(value: object, fail: Fail) -> tuple[str, ...]:
    """Stripped, blank ones dropped, first occurrence kept: tags are a set written as a list."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise fail("tags: expected a list of strings")
    return _unique_clean(value)


def _unique_clean(values: Sequence[str]) -> tuple[str, ...]:
    cleaned = (clean_text(value.strip()) for value in values)
    return tuple(dict.fromkeys(value for value in cleaned if value))


def _optional_str(obj: dict[str, object], key: str, fail: Fail) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise fail(f"{key}: expected a string, got {_json_type(value)}")


def _lenient_str(obj: Mapping[str, object], key: str) -> str | None:
    """A string field of an export, None when absent or of another type (exports drift)."""
    value = obj.get(key)
    return value if isinstance(value, str) else None


def _clean_title(title: str | None) -> str | None:
    if title is None:
        return None
    return clean_text(" ".join(title.split())) or None


def _json_type(value: object) -> str:
    names: dict[type, str] = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)


# --- JSON messages


def _message(value: object, seq: int, fail: Fail) -> Message:
    """One ``{"role", "content", "ts"}`` object, shared by the JSONL and JSON formats."""
    if not isinstance(value, dict):
        raise fail(f"expected a JSON object, got {_json_type(value)}")
    role_value = value.get("role")
    if not isinstance(role_value, str):
        raise fail(f"role: expected a string, got {_json_type(role_value)}")
    role = normalize_role(role_value)
    if role is None:
        raise fail(f"role: unknown role {short_repr(role_value)} (expected one of {', '.join(ROLES)})")
    content = value.get("content")
    if not isinstance(content, str):
        raise fail(f"content: expected a string, got {_json_type(content)}")
    return Message(seq=seq, role=role, content=clean_text(content), ts=_ts(value.get("ts")))


def _ts(value: object) -> str | None:
    """Timestamps are kept as text: whatever the writer meant, nothing is lost.

    A non-string (epoch number…) is kept as its JSON spelling.
    """
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return clean_text(text.strip()) or None


def _read_jsonl(path: Path, text: str) -> Transcript:
    """One message per line.

    A last line without its newline that does not read as a message, but
    starts like one (``{``, no NUL), is not written yet (a writer is in the
    middle of it), not corrupt: the complete lines are the transcript, marked
    ``in_progress``.  The same text anywhere else is an error naming its line.
    """
    messages: list[Message] = []
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue

        def fail(reason: str, number: int = number) -> ParseError:
            return ParseError(path, reason, line=number)

        try:
            messages.append(_message(load_json(line, fail), len(messages), fail))
        except ParseError:
            if number < len(lines) or not line.lstrip().startswith("{") or "\x00" in line:
                raise  # a terminated line, or one no JSONL writer would start: really broken
            return Transcript(messages=tuple(messages), in_progress=True)
    return Transcript(messages=tuple(messages))


def _read_json(path: Path, text: str) -> Transcript:
    def fail(reason: str) -> ParseError:
        return ParseError(path, reason)

    return read_json_document(path, load_json(text, fail))


def read_json_document(path: Path, value: object) -> Transcript:
    """A decoded ``conversation.json``: native, one ChatGPT export conversation or one Claude one.

    The dialect is told by its keys: ``messages`` (native), ``mapping``
    (ChatGPT), ``chat_messages`` (Claude).  ``path`` only names the source in
    errors; ``imports.py`` calls this on the conversations of an export.
    """

    def fail(reason: str) -> ParseError:
        return ParseError(path, reason)

    if not isinstance(value, dict):
        if isinstance(value, list) and value and isinstance(value[0], dict) and _export_kind(value[0]):
            raise fail(
                f"a whole {_export_kind(value[0])} data export (an array of conversations), not one conversation:"
                " split it with `memoryd import`"
            )
        raise fail(f"expected a JSON object, got {_json_type(value)}")
    if "messages" in value:
        return _read_native_json(path, value)
    if "mapping" in value:
        return _read_chatgpt(path, value)
    if "chat_messages" in value:
        return _read_claude(path, value)
    raise fail('no "messages" list')


def _export_kind(obj: Mapping[str, object]) -> str | None:
    if "mapping" in obj:
        return "ChatGPT"
    if "chat_messages" in obj:
        return "Claude"
    return None


def _read_native_json(path: Path, obj: dict[str, object]) -> Transcript:
    def fail(reason: str) -> ParseError:
        return ParseError(path, reason)

    items = obj.get("messages")
    if not isinstance(items, list):
        raise fail(f"messages: expected an array, got {_json_type(items)}")
    messages = []
    for index, item in enumerate(items):

        def fail_at(reason: str, index: int = index) -> ParseError:
            return ParseError(path, f"messages[{index}]: {reason}")

        messages.append(_message(item, index, fail_at))
    created = _optional_str(obj, "created", fail)
    created_date = None
    if created is not None and created.strip():
        created_date = parse_iso_date(created)
        if created_date is None:
            raise fail(f"created: not an ISO date or datetime: {short_repr(created)}")
    return Transcript(
        messages=tuple(messages),
        title=_clean_title(_optional_str(obj, "title", fail)),
        created_date=created_date,
    )


# --- ChatGPT export: one element of its conversations.json

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


def _read_chatgpt(path: Path, obj: dict[str, object]) -> Transcript:
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
        raise fail(f"mapping: expected an object, got {_json_type(mapping)}")
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
    title = _lenient_str(obj, "title")
    return Transcript(
        messages=tuple(messages),
        title=_clean_title(title),
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
            raise fail(f"mapping[{short_repr(node_id)}]: expected an object, got {_json_type(node)}")
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
    metadata = message.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    content = message.get("content")
    content = content if isinstance(content, dict) else {}
    content_type = content.get("content_type")
    if metadata.get("is_visually_hidden_from_conversation") or content_type in _CHATGPT_HIDDEN_CONTENT:
        return None
    text = _chatgpt_text(content, skipped)
    notes = [f"[file: {name}]" for name in _names(metadata.get("attachments"), "name")]
    if notes and text.strip():
        text = text + "\n\n" + "\n".join(notes)
    elif notes:
        text = "\n".join(notes)
    if not text.strip():
        return None
    ts_value = epoch_datetime(message.get("create_time"))
    ts = ts_value.isoformat(timespec="seconds") if ts_value is not None else _ts(message.get("create_time"))
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


def _names(value: object, key: str) -> list[str]:
    """The ``key`` strings of a list of objects (attachments), whatever else the list holds."""
    if not isinstance(value, list):
        return []
    names = (item.get(key) for item in value if isinstance(item, dict))
    return [clean_text(" ".join(name.split())) for name in names if isinstance(name, str) and name.strip()]


# --- Claude export: one element of its conversations.json


def _read_claude(path: Path, obj: dict[str, object]) -> Transcript:
    """``chat_messages`` in order: ``sender`` is the role, the text blocks of ``content`` (or ``text``) the content.

    Blocks other than text (tool use, thinking) are not conversation text;
    attachments and files are noted by name.
    """

    def fail(reason: str) -> ParseError:
        return ParseError(path, reason)

    items = obj.get("chat_messages")
    if not isinstance(items, list):
        raise fail(f"chat_messages: expected an array, got {_json_type(items)}")
    skipped: Counter[str] = Counter()
    messages: list[Message] = []
    for item in items:
        if not isinstance(item, dict):
            skipped[f"expected an object, got {_json_type(item)}"] += 1
            continue
        sender = item.get("sender")
        role = normalize_role(sender) if isinstance(sender, str) else None
        if role is None:
            skipped[f"unknown sender {short_repr(sender)}"] += 1
            continue
        text = _claude_text(item)
        notes = [f"[attachment: {name}]" for name in _names(item.get("attachments"), "file_name")]
        notes += [f"[file: {name}]" for name in _names(item.get("files"), "file_name")]
        text = "\n\n".join(piece for piece in (text, "\n".join(notes)) if piece.strip())
        if not text:
            continue
        messages.append(Message(seq=len(messages), role=role, content=clean_text(text), ts=_ts(item.get("created_at"))))
    created = _lenient_str(obj, "created_at")
    return Transcript(
        messages=tuple(messages),
        title=_clean_title(_lenient_str(obj, "name")),
        created_date=parse_iso_date(created) if created else None,
        warnings=tuple(f"skipped {count} message(s): {reason}" for reason, count in sorted(skipped.items())),
        source_format="claude",
    )


def _claude_text(item: Mapping[str, object]) -> str:
    """The text blocks of ``content``, or the older ``text`` field when there are none."""
    blocks = item.get("content")
    if isinstance(blocks, list):
        texts = [
            block["text"]
            for block in blocks
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)
        ]
        joined = "\n\n".join(text for text in texts if text.strip())
        if joined:
            return joined
    text = item.get("text")
    return text if isinstance(text, str) and text.strip() else ""


# --- Markdown


@dataclass(frozen=True, slots=True)
class LineStart:
    """A pattern for the start of a line, searched after newlines so the scan runs at C speed."""

    first: re.Pattern[str]  # matched at the start of the text
    after_newline: re.Pattern[str]

    @classmethod
    def compile(cls, pattern: str) -> LineStart:
        return cls(re.compile(pattern), re.compile("\n" + pattern))


def line_starts(text: str, start: LineStart) -> list[int]:
    """Indexes of the lines of ``text`` (split on ``\\n``) that begin with ``start``.

    One regex scan over the whole text, so per-line Python work is spent only
    on the few lines that can matter (fences, headings, speakers).
    """
    indexes = [0] if start.first.match(text) else []
    newlines, counted = 0, 0  # newlines in text[:counted]
    for match in start.after_newline.finditer(text):
        newlines += text.count("\n", counted, match.start() + 1)
        counted = match.start() + 1
        indexes.append(newlines)
    return indexes


# Only lines shorter than this can be role markers or the title: it bounds the
# work per line whatever the input (a 10 MB line is content, read once).
_MAX_MARKER_LINE = 200
_HEADING = re.compile(r" {0,3}(#{1,6})[ \t]+(.*)")
_BOLD_SPEAKER = re.compile(r" {0,3}\*\*([^*\r\n]{1,80})\*\*(.*)")
_PLAIN_SPEAKER = re.compile(r"([^\W\d_]{2,20})[ \t]*:(.*)")
_LEADING_SYMBOLS = re.compile(r"^[^\w]+")  # emoji or punctuation before the role word ("👤 User")
_ROLE_WORD = re.compile(r"(?P<word>[^\W\d_]+)(?P<rest>.*)$", re.DOTALL)
_FENCE_START = LineStart.compile(r" {0,3}(?:`{3}|~{3})")
_MARKER_START = LineStart.compile(r" {0,3}(?:#|\*\*)")
_PLAIN_START = LineStart.compile(r"[^\W\d_]{2,20}[ \t]*:")
_FENCE_OPEN = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})(?P<info>.*)$", re.DOTALL)
_FENCE_CLOSE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})[ \t]*\r?$")
_FRONT_MATTER_KEY = re.compile(r"(?P<key>[A-Za-z_][\w-]*)[ \t]*:(?:[ \t]+(?P<value>.*))?")
_FRONT_MATTER_ITEM = re.compile(r"[ \t]*-[ \t]+(?P<value>.*)")
_FRONT_MATTER_MAX_LINES = 200
_FRONT_MATTER_DATE_KEYS = ("date", "created", "created_at", "created_date")
_TS_SEPARATORS = ":([-|\u2014\u2013"  # em and en dashes too
_NO_MARKER_WARNING = "no role marker (## User, **User:**, Human: …) found: stored as one user message"


@dataclass(frozen=True, slots=True)
class Speaker:
    """A line that opens a message.

    ``style`` is ``h2`` … ``h6`` (a heading), ``bold`` (``**User:** …``) or
    ``plain`` (``User: …``); ``text`` is what follows the marker on the same
    line, the message's first line.
    """

    style: str
    role: str
    ts: str | None = None
    text: str = ""


@dataclass(slots=True)
class _OpenMessage:
    role: str
    ts: str | None
    lines: list[str]


def speaker_line(line: str) -> Speaker | None:
    """The ``Speaker`` a heading or bold line opens, else None.

    ``## User stories`` is content, not a message: after the role word there
    must be nothing, a separator or bracket (``: — - (``), or something that
    holds a digit (a timestamp).  A bold label needs a colon unless it stands
    alone on its line (``**User** experience`` is content).
    """
    heading = _HEADING.match(line)
    if heading is not None:
        level = len(heading[1])
        label = heading[2]
        if level < 2 or len(label) > _MAX_MARKER_LINE:
            return None
        found = _label_role(_heading_label(label))
        return None if found is None else Speaker(f"h{level}", *found)
    bold = _BOLD_SPEAKER.match(line)
    if bold is None:
        return None
    label, after = bold[1].strip(), bold[2]
    if label.endswith(":"):
        label = label[:-1]
    elif after.lstrip(" \t").startswith(":"):
        after = after.lstrip(" \t")[1:]
    elif after.strip(" \t\r"):
        return None
    found = _label_role(label)
    if found is None:
        return None
    return Speaker("bold", *found, text=after.lstrip(" \t").removesuffix("\r"))


def plain_speaker_line(line: str) -> Speaker | None:
    """``Human: text`` at the very start of a line: the ``plain`` style, the last resort."""
    match = _PLAIN_SPEAKER.match(line)
    if match is None:
        return None
    role = normalize_role(match[1])
    if role is None:
        return None
    return Speaker("plain", role, None, match[2].lstrip(" \t").removesuffix("\r"))


def _heading_label(text: str) -> str:
    """The text of a heading without its optional closing ``#`` sequence (linear, no backtracking)."""
    text = text.rstrip(" \t\r")
    unclosed = text.rstrip("#")
    if unclosed != text and (not unclosed or unclosed[-1] in " \t"):
        text = unclosed.rstrip(" \t")
    return text


def _label_role(label: str) -> tuple[str, str | None] | None:
    """``(role, ts)`` from a marker's label (``User``, ``👤 Assistant (14:03)``), else None."""
    label = _LEADING_SYMBOLS.sub("", label.strip().strip("*_").strip(), count=1)
    word_match = _ROLE_WORD.match(label)
    if word_match is None:
        return None
    role = normalize_role(word_match["word"])
    if role is None:
        return None
    rest = word_match["rest"].rstrip("*_ \t\r")
    stripped = rest.strip()
    if not stripped:
        return role, None
    if stripped[0] in _TS_SEPARATORS or (rest[0].isspace() and any(c.isdigit() for c in rest)):
        ts = stripped.lstrip(_TS_SEPARATORS + " \t").rstrip(")]: \t").strip()
        return role, clean_text(ts) or None
    return None


def fenced_ranges(lines: Sequence[str], candidates: Sequence[int]) -> list[tuple[int, int]]:
    """``(first, last)`` line indexes of fenced code blocks, fences included, in order.

    ``candidates`` are the lines that may be fences (those starting with
    three backticks or tildes).  A fence that is never closed is not a fence: a
    truncated code block in one message must not swallow every message after it.
    """
    closers: dict[str, list[tuple[int, int]]] = {"`": [], "~": []}
    for index in candidates:
        close = _FENCE_CLOSE.match(lines[index])
        if close is not None:
            closers[close["fence"][0]].append((index, len(close["fence"])))
    ranges: list[tuple[int, int]] = []
    for index in candidates:
        if ranges and index <= ranges[-1][1]:
            continue
        end = _fence_end(lines, index, closers)
        if end is not None:
            ranges.append((index, end))
    return ranges


def _inside(index: int, ranges: Sequence[tuple[int, int]]) -> bool:
    """Whether line ``index`` is in one of the sorted, disjoint ``ranges``."""
    position = bisect.bisect_right(ranges, index, key=lambda item: item[0]) - 1
    return position >= 0 and index <= ranges[position][1]


def _fence_end(lines: Sequence[str], index: int, closers: dict[str, list[tuple[int, int]]]) -> int | None:
    """Line index that closes a fence opened at ``index``, if one opens and closes."""
    match = _FENCE_OPEN.match(lines[index])
    if match is None:
        return None
    fence = match["fence"]
    if fence[0] == "`" and "`" in match["info"]:
        return None
    candidates = closers[fence[0]]
    for position in range(bisect.bisect_right(candidates, (index, len(lines) + 1)), len(candidates)):
        close_index, length = candidates[position]  # indexed, not sliced: a copy per fence would be quadratic
        if length >= len(fence):
            return close_index
    return None


@dataclass(frozen=True, slots=True)
class _FrontMatter:
    title: str | None = None
    created_date: date | None = None
    tags: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def _front_matter(lines: Sequence[str]) -> tuple[_FrontMatter, int]:
    """YAML-style front matter (``---`` … ``---``) and the index of the first line after it.

    Only simple ``key: value`` lines and ``- item`` lists are read; a block
    holding anything else (or never closed) is not front matter but a
    thematic break, and stays part of the transcript.
    """
    if not lines or lines[0].rstrip(" \t\r") != "---":
        return _FrontMatter(), 0
    for end in range(1, min(len(lines), _FRONT_MATTER_MAX_LINES)):
        if lines[end].rstrip(" \t\r") in ("---", "..."):
            fields = _front_matter_fields(lines[1:end])
            return (_FrontMatter(), 0) if fields is None else (_front_matter_values(fields), end + 1)
    return _FrontMatter(), 0


def _front_matter_fields(lines: Sequence[str]) -> dict[str, str | list[str]] | None:
    fields: dict[str, str | list[str]] = {}
    key: str | None = None
    for line in lines:
        line = line.rstrip("\r")
        if not line.strip():
            continue
        item = _FRONT_MATTER_ITEM.fullmatch(line)
        current = fields.get(key) if key is not None else None
        if item is not None and isinstance(current, list):
            current.append(_unquote(item["value"]))
            continue
        if line[0] in " \t" and key is not None:  # a continued value: kept as it is only for lists
            continue
        match = _FRONT_MATTER_KEY.fullmatch(line)
        if match is None:
            return None
        key = match["key"].casefold()
        value = (match["value"] or "").strip()
        if value.startswith("[") and value.endswith("]"):
            fields[key] = [_unquote(part) for part in value[1:-1].split(",") if part.strip()]
        elif value:
            fields[key] = _unquote(value)
        else:
            fields[key] = []
    return fields


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _front_matter_values(fields: dict[str, str | list[str]]) -> _FrontMatter:
    title = fields.get("title")
    warnings: list[str] = []
    created_date = None
    for key in _FRONT_MATTER_DATE_KEYS:
        value = fields.get(key)
        if isinstance(value, str) and value:
            created_date = date_from_slug(value.strip())
            if created_date is None:
                warnings.append(f"front matter {key}: not a YYYY-MM-DD date: {short_repr(value)}")
            break
    tags = fields.get("tags")
    if isinstance(tags, str):
        tags = tags.split(",")
    return _FrontMatter(
        title=_clean_title(title) if isinstance(title, str) else None,
        created_date=created_date,
        tags=_unique_clean(tags or []),
        warnings=tuple(warnings),
    )


def _markers(text: str, lines: Sequence[str], start: int, fenced: Sequence[tuple[int, int]]) -> dict[int, Speaker]:
    """The lines that open messages: those of the style of the first marker found.

    One transcript uses one style, so a ``### System`` sub-heading inside an
    answer of a ``## User`` transcript stays content.  ``Human:`` lines are
    the last resort, and only when they look like a dialogue (two roles at least).
    """
    found: dict[int, Speaker] = {}
    style: str | None = None
    for index in line_starts(text, _MARKER_START):
        if index < start or _inside(index, fenced) or (speaker := speaker_line(lines[index])) is None:
            continue
        style = style or speaker.style
        if speaker.style == style:
            found[index] = speaker
    if found:
        return found
    for index in line_starts(text, _PLAIN_START):
        if index >= start and not _inside(index, fenced) and (speaker := plain_speaker_line(lines[index])) is not None:
            found[index] = speaker
    return found if len({speaker.role for speaker in found.values()}) >= 2 else {}


def _title_line(line: str) -> str | None:
    heading = _HEADING.match(line)
    if heading is None or len(heading[1]) != 1 or len(heading[2]) > _MAX_MARKER_LINE:
        return None
    return _clean_title(_heading_label(heading[2]))


def _read_markdown(path: Path, text: str) -> Transcript:
    lines = text.split("\n")
    front, start = _front_matter(lines)
    fenced = fenced_ranges(lines, line_starts(text, _FENCE_START))
    markers = _markers(text, lines, start, fenced)
    if not markers:
        return _one_message(lines, start, fenced, front)
    positions = sorted(markers)
    title: str | None = None
    preamble = 0
    for index in range(start, positions[0]):
        line = lines[index]
        if title is None and not _inside(index, fenced) and (title := _title_line(line)) is not None:
            continue
        if line.strip():
            preamble += 1
    warnings = list(front.warnings)
    if preamble:
        warnings.append(f"ignored {preamble} line(s) before the first role heading")
    bodies = []
    for position, following in zip(positions, [*positions[1:], len(lines)], strict=True):
        speaker = markers[position]
        first_line = [speaker.text] if speaker.text else []
        body = first_line + lines[position + 1 : following]
        bodies.append(_OpenMessage(role=speaker.role, ts=speaker.ts, lines=body))
    return Transcript(
        messages=_markdown_messages(bodies),
        title=front.title or title,
        created_date=front.created_date,
        tags=front.tags,
        warnings=tuple(warnings),
    )


def _one_message(
    lines: Sequence[str], start: int, fenced: Sequence[tuple[int, int]], front: _FrontMatter
) -> Transcript:
    """A transcript without role markers: kept whole as one user message, never dropped."""
    body = lines[start:]
    content = _body_text(body)
    if not content.strip():
        return Transcript(messages=())
    first = next(index for index, line in enumerate(body, start) if line.strip())
    title = front.title
    if title is None and not _inside(first, fenced):
        title = _title_line(lines[first])
    return Transcript(
        messages=(Message(seq=0, role="user", content=clean_text(content)),),
        title=title,
        created_date=front.created_date,
        tags=front.tags,
        warnings=(*front.warnings, _NO_MARKER_WARNING),
    )


def _markdown_messages(bodies: Sequence[_OpenMessage]) -> tuple[Message, ...]:
    """Keep non-empty bodies, numbered contiguously."""
    messages: list[Message] = []
    for body in bodies:
        content = _body_text(body.lines)
        if content.strip():
            messages.append(
                Message(
                    seq=len(messages),
                    role=body.role,
                    content=clean_text(content),
                    ts=body.ts,
                )
            )
    return tuple(messages)


def _body_text(lines: Sequence[str]) -> str:
    """Verbatim, minus blank lines around it and the newline before the next heading."""
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    text = "\n".join(lines[start:end])
    return text.removesuffix("\r")


_READERS: Mapping[str, Callable[[Path, str], Transcript]] = MappingProxyType(
    {"jsonl": _read_jsonl, "json": _read_json, "markdown": _read_markdown}
)
