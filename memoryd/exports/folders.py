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


def read_meta(path: Path) -> dict[str, object] | None:
    """A meta.json as an object; anything unreadable (absent, a link, over 1 MiB, not JSON) is simply not ours."""
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > 1024 * 1024:
            return None
        meta = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return meta if isinstance(meta, dict) else None


def index_folders(root: Path, source: str) -> tuple[set[str], dict[str, str]]:
    """The names taken in ``root``, and its folders by the source id an import from ``source`` recorded.

    Names are folded as ``name_key`` compares them; the source id comes from
    each folder's meta.json, so a folder renamed by hand is found again.
    """
    taken: set[str] = set()
    by_id: dict[str, str] = {}
    try:
        with os.scandir(root) as entries:
            for entry in entries:
                taken.add(name_key(entry.name))
                if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                    continue
                meta = read_meta(Path(entry.path) / META_NAME)
                source_id = meta.get("source_id") if meta is not None and meta.get("source") == source else None
                if isinstance(source_id, str):
                    by_id.setdefault(source_id, entry.name)
    except OSError as exc:
        raise MemorydError(f"cannot list the conversations folder {root}: {exc.strerror or exc}") from exc
    return taken, by_id


class ConversationFolders:
    """The conversations folder as the importer sees it: names taken, and folders by source id."""

    def __init__(self, root: Path, source: str) -> None:
        self.root = root
        self.source = source
        self.taken, self.by_id = index_folders(root, source)

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
        fields = {"source": self.source, "source_id": conversation_id, **extra}
        meta = json.dumps(fields, ensure_ascii=False, indent=2)
        create_folder(self.root / slug, {CONVERSATION_JSON: data, META_NAME: (meta + "\n").encode("utf-8")})


def create_folder(target: Path, files: Mapping[str, bytes]) -> None:
    """Write ``files`` into a hidden folder beside ``target``, then rename it into place.

    The daemon never sees a conversation folder half-written, and a folder that
    appeared at ``target`` meanwhile is never replaced (MemorydError).
    """
    staging = target.parent / f".import-{secrets.token_hex(6)}"
    try:
        staging.mkdir()
        try:
            for name, content in files.items():
                (staging / name).write_bytes(content)
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
