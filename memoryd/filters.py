"""What a search may return: the filters, checked, with no database or model behind them.

A module of its own so that a request can be validated (by the CLI, the
query service's client, the MCP server) without importing the search
machinery, its database driver and numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

KINDS = ("message", "summary")


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """What a search may return; an empty field does not filter.

    ``slugs`` and ``slug_prefix`` together select one group of conversations
    (a slug listed, or one starting with the prefix).  ``since``/``until``
    (inclusive) apply to a message's own day when its timestamp has one
    (``messages.day``, sql/004_message_day.sql), else to its conversation's
    date; summaries always take their conversation's date.  A role only
    exists on messages and a level only on summaries: roles alone select
    messages, levels alone summaries, both select either.  ``sources``
    (empty: every source) narrows whatever the other fields select.
    """

    slugs: tuple[str, ...] = ()
    slug_prefix: str | None = None
    roles: tuple[str, ...] = ()
    levels: tuple[int, ...] = ()
    since: date | None = None
    until: date | None = None
    kinds: tuple[str, ...] = ()  # "message" and/or "summary"; empty for both
    sources: tuple[str, ...] = ()  # [source] names; empty for every source

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {', '.join(sorted(unknown))}")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError(f"since ({self.since}) is after until ({self.until})")
        if not (self.includes_messages or self.includes_summaries):
            raise ValueError(
                f"these filters exclude every text: roles apply to messages and levels to summaries,"
                f" but kinds is {', '.join(self.kinds)}"
            )

    @property
    def includes_messages(self) -> bool:
        return (not self.kinds or "message" in self.kinds) and (bool(self.roles) or not self.levels)

    @property
    def includes_summaries(self) -> bool:
        return (not self.kinds or "summary" in self.kinds) and (bool(self.levels) or not self.roles)

    @property
    def selects_conversations(self) -> bool:
        return bool(self.slugs) or self.slug_prefix is not None

    @property
    def dated(self) -> bool:
        return self.since is not None or self.until is not None
