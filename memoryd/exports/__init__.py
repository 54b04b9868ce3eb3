"""Data exports and agent session logs → conversation folders (``memoryd import SOURCE PATH``), one module per source.

``importer.py`` runs an import of a ChatGPT or Claude export; ``stream.py``
reads such an export one conversation at a time; ``folders.py`` writes the
folders; ``chatgpt.py`` and ``claude.py`` describe each source; ``jsonl.py``
imports chat datasets (one conversation per line).  Agent session logs:
``claude_code.py`` and ``codex.py`` read them, ``sessions.py`` writes their
folders.
"""

from memoryd.exports.importer import SOURCES, ImportReport, import_export
from memoryd.exports.jsonl import import_jsonl
from memoryd.exports.stream import iter_export

__all__ = ["SOURCES", "ImportReport", "import_export", "import_jsonl", "iter_export"]
