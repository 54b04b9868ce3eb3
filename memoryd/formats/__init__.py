"""Conversation folders → ``Conversation`` values, one module per format.

Pure: this package reads files and returns values or raises ``ParseError``; it
never touches the database, the model or the logger, so ``sync.py`` decides
what a bad folder means (record the error, keep what was stored before).

``folder.py`` picks a folder's transcript and applies ``meta.json``;
``registry.py`` says which reader reads it (``jsonl``, ``native``,
``chatgpt``, ``claude``, ``markdown``); every reader returns the same
``Transcript`` (``common.py``).  ``files.py`` reads bytes safely.

Bad input is either refused with a ``ParseError`` naming the file (and line),
or accepted with a warning (``Conversation.warnings``) saying what was
repaired: bytes that are not UTF-8 are decoded with U+FFFD, a Markdown file
without any role marker becomes one ``user`` message.  What is refused is what
would replace a stored conversation with garbage: binary data, an empty or
truncated file, JSON of the wrong shape, a symlink leading out of the watched
folder.
"""

from memoryd.formats.common import Transcript, normalize_role
from memoryd.formats.files import MAX_FILE_BYTES, decode_text, read_bytes, read_text
from memoryd.formats.folder import META_NAME, find_transcript, parse_conversation
from memoryd.formats.registry import CONVERSATION_JSON, TRANSCRIPT_NAMES, read_json_document

__all__ = [
    "CONVERSATION_JSON",
    "MAX_FILE_BYTES",
    "META_NAME",
    "TRANSCRIPT_NAMES",
    "Transcript",
    "decode_text",
    "find_transcript",
    "normalize_role",
    "parse_conversation",
    "read_bytes",
    "read_json_document",
    "read_text",
]
