"""Agent session folders → conversation folders, continuously: the daemon's ``[mirror]``.

Claude Code and Codex append to their session logs while a session runs and
delete them weeks later.  The mirror watches the folders named in
``[mirror]`` and re-imports a session shortly after its log (or one of its
sub-agent logs) stops changing, so the conversation folder follows the
session line by line; the daemon's folder watcher then stores it like any
other folder.  The daemon also mirrors everything at start, which catches
what happened while it was down, and at each rescan the logs whose size or
modification time changed (events can be lost).

Deleting a log is not an event the mirror acts on: the conversation folder,
hence the memory, stays.  A re-import writes only files whose bytes
changed, so a quiet source costs reads, never writes.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from memoryd.config import Config
from memoryd.errors import MemorydError, ParseError
from memoryd.exports.claude_code import import_claude_code
from memoryd.exports.codex import import_codex
from memoryd.exports.importer import ImportReport
from memoryd.exports.sessions import Notes, SessionFolders

log = structlog.get_logger(__name__)


_PATTERNS = {"claude-code": "*.jsonl", "codex": "rollout-*.jsonl"}


def _signatures(root: Path, pattern: str) -> dict[Path, tuple[int, int]]:
    """Each log under ``root`` with its size and modification time; one that vanished meanwhile is left out."""
    found = {}
    for path in root.rglob(pattern):
        try:
            stat = path.stat()
        except OSError:
            continue
        found[path] = (stat.st_size, stat.st_mtime_ns)
    return found


class _LogEvents(FileSystemEventHandler):
    """Remembers which ``.jsonl`` files were written, and when; deletions are ignored on purpose."""

    def __init__(self, source: str, mark: Callable[[str, Path], None]) -> None:
        self.source = source
        self.mark = mark

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("deleted", "opened", "closed_no_write"):
            return
        path = getattr(event, "dest_path", "") or event.src_path
        path = os.fsdecode(path)
        if path.endswith(".jsonl") and not os.path.basename(path).startswith("."):
            self.mark(self.source, Path(path))


class SourceMirror:
    """Mirrors the ``[mirror]`` folders into the conversations folder; a context manager, single use."""

    def __init__(self, config: Config, *, debounce_s: float = 1.5) -> None:
        self.config = config
        self.debounce_s = debounce_s
        sources = config.mirror
        self.roots = {
            name: path.expanduser()
            for name, path in (("claude-code", sources.claude_code), ("codex", sources.codex))
            if path is not None
        }
        self._dirty: dict[tuple[str, Path], float] = {}
        self._lock = threading.Lock()
        self._observer: BaseObserver | None = None
        self._folders: dict[str, SessionFolders] = {}
        self._signatures: dict[str, dict[Path, tuple[int, int]]] = {}  # source → log → (size, mtime_ns)
        # One per source for the daemon's life: an unknown record type is logged once, not at every append.
        self._notes = {source: Notes(source) for source in self.roots}

    def __enter__(self) -> Self:
        if not self.roots:
            return self
        observer = Observer()
        for source, root in self.roots.items():
            if root.is_dir():
                observer.schedule(_LogEvents(source, self._mark), str(root), recursive=True)
            else:
                log.warning("source_missing", source=source, path=str(root))
        observer.start()
        self._observer = observer
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
            self._observer = None

    def _mark(self, source: str, path: Path) -> None:
        with self._lock:
            self._dirty[(source, path)] = time.monotonic()

    def mirror_all(self) -> int:
        """Import what changed in every source since the last call (everything, the first time).

        A log whose size and modification time are unchanged is not read
        again: a rescan costs a walk of the source, not a re-read of
        gigabytes of logs.  So a conversation folder deleted by hand comes
        back only when its session goes on.  Returns the folders written.
        """
        wrote = 0
        for source, root in self.roots.items():
            if not root.is_dir():
                continue
            current = _signatures(root, _PATTERNS[source])
            previous = self._signatures.get(source)
            self._folders[source] = self._new_folders(source)  # a fresh look: folders may have been renamed
            if previous is None:
                wrote += self._import(source, root)
            else:
                for path in sorted(path for path, sig in current.items() if previous.get(path) != sig):
                    wrote += self._import(source, path)
            self._signatures[source] = current
        return wrote

    def poll(self) -> int:
        """Re-import the sessions whose logs have been quiet for ``debounce_s``; returns folders written."""
        now = time.monotonic()
        with self._lock:
            due = [key for key, seen in self._dirty.items() if now - seen >= self.debounce_s]
            for key in due:
                del self._dirty[key]
        wrote = 0
        for source, path in sorted(due):
            if path.is_file():
                wrote += self._import(source, path)
        return wrote

    def _new_folders(self, source: str) -> SessionFolders:
        return SessionFolders(self.config.paths.conversations, self.config.paths.summaries, source)

    def _import(self, source: str, path: Path) -> int:
        folders = self._folders.get(source) or self._folders.setdefault(source, self._new_folders(source))
        importer = import_claude_code if source == "claude-code" else import_codex
        try:
            report: ImportReport = importer(
                path,
                self.config.paths.conversations,
                self.config.paths.summaries,
                tool_result_chars=self.config.mirror.tool_result_chars,
                folders=folders,
                notes=self._notes[source],
            )
        except ParseError as exc:
            log.debug("source_empty", source=source, path=str(path), reason=exc.reason)
            return 0
        except MemorydError as exc:
            log.warning("source_mirror_failed", source=source, path=str(path), error=str(exc))
            return 0
        for error in report.errors:
            log.warning("source_session_failed", source=source, error=error)
        self._notes[source].warnings.clear()  # damaged lines: reported by `memoryd import`, not at every append
        wrote = len(report.created) + len(report.updated)
        if wrote:
            log.info(
                "source_mirrored",
                source=source,
                path=str(path),
                created=len(report.created),
                updated=len(report.updated),
            )
        return wrote
