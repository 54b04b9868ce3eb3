"""A conversation folder → a ``Conversation``: which transcript, meta.json, the source hash."""

from __future__ import annotations

import hashlib
import stat
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from memoryd.errors import ParseError
from memoryd.formats.common import Fail, clean_title, load_json, optional_str, parse_iso_date, short_repr, unique_clean
from memoryd.formats.files import decode_text, is_file_or_link, is_ignored_name, read_bytes, readable_file, resolve_link
from memoryd.formats.registry import READERS, TRANSCRIPT_NAMES
from memoryd.records import Conversation
from memoryd.slugs import date_from_slug, title_from_slug

FALLBACK_SUFFIXES = (".md", ".txt")
META_NAME = "meta.json"
_NO_TRANSCRIPT = "no transcript (expected messages.jsonl, conversation.json or conversation.md)"


def find_transcript(folder: Path, *, root: Path | None = None) -> Path:
    """The transcript of a conversation folder, by the precedence of DESIGN.md."""
    chosen, _shadowed = _select_transcript(folder, folder.parent if root is None else root)
    return chosen


def _select_transcript(folder: Path, root: Path) -> tuple[Path, tuple[Path, ...]]:
    """The chosen transcript and the named transcripts it hides (worth a warning)."""
    try:
        return _select_transcript_unguarded(folder, root)
    except OSError as exc:  # a folder we may not look into is bad input, like any other
        raise ParseError(folder, f"cannot list: {exc.strerror or exc}") from exc


def _select_transcript_unguarded(folder: Path, root: Path) -> tuple[Path, tuple[Path, ...]]:
    _check_folder(folder, root)
    present: list[Path] = []
    for name in TRANSCRIPT_NAMES:
        path = folder / name
        # Only the transcript that wins is followed (and judged, if a symlink);
        # those it shadows are merely mentioned.
        if is_file_or_link(path) and (present or readable_file(path, root)):
            present.append(path)
    if present:
        return present[0], tuple(present[1:])
    candidates = _fallback_candidates(folder, root)
    if not candidates:
        raise ParseError(folder, _NO_TRANSCRIPT)
    if len(candidates) > 1:
        names = ", ".join(path.name for path in candidates)
        raise ParseError(
            folder,
            f"several possible transcripts ({names}): rename the right one conversation.md",
        )
    return candidates[0], ()


def _check_folder(folder: Path, root: Path) -> None:
    """A slug folder that is a symlink must stay inside the watched folder, like any file."""
    try:
        st = folder.lstat()
    except FileNotFoundError as exc:
        raise ParseError(folder, "not a folder") from exc
    if stat.S_ISLNK(st.st_mode):
        resolve_link(folder, root)
    if not folder.is_dir():
        raise ParseError(folder, "not a folder")


def _fallback_candidates(folder: Path, root: Path) -> list[Path]:
    return [
        path
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in FALLBACK_SUFFIXES and not is_ignored_name(path.name) and readable_file(path, root)
    ]


@dataclass(frozen=True, slots=True)
class _Meta:
    title: str | None = None
    created_date: date | None = None
    tags: tuple[str, ...] = ()


def parse_conversation(folder: Path, *, root: Path | None = None) -> Conversation:
    """Read one conversation folder.

    ``root`` is the watched folder (default: the folder's parent); no symlink
    is followed out of it.  Raises ``ParseError`` naming the file (and line)
    at fault; nothing partial is ever returned, so a bad edit cannot shrink
    what is stored.  Repairs (undecodable bytes, a transcript without role
    markers) are accepted and listed in ``Conversation.warnings``.
    """
    slug = folder.name
    root = folder.parent if root is None else root
    _require_utf8_name(folder)
    transcript_path, shadowed = _select_transcript(folder, root)
    _require_utf8_name(transcript_path)
    source_format = TRANSCRIPT_NAMES.get(transcript_path.name, "markdown")
    data = read_bytes(transcript_path)
    text, decode_warning = decode_text(transcript_path, data)
    if not text:
        raise ParseError(transcript_path, "empty file")
    transcript = READERS[source_format](transcript_path, text)
    if not transcript.messages:
        raise ParseError(transcript_path, "no messages")

    meta_path = folder / META_NAME
    meta_bytes: bytes | None = None
    meta = _Meta()
    meta_warning = None
    if readable_file(meta_path, root):
        meta_bytes = read_bytes(meta_path)
        meta_text, meta_warning = decode_text(meta_path, meta_bytes)
        if not meta_text:
            raise ParseError(meta_path, "empty file")
        meta = _parse_meta(meta_path, meta_text)

    warnings = [f"ignored {path.name}, {transcript_path.name} takes precedence" for path in shadowed]
    warnings += [w for w in (decode_warning, meta_warning) if w is not None]
    return Conversation(
        slug=slug,
        title=meta.title or transcript.title or title_from_slug(slug),
        created_date=meta.created_date or transcript.created_date or date_from_slug(slug),
        messages=transcript.messages,
        source_path=transcript_path,
        source_format=transcript.source_format or source_format,
        source_hash=_source_hash(transcript_path.name, data, meta_bytes),
        total_chars=len(text),
        total_lines=_count_lines(text),
        tags=meta.tags or transcript.tags,
        warnings=(*warnings, *transcript.warnings),
    )


def _require_utf8_name(path: Path) -> None:
    """Names become database text; an undecodable file name would fail there, later."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ParseError(path, "file name is not valid UTF-8") from exc


def _source_hash(name: str, transcript: bytes, meta: bytes | None) -> str:
    """Length-prefixed parts, so no two different folders can feed the same byte stream."""
    digest = hashlib.sha256()
    parts = [name.encode("utf-8"), transcript]
    if meta is not None:
        parts.append(meta)
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _count_lines(text: str) -> int:
    """Lines as an editor shows them: a last line without a newline still counts."""
    if not text:
        return 0
    return text.count("\n") + (0 if text.endswith("\n") else 1)


def _parse_meta(path: Path, text: str) -> _Meta:
    def fail(reason: str) -> ParseError:
        return ParseError(path, reason)

    value = load_json(text, fail)
    if not isinstance(value, dict):
        raise fail("expected a JSON object")
    title = optional_str(value, "title", fail)
    created = optional_str(value, "created_date", fail)
    created_date = None
    if created is not None and created.strip():
        created_date = parse_iso_date(created)
        if created_date is None:
            raise fail(f"created_date: not a YYYY-MM-DD date: {short_repr(created)}")
    return _Meta(
        title=clean_title(title),
        created_date=created_date,
        tags=_tags(value.get("tags"), fail),
    )


def _tags(value: object, fail: Fail) -> tuple[str, ...]:
    """Stripped, blank ones dropped, first occurrence kept: tags are a set written as a list."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise fail("tags: expected a list of strings")
    return unique_clean(value)
