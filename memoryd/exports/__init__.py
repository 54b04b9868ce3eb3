"""Data exports and agent session logs → conversation folders (``memoryd import SOURCE PATH``), one module per source.

``importer.py`` runs an import; ``stream.py`` reads an export one
conversation at a time; ``folders.py`` writes the folders; ``chatgpt.py`` and
``claude.py`` describe each source.  Agent session logs: ``claude_code.py``
and ``codex.py`` read them, ``sessions.py`` writes their folders.
"""

from memoryd.exports.importer import SOURCES, ImportReport, import_export
from memoryd.exports.stream import iter_export

__all__ = ["SOURCES", "ImportReport", "import_export", "iter_export"]
