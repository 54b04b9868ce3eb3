"""Writing conversation folders: atomically, found again by source id, untouched when unchanged.

Folders appear atomically: they are written as a hidden ``.import-…`` folder
(which the daemon ignores) and renamed into place.  A conversation whose
bytes did not change is not touched at all, so importing the same export
twice changes nothing on disk, hence nothing in the database; one that
changed in a newer export is replaced in place, under the same slug.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

from memoryd.errors import MemorydError
from memoryd.formats import CONVERSATION_JSON, META_NAME, Transcript
from memoryd.slugs import name_key, short_id, slug_for


class ConversationFolders:
    """The conversations folder as the importer sees it: names taken, and folders by source id."""

    def __init__(self, root: Path, source: str) -> None:
        self.root = root
        self.source = source
        self.taken: set[str] = set()
        self.by_id: dict[str, str] = {}
        try:
            with os.scandir(root) as entries:
                for entry in entries:
                    self.taken.add(name_key(entry.name))
                    if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                        source_id = self._source_id(Path(entry.path) / META_NAME)
                        if source_id is not None:
                            self.by_id.setdefault(source_id, entry.name)
        except OSError as exc:
            raise MemorydError(f"cannot list the conversations folder {root}: {exc.strerror or exc}") from exc

    def _source_id(self, meta_path: Path) -> str | None:
        """The id an earlier import recorded in meta.json; anything unreadable is simply not ours."""
        try:
            if not meta_path.is_file() or meta_path.is_symlink() or meta_path.stat().st_size > 1024 * 1024:
                return None
            meta = json.loads(meta_path.read_bytes())
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(meta, dict) or meta.get("source") != self.source:
            return None
        source_id = meta.get("source_id")
        return source_id if isinstance(source_id, str) else None

    def write(
        self, conversation_id: str, transcript: Transcript, data: bytes, *, meta: Mapping[str, str] | None = None
    ) -> tuple[str, str]:
        """Write a conversation; returns its slug and ``created``, ``updated`` or ``unchanged``.

        The folder is found by the id in its meta.json; failing that (meta.json
        deleted), a folder of the right name already holding exactly these
        bytes is the same conversation, not a reason for a duplicate.
        ``meta`` adds fields to a new folder's meta.json (a title the
        conversation itself lacks); meta.json is never rewritten.
        """
        slug = self.by_id.get(conversation_id)
        if slug is not None and (self.root / slug).is_dir():
            return slug, self._update(slug, data)
        for candidate in _slug_candidates(conversation_id, transcript):
            if name_key(candidate) not in self.taken:
                self._create(candidate, conversation_id, data, meta or {})
                self.by_id[conversation_id] = candidate
                self.taken.add(name_key(candidate))
                return candidate, "created"
            if self._holds(candidate, data):
                self.by_id[conversation_id] = candidate
                return candidate, "unchanged"
        raise MemorydError(f"no free folder name for conversation {conversation_id!r}")

    def _holds(self, slug: str, data: bytes) -> bool:
        target = self.root / slug / CONVERSATION_JSON
        try:
            return target.is_file() and not target.is_symlink() and target.read_bytes() == data
        except OSError:
            return False

    def _update(self, slug: str, data: bytes) -> str:
        """Replace conversation.json only if its bytes differ (so mtimes, hence the daemon, stay still)."""
        if self._holds(slug, data):
            return "unchanged"
        folder = self.root / slug
        target = folder / CONVERSATION_JSON
        try:
            staged = folder / f".{CONVERSATION_JSON}.import-{secrets.token_hex(4)}"
            try:
                staged.write_bytes(data)
                os.replace(staged, target)
            finally:
                staged.unlink(missing_ok=True)
        except OSError as exc:
            raise MemorydError(f"cannot write {target}: {exc.strerror or exc}") from exc
        return "updated"

    def _create(self, slug: str, conversation_id: str, data: bytes, extra: Mapping[str, str]) -> None:
        """Write the folder hidden, then rename it into place: the daemon never sees it half-written."""
        fields = {"source": self.source, "source_id": conversation_id, **extra}
        meta = json.dumps(fields, ensure_ascii=False, indent=2)
        staging = self.root / f".import-{secrets.token_hex(6)}"
        target = self.root / slug
        try:
            staging.mkdir()
            try:
                (staging / CONVERSATION_JSON).write_bytes(data)
                (staging / META_NAME).write_bytes((meta + "\n").encode("utf-8"))
                if target.exists() or target.is_symlink():
                    raise FileExistsError(errno.EEXIST, "appeared meanwhile", str(target))
                staging.rename(target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        except OSError as exc:
            raise MemorydError(f"cannot write {target}: {exc.strerror or exc}") from exc


def _slug_candidates(conversation_id: str, transcript: Transcript) -> Iterator[str]:
    """The slug, then the slug with ever longer prefixes of the id: stable for a given conversation."""
    yield slug_for(transcript.created_date, transcript.title)
    for length in (8, 12, 16, 32):
        yield slug_for(transcript.created_date, transcript.title, suffix=short_id(conversation_id, length))
    for counter in range(2, 10_000):  # the id itself collides: only hand-made folders can do that
        yield slug_for(transcript.created_date, transcript.title, suffix=f"{short_id(conversation_id)}_{counter}")
