"""What is encoded for a text: its embedding recipe.

A vector's identity is (model, recipe, what was encoded).  The current
recipe, ``speaker``, encodes each chunk of a message that names its speaker
as ``"Name: chunk"``, and everything else (messages without a speaker,
summaries) as the chunk itself.  Chunk offsets stay offsets in the content,
so a hit still shows the passage of the message that matched.  A chunk that
fills the model's window loses its last few tokens to the name (the model
truncates); they are in the next chunk's overlap, and most messages are far
shorter than a window.

Measured on bench/retrieval.py (REALTALK, 726 questions asked by name:
"What are Kate's hobbies?"; README "Retrieval quality").

``input_hash`` names exactly what is encoded: texts whose encoded input is
the same share vectors (the same text elsewhere, or the same text under an
older recipe that encoded it the same way), and a text is never encoded
twice for the same input.  ``None`` means the content itself, whose hash is
the text's ``content_hash``: the only input of the first recipe, and what the
vectors stored before sql/006 were made from.
"""

from __future__ import annotations

import hashlib

RECIPE = "speaker"
"""The recipe this version writes; older vectors ('content') are replaced in the background."""
OLD_RECIPES = ("content",)


def prefix(speaker: str | None) -> str:
    """What is put before each chunk of a text said by ``speaker``."""
    return f"{speaker}: " if speaker else ""


def input_hash(content_hash: str, speaker: str | None) -> str | None:
    """The identity of what is encoded for a text; None when that is its content alone."""
    if not speaker:
        return None
    return hashlib.sha256(f"{RECIPE}\x00{speaker}\x00{content_hash}".encode()).hexdigest()


STALE_RECIPE = "stale"
"""The recipe of vectors whose text's encoded input changed without its content (a new speaker name)."""
