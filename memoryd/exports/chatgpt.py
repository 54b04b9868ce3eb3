"""ChatGPT data exports: Settings → Data controls → Export.

The reading of one conversation (its ``mapping`` tree, ``current_node``)
is ``memoryd.formats.chatgpt``; this module says how the importer finds,
names and identifies one.
"""

from __future__ import annotations

from memoryd.exports.source import ExportSource

CHATGPT = ExportSource(
    name="chatgpt",
    display="ChatGPT",
    key="mapping",
    title_key="title",
    id_keys=("conversation_id", "id"),
)
