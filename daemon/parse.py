"""Conversation folders → ``Conversation`` values.

Pure: this module reads files and returns values or raises ``ParseError``; it
never touches the database, the model or the logger, so ``sync.py`` decides
what a bad folder means (record the error, keep what was stored before).

Every format ends in the same ``_Transcript`` so that title, date and hashing
rules live in one place whatever the transcript looked like.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType

from daemon.errors import ParseError
from daemon.models import ROLES, Conversation, Message, clean_text

# Named transcripts in order of precedence, with the format each one is read as.
TRANSCRIPT_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "messages.jsonl": "jsonl",
        "conversation.json": "json",
        "conversation.md": "markdown",
    }
)
# Suffixes of the fallback transcript: a folder's single file of one of these kinds.
FALLBACK_SUFFIXES = (".md", ".txt")
META_NAME = "meta.json"

# One alias table for every format, so "Human" means the same in JSONL and Markdown.
ROLE_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        **{role: role for role in ROLES},
        "human": "user",
        "utilisateur": "user",
        "ai": "assistant",
        "chatgpt": "assistant",
        "claude": "assistant",
    }
)

_NO_TRANSCRIPT = "no transcript (expected messages.jsonl, conversation.json or conversation.md)"
_UTF8_BOM = b"\xef\xbb\xbf"
_SLUG_DATE = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})(?![0-9])")
_ISO_DATE_PREFIX = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})")

Fail = Callable[[str], ParseError]


# --- shared helpers


def normalize_role(name: str) -> str | None:
    """Map a role as written (any case, any alias) to one of ``ROLES``, or None."""
    return ROLE_ALIASES.get(name.strip().casefold())


def is_ignored_name(name: str) -> bool:
    """Hidden files and editor leftovers are never input, whatever their suffix."""
    return name.startswith(".") or name.endswith(("~", "#")) or name.lower().endswith((".tmp", ".swp", ".swx", ".part"))


def read_text(path: Path, *, allow_empty: bool = False) -> tuple[bytes, str]:
    """Read a file as bytes and decode it strictly as UTF-8, a leading BOM dropped.

    Bytes are returned too because hashes must describe what is on disk, not
    the decoded text; a single read keeps both consistent if the file changes
    meanwhile.  An empty file (or a lone BOM) is an error unless the format
    gives emptiness a meaning, as JSONL does ("nothing").
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParseError(path, f"cannot read: {exc.strerror or exc}") from exc
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


# --- choosing the transcript


def find_transcript(folder: Path) -> Path:
    """The transcript of a conversation folder, by the precedence of DESIGN.md."""
    chosen, _shadowed = _select_transcript(folder)
    return chosen


def _select_transcript(folder: Path) -> tuple[Path, tuple[Path, ...]]:
    """The chosen transcript and the named transcripts it hides (worth a warning)."""
    try:
        return _select_transcript_unguarded(folder)
    except OSError as exc:  # a folder we may not look into is bad input, like any other
        raise ParseError(folder, f"cannot list: {exc.strerror or exc}") from exc


def _select_transcript_unguarded(folder: Path) -> tuple[Path, tuple[Path, ...]]:
    if not folder.is_dir():
        raise ParseError(folder, "not a folder")
    present = [folder / name for name in TRANSCRIPT_NAMES if (folder / name).is_file()]
    if present:
        return present[0], tuple(present[1:])
    candidates = _fallback_candidates(folder)
    if not candidates:
        raise ParseError(folder, _NO_TRANSCRIPT)
    if len(candidates) > 1:
        names = ", ".join(path.name for path in candidates)
        raise ParseError(
            folder,
            f"several possible transcripts ({names}): rename the right one conversation.md",
        )
    return candidates[0], ()


def _fallback_candidates(folder: Path) -> list[Path]:
    return [
        path
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in FALLBACK_SUFFIXES and not is_ignored_name(path.name) and path.is_file()
    ]


# --- the conversation


@dataclass(frozen=True, slots=True)
class _Transcript:
    """What a transcript says, before folder-level rules (meta.json, slug) apply."""

    messages: tuple[Message, ...]
    title: str | None = None
    created_date: date | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Meta:
    title: str | None = None
    created_date: date | None = None
    tags: tuple[str, ...] = ()


def parse_conversation(folder: Path) -> Conversation:
    """Read one conversation folder.

    Raises ``ParseError`` naming the file (and line) at fault; nothing partial
    is ever returned, so a bad edit cannot shrink what is stored.
    """
    slug = folder.name
    _require_utf8_name(folder)
    transcript_path, shadowed = _select_transcript(folder)
    _require_utf8_name(transcript_path)
    source_format = TRANSCRIPT_NAMES.get(transcript_path.name, "markdown")
    data, text = read_text(transcript_path)
    transcript = _READERS[source_format](transcript_path, text)
    if not transcript.messages:
        raise ParseError(transcript_path, "no messages")

    meta_path = folder / META_NAME
    meta_bytes: bytes | None = None
    meta = _Meta()
    if _is_file(meta_path):
        meta_bytes, meta_text = read_text(meta_path)
        meta = _parse_meta(meta_path, meta_text)

    warnings = tuple(f"ignored {path.name}, {transcript_path.name} takes precedence" for path in shadowed)
    return Conversation(
        slug=slug,
        title=meta.title or transcript.title or title_from_slug(slug),
        created_date=meta.created_date or transcript.created_date or date_from_slug(slug),
        messages=transcript.messages,
        source_path=transcript_path,
        source_format=source_format,
        source_hash=_source_hash(transcript_path.name, data, meta_bytes),
        total_chars=len(text),
        total_lines=_count_lines(text),
        tags=meta.tags,
        warnings=warnings + transcript.warnings,
    )


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError as exc:
        raise ParseError(path, f"cannot read: {exc.strerror or exc}") from exc


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
    tags = (clean_text(tag.strip()) for tag in value)
    return tuple(dict.fromkeys(tag for tag in tags if tag))


def _optional_str(obj: dict[str, object], key: str, fail: Fail) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise fail(f"{key}: expected a string, got {_json_type(value)}")


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


def _read_jsonl(path: Path, text: str) -> _Transcript:
    messages: list[Message] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue

        def fail(reason: str, number: int = number) -> ParseError:
            return ParseError(path, reason, line=number)

        messages.append(_message(load_json(line, fail), len(messages), fail))
    return _Transcript(messages=tuple(messages))


def _read_json(path: Path, text: str) -> _Transcript:
    def fail(reason: str) -> ParseError:
        return ParseError(path, reason)

    value = load_json(text, fail)
    if not isinstance(value, dict):
        raise fail(f"expected a JSON object, got {_json_type(value)}")
    return _json_dialect(value, fail)(path, value)


def _json_dialect(obj: dict[str, object], fail: Fail) -> Callable[[Path, dict[str, object]], _Transcript]:
    """Which reader understands this ``conversation.json``.

    Exports from ChatGPT (``mapping``) and Claude (``chat_messages``) get their
    own readers here; until then they are refused by name rather than
    misread as an empty conversation.
    """
    if "messages" in obj:
        return _read_native_json
    if "mapping" in obj or "chat_messages" in obj:
        raise fail("ChatGPT/Claude export conversations are not supported yet")
    raise fail('no "messages" list')


def _read_native_json(path: Path, obj: dict[str, object]) -> _Transcript:
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
    return _Transcript(
        messages=tuple(messages),
        title=_clean_title(_optional_str(obj, "title", fail)),
        created_date=created_date,
    )


# --- Markdown

_HEADING2 = re.compile(r"^ {0,3}##[ \t]+(?P<text>.*?)(?:[ \t]+#+)?[ \t]*\r?$")
_HEADING1 = re.compile(r"^ {0,3}#[ \t]+(?P<text>.*?)(?:[ \t]+#+)?[ \t]*\r?$")
_ROLE_WORD = re.compile(r"(?P<word>[^\W\d_]+)(?P<rest>.*)$", re.DOTALL)
_FENCE_OPEN = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})(?P<info>.*)$", re.DOTALL)
_FENCE_CLOSE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})[ \t]*\r?$")
_TS_SEPARATORS = ":([-|\u2014\u2013"  # em and en dashes too


@dataclass(slots=True)
class _OpenMessage:
    role: str
    ts: str | None
    lines: list[str]


def role_heading(line: str) -> tuple[str, str | None] | None:
    """``(role, ts)`` if the line opens a message, else None.

    ``## User stories`` is content, not a message: after the role word there
    must be nothing, a separator or bracket (``: — - (``), or something that
    holds a digit (a timestamp).
    """
    match = _HEADING2.match(line)
    if match is None:
        return None
    word_match = _ROLE_WORD.match(match["text"])
    if word_match is None:
        return None
    role = normalize_role(word_match["word"])
    if role is None:
        return None
    rest = word_match["rest"]
    stripped = rest.strip()
    if not stripped:
        return role, None
    if stripped[0] in _TS_SEPARATORS or (rest[0].isspace() and any(c.isdigit() for c in rest)):
        ts = stripped.lstrip(_TS_SEPARATORS + " \t").rstrip(")] \t").strip()
        return role, clean_text(ts) or None
    return None


def fenced_lines(lines: Sequence[str]) -> set[int]:
    """Indexes of lines inside fenced code blocks, fences included.

    A fence that is never closed is not a fence: a truncated code block in one
    message must not swallow every message after it.
    """
    closers: dict[str, list[tuple[int, int]]] = {"`": [], "~": []}
    for index, line in enumerate(lines):
        close = _FENCE_CLOSE.match(line)
        if close is not None:
            closers[close["fence"][0]].append((index, len(close["fence"])))
    fenced: set[int] = set()
    index = 0
    while index < len(lines):
        end = _fence_end(lines, index, closers)
        if end is None:
            index += 1
            continue
        fenced.update(range(index, end + 1))
        index = end + 1
    return fenced


def _fence_end(lines: Sequence[str], index: int, closers: dict[str, list[tuple[int, int]]]) -> int | None:
    """Line index that closes a fence opened at ``index``, if one opens and closes."""
    match = _FENCE_OPEN.match(lines[index])
    if match is None:
        return None
    fence = match["fence"]
    if fence[0] == "`" and "`" in match["info"]:
        return None
    candidates = closers[fence[0]]
    start = bisect.bisect_right(candidates, (index, len(lines) + 1))
    for close_index, length in candidates[start:]:
        if length >= len(fence):
            return close_index
    return None


def _read_markdown(path: Path, text: str) -> _Transcript:
    lines = text.split("\n")
    fenced = fenced_lines(lines)
    title: str | None = None
    preamble = 0
    bodies: list[_OpenMessage] = []
    for index, line in enumerate(lines):
        if index not in fenced:
            heading = role_heading(line)
            if heading is not None:
                bodies.append(_OpenMessage(role=heading[0], ts=heading[1], lines=[]))
                continue
            if not bodies and title is None and (h1 := _HEADING1.match(line)) is not None:
                title = _clean_title(h1["text"])
                continue
        if bodies:
            bodies[-1].lines.append(line)
        elif line.strip():
            preamble += 1
    if not bodies:
        raise ParseError(path, "no role heading (## User / ## Assistant) found")
    messages = _markdown_messages(bodies)
    warnings = (f"ignored {preamble} line(s) before the first role heading",) if preamble else ()
    return _Transcript(messages=messages, title=title, warnings=warnings)


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


_READERS: Mapping[str, Callable[[Path, str], _Transcript]] = MappingProxyType(
    {"jsonl": _read_jsonl, "json": _read_json, "markdown": _read_markdown}
)
