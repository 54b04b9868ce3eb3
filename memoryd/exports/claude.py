"""Claude data exports: Settings → Privacy → Export data.

The reading of one conversation (``chat_messages``) is
``memoryd.formats.claude``; this module says how the importer finds, names
and identifies one.
"""

from __future__ import annotations

from memoryd.exports.source import ExportSource

CLAUDE = ExportSource(
    name="claude",
    display="Claude",
    key="chat_messages",
    title_key="name",
    id_keys=("uuid", "id"),
)
