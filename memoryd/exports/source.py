"""What the importer needs to know about one kind of data export."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ExportSource:
    """A kind of chat export whose ``conversations.json`` is an array of conversation objects.

    ``key`` is the field every conversation of this kind has (and the other
    kinds lack): how a wrong ``memoryd import`` source is caught before
    anything is written.
    """

    name: str  # as typed after `memoryd import`, and written to meta.json's "source"
    display: str  # as people call it, in messages
    key: str
    title_key: str
    id_keys: tuple[str, ...]
