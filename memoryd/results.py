"""What asking the memory returns: typed, immutable, and the same over every channel.

The Python API returns these; the query service sends ``to_dict()`` as JSON
and its client rebuilds them with ``from_dict()``; the CLI and the MCP
server print or return ``to_dict()``.  So a hit looks the same whichever way
it was asked for, which the tests check by comparing the two.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import date
from typing import Any, TypeVar

T = TypeVar("T")


def _date_or_none(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


@dataclass(frozen=True, slots=True)
class Turn:
    """One message, shown around a hit or in a conversation window."""

    seq: int
    role: str
    ts: str | None
    text: str
    truncated: bool = False  # the text was cut (see api.CONTEXT_TEXT_CHARS and HIT_TEXT_CHARS)
    speaker: str | None = None  # who said it, by name, where the transcript says

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Turn:
        return cls(**_known(cls, data))


@dataclass(frozen=True, slots=True)
class SummaryRef:
    """A summary shown with a hit or a conversation: which messages it covers, and its text."""

    level: int
    key: str
    covers: tuple[int, ...]
    text: str
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["covers"] = list(self.covers)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SummaryRef:
        values = _known(cls, data)
        values["covers"] = tuple(values.get("covers") or ())
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Context:
    """What surrounds a hit.

    A message hit: the turns just ``before`` and ``after`` it, and the
    ``summaries`` whose ``covers`` include it.  A summary hit: the first of the
    messages it covers (``covered``).
    """

    before: tuple[Turn, ...] = ()
    after: tuple[Turn, ...] = ()
    summaries: tuple[SummaryRef, ...] = ()
    covered: tuple[Turn, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "before": [t.to_dict() for t in self.before],
            "after": [t.to_dict() for t in self.after],
            "summaries": [s.to_dict() for s in self.summaries],
            "covered": [t.to_dict() for t in self.covered],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Context:
        return cls(
            before=tuple(Turn.from_dict(t) for t in data.get("before") or ()),
            after=tuple(Turn.from_dict(t) for t in data.get("after") or ()),
            summaries=tuple(SummaryRef.from_dict(s) for s in data.get("summaries") or ()),
            covered=tuple(Turn.from_dict(t) for t in data.get("covered") or ()),
        )


@dataclass(frozen=True, slots=True)
class Hit:
    """One message or summary found by a search, with its place and its context.

    ``id`` ("message:123", "summary:45") fetches the same hit again
    (``Memory.hit``) while its row lives: an edit elsewhere in the
    conversation keeps it, a deleted conversation does not.
    """

    id: str
    kind: str  # "message" | "summary"
    slug: str
    title: str
    date: date | None  # the conversation's date
    seq: int | None  # the message's position; for a summary, the first covered seq
    level: int | None  # summaries only
    role: str | None  # messages only
    ts: str | None  # the message's timestamp as the transcript wrote it
    score: float  # vector: cosine similarity; text: BM25; hybrid: fused normalised scores, 0 to 1
    text: str  # the whole text, cut at api.HIT_TEXT_CHARS (then ``truncated``)
    snippet: str  # the passage that matched
    truncated: bool = False
    context: Context = field(default_factory=Context)
    vector_rank: int | None = None  # 1-based rank in the vector candidates, None if absent
    text_rank: int | None = None  # 1-based rank in the full-text candidates, None if absent
    speaker: str | None = None  # messages only: who said it, by name, where the transcript says
    source: str = ""  # the conversation's source: the [source] name of the machine whose folders hold it

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["date"] = self.date.isoformat() if self.date else None
        data["context"] = self.context.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hit:
        values = _known(cls, data)
        values["date"] = _date_or_none(values.get("date"))
        values["context"] = Context.from_dict(values.get("context") or {})
        return cls(**values)


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    """One conversation in a listing (``Memory.recent``)."""

    slug: str
    title: str
    date: date | None
    messages: int
    summaries: int
    tags: tuple[str, ...] = ()
    updated_at: str | None = None  # when memoryd last stored a change of it (ISO 8601, UTC)
    source: str = ""  # the [source] name of the machine whose folders hold it

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["date"] = self.date.isoformat() if self.date else None
        data["tags"] = list(self.tags)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConversationInfo:
        values = _known(cls, data)
        values["date"] = _date_or_none(values.get("date"))
        values["tags"] = tuple(values.get("tags") or ())
        return cls(**values)


@dataclass(frozen=True, slots=True)
class ConversationView:
    """A conversation, or a window of it, with the summaries that cover what is shown."""

    info: ConversationInfo
    turns: tuple[Turn, ...]
    summaries: tuple[SummaryRef, ...]
    first_seq: int  # the window shown: seq first_seq .. first_seq + len(turns) - 1
    truncated: bool = False  # more turns exist than were returned (see api.MAX_TURNS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "info": self.info.to_dict(),
            "turns": [t.to_dict() for t in self.turns],
            "summaries": [s.to_dict() for s in self.summaries],
            "first_seq": self.first_seq,
            "truncated": self.truncated,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConversationView:
        return cls(
            info=ConversationInfo.from_dict(data["info"]),
            turns=tuple(Turn.from_dict(t) for t in data.get("turns") or ()),
            summaries=tuple(SummaryRef.from_dict(s) for s in data.get("summaries") or ()),
            first_seq=int(data.get("first_seq", 0)),
            truncated=bool(data.get("truncated", False)),
        )


def _known(cls: type[Any], data: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``data`` that are fields of ``cls``: a newer server may send more."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}
