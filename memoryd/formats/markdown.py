"""Markdown and plain-text transcripts: role headings, bold or plain speakers, front matter."""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from memoryd.formats.common import Transcript, clean_title, normalize_role, short_repr, unique_clean
from memoryd.records import Message, clean_text
from memoryd.slugs import date_from_slug


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
# chatgpt-to-markdown's `# _Question_` / `# _Answer_`: the one heading pair read at level 1 too.
_QA_LABEL = re.compile(r"[*_]+(?P<word>question|answer)[*_]+", re.IGNORECASE)
_QA_ROLES = {"question": "user", "answer": "assistant"}
# A speaker's name in a marker of the transcript's style (`## Sven`): up to three words, starting with a capital.
_NAME = re.compile(r"[^\W\d_][\w.'’-]*(?: [\w.'’-]+){0,2}")
_MAX_NAME = 40
# A thematic break (`---`, `----------`, `***`) that separates messages: not part of them.
_SEPARATOR = re.compile(r" {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*\r?")
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
        if len(label) > _MAX_MARKER_LINE:
            return None
        qa = _QA_LABEL.fullmatch(_heading_label(label))
        if qa is not None:
            return Speaker(f"h{level}", _QA_ROLES[qa["word"].casefold()])
        if level < 2:
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
        title=clean_title(title) if isinstance(title, str) else None,
        created_date=created_date,
        tags=unique_clean(tags or []),
        warnings=tuple(warnings),
    )


def _markers(
    text: str, lines: Sequence[str], start: int, fenced: Sequence[tuple[int, int]]
) -> tuple[dict[int, Speaker], str | None]:
    """The lines that open messages (those of the style of the first marker found), and a warning.

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
    if style is not None:
        return found, _named_speaker(text, lines, start, fenced, style, found)
    for index in line_starts(text, _PLAIN_START):
        if index >= start and not _inside(index, fenced) and (speaker := plain_speaker_line(lines[index])) is not None:
            found[index] = speaker
    return (found if len({speaker.role for speaker in found.values()}) >= 2 else {}), None


def _named_speaker(
    text: str,
    lines: Sequence[str],
    start: int,
    fenced: Sequence[tuple[int, int]],
    style: str,
    found: dict[int, Speaker],
) -> str | None:
    """Map a speaker's name (``## Sven`` beside ``## User``) to the role the transcript lacks; the warning says so.

    Only when the role markers found name a single side of the dialogue and
    exactly one name stands in markers of the same style: ``## Sven``'s text
    is then the assistant's, not part of the user's message.  Updates
    ``found`` in place.
    """
    roles = {speaker.role for speaker in found.values()}
    missing = "assistant" if "assistant" not in roles else "user" if "user" not in roles else None
    if missing is None:
        return None
    named: dict[int, tuple[str, str]] = {}
    for index in line_starts(text, _MARKER_START):
        if index >= start and index not in found and not _inside(index, fenced):
            name = _name_marker(lines[index], style)
            if name is not None:
                named[index] = name
    names = {name for name, _ in named.values()}
    if len(names) != 1:
        return None
    for index, (_, first_line) in named.items():
        found[index] = Speaker(style, missing, None, first_line)
    marker = "**Name:**" if style == "bold" else "#" * int(style[1:]) + " Name"
    return f"speaker {short_repr(names.pop())} ({marker} lines) read as {missing}"


def _name_marker(line: str, style: str) -> tuple[str, str] | None:
    """``(name, text on the marker line)`` when ``line`` is a marker of ``style`` whose label is a name."""
    after = ""
    if style == "bold":
        bold = _BOLD_SPEAKER.match(line)
        if bold is None:
            return None
        label, rest = bold[1].strip(), bold[2]
        if label.endswith(":"):
            label, after = label[:-1], rest
        elif rest.lstrip(" \t").startswith(":"):
            after = rest.lstrip(" \t")[1:]
        else:
            return None
    else:
        heading = _HEADING.match(line)
        if heading is None or f"h{len(heading[1])}" != style or len(heading[2]) > _MAX_MARKER_LINE:
            return None
        label = _heading_label(heading[2])
    label = _LEADING_SYMBOLS.sub("", label.strip().strip("*_").strip(), count=1)
    if len(label) > _MAX_NAME or not label[:1].isupper() or _NAME.fullmatch(label) is None:
        return None
    return label, after.lstrip(" \t").removesuffix("\r")


def _title_line(line: str) -> str | None:
    heading = _HEADING.match(line)
    if heading is None or len(heading[1]) != 1 or len(heading[2]) > _MAX_MARKER_LINE:
        return None
    return clean_title(_heading_label(heading[2]))


def read_markdown(path: Path, text: str) -> Transcript:
    lines = text.split("\n")
    front, start = _front_matter(lines)
    fenced = fenced_ranges(lines, line_starts(text, _FENCE_START))
    markers, named = _markers(text, lines, start, fenced)
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
    if named is not None:
        warnings.append(named)
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
    """Verbatim, minus blank lines and separators (``---``) around it, and the newline before the next heading."""
    start, end = 0, len(lines)
    while start < end and (not lines[start].strip() or _SEPARATOR.fullmatch(lines[start])):
        start += 1
    while end > start and (not lines[end - 1].strip() or _SEPARATOR.fullmatch(lines[end - 1])):
        end -= 1
    text = "\n".join(lines[start:end])
    return text.removesuffix("\r")
