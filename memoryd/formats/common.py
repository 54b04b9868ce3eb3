"""What every format shares: the ``Transcript`` value, roles, and lenient readers of JSON values.

Every format ends in the same ``Transcript`` so that title, date and hashing
rules live in one place whatever the transcript looked like.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import MappingProxyType

from memoryd.errors import ParseError
from memoryd.records import ROLES, Message, clean_text

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

_ISO_DATE_PREFIX = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})")

Fail = Callable[[str], ParseError]


def normalize_role(name: str) -> str | None:
    """Map a role as written (any case, any alias) to one of ``ROLES``, or None."""
    return ROLE_ALIASES.get(name.strip().casefold())


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
    """Its last part is still being written (a JSONL line without its newline): what is here is complete."""


def unique_clean(values: Sequence[str]) -> tuple[str, ...]:
    cleaned = (clean_text(value.strip()) for value in values)
    return tuple(dict.fromkeys(value for value in cleaned if value))


def optional_str(obj: dict[str, object], key: str, fail: Fail) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise fail(f"{key}: expected a string, got {json_type(value)}")


def lenient_str(obj: Mapping[str, object], key: str) -> str | None:
    """A string field of an export, None when absent or of another type (exports drift)."""
    value = obj.get(key)
    return value if isinstance(value, str) else None


def clean_title(title: str | None) -> str | None:
    if title is None:
        return None
    return clean_text(" ".join(title.split())) or None


def json_type(value: object) -> str:
    names: dict[type, str] = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)


def ts_text(value: object) -> str | None:
    """Timestamps are kept as text: whatever the writer meant, nothing is lost.

    A non-string (epoch number…) is kept as its JSON spelling.
    """
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return clean_text(text.strip()) or None


# The keys that name a message's speaker, first present wins: REALTALK/LoCoMo
# style conversions write ``speaker``, OpenAI chat ``name``, some exports
# ``author`` (a string, or an object with a ``name``, as ChatGPT's).
SPEAKER_KEYS = ("speaker", "name", "author")


def speaker_name(message: Mapping[str, object]) -> str | None:
    """The name of who said ``message``, whitespace collapsed; None when it names no one."""
    for key in SPEAKER_KEYS:
        value = message.get(key)
        if isinstance(value, Mapping):
            value = value.get("name")
        if isinstance(value, str) and value.strip():
            return clean_text(" ".join(value.split()))
    return None


def names(value: object, key: str) -> list[str]:
    """The ``key`` strings of a list of objects (attachments), whatever else the list holds."""
    if not isinstance(value, list):
        return []
    names = (item.get(key) for item in value if isinstance(item, dict))
    return [clean_text(" ".join(name.split())) for name in names if isinstance(name, str) and name.strip()]
