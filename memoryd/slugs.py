"""Slugs: the folder names that identify conversations, read (date, title) and made (imports).

Every rule about slug names lives here: which names are slugs at all, what
date and title a slug implies, how an import builds one from a date and a
title, and when two names are the same folder.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import date

MAX_SLUG_BYTES = 80

_SLUG_DATE = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})(?![0-9])")
_WORD = re.compile(r"[^\W_]+")


def is_slug_name(name: str) -> bool:
    """Hidden folders (``.git``, a tool's ``.staging``) are never conversations."""
    return bool(name) and not name.startswith(".")


def date_from_slug(slug: str) -> date | None:
    """A leading YYYY-MM-DD; an impossible date is no date rather than an error."""
    match = _SLUG_DATE.match(slug)
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def title_from_slug(slug: str) -> str:
    """``2025-06-25__orage_codé_textuel`` → ``orage codé textuel``; the slug if nothing is left."""
    rest = _SLUG_DATE.sub("", slug).strip("_- ")
    title = " ".join(rest.replace("_", " ").split())
    return title or slug


def slug_for(created: date | None, title: str | None, *, suffix: str = "") -> str:
    """``YYYY-MM-DD__title_words`` (``undated``/``untitled`` when missing), at most ``MAX_SLUG_BYTES`` bytes.

    Lower-case letters and digits of any script, joined by ``_``: no ``/``,
    no control or invisible characters, no leading dot, the same on every
    filesystem (NFC).  ``suffix`` (a short id) is kept whole; the title is
    cut at a word boundary when it can be.
    """
    prefix = created.isoformat() if created is not None else "undated"
    words = "_".join(_WORD.findall(unicodedata.normalize("NFC", title or "").lower())) or "untitled"
    tail = f"__{suffix}" if suffix else ""
    budget = MAX_SLUG_BYTES - len(prefix) - 2 - len(tail.encode("utf-8"))
    return f"{prefix}__{_cut(words, budget)}{tail}"


def _cut(words: str, budget: int) -> str:
    if len(words.encode("utf-8")) <= budget:
        return words
    cut = words.encode("utf-8")[:budget].decode("utf-8", "ignore")
    boundary = cut.rfind("_")
    if boundary >= len(cut) // 2:
        cut = cut[:boundary]
    return cut.rstrip("_") or "untitled"


def short_id(conversation_id: str, length: int = 8) -> str:
    """A short, stable, filesystem-safe id: the id's first letters and digits (a UUID's hex), else a hash."""
    alnum = re.sub(r"[^0-9A-Za-z]", "", conversation_id).lower()
    if len(alnum) >= length:
        return alnum[:length]
    return hashlib.sha256(conversation_id.encode("utf-8")).hexdigest()[:length]


def name_key(name: str) -> str:
    """Names compared as a case-insensitive, normalising filesystem (macOS) would."""
    return unicodedata.normalize("NFC", name).casefold()
