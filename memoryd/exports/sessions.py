"""Agent session logs → conversation folders: what Claude Code and Codex have in common.

A coding agent's session log is an append-only JSONL file that the agent
deletes after a while (Claude Code: 30 days by default).  Each session
becomes ``<conversations>/<slug>/`` holding

``messages.jsonl``
    the native ``{"role", "content", "ts"}`` lines: what the person typed,
    what the agent answered, each tool call as a ``[tool: NAME] argument``
    line inside the assistant turn, each tool result as a ``tool`` turn cut
    to ``tool_result_chars`` characters.  Converted rather than copied: the
    raw log is mostly machine chatter (token counts, snapshots, hooks) that
    would drown search, and it is rewritten from the log at each import.

``meta.json``
    ``source`` (``claude-code``/``codex``), ``source_id`` (how the next import
    finds the folder again), ``session_id``, ``cwd``, ``git_branch``,
    ``version``, and the links between a session and its sub-agent runs
    (``parent``, ``subagents``: slugs).  Keys the importer owns are refreshed;
    any other key (``tags``…) and a ``title`` someone edited are kept.

and, when the agent compacted its context, ``<summaries>/<slug>/compactions.jsonl``:
one level-1 summary per compaction, covering the turns before it.

Files are written only when their bytes change, each one atomically (a new
folder appears whole, by rename), so a no-change re-import touches nothing
and a session that grew rewrites its folder in place, under the same slug.
Deleting the agent's log never deletes anything here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cached_property
from pathlib import Path

import structlog

from memoryd.errors import MemorydError
from memoryd.exports.folders import create_folder, index_folders, read_meta
from memoryd.exports.importer import ImportReport
from memoryd.records import clean_text
from memoryd.slugs import name_key, short_id, slug_for

log = structlog.get_logger(__name__)

MESSAGES_NAME = "messages.jsonl"
META_NAME = "meta.json"
COMPACTIONS_NAME = "compactions.jsonl"
# Tool results longer than this are cut: a file read or a test run can be
# megabytes, and search wants the conversation, not the files it touched.
DEFAULT_TOOL_RESULT_CHARS = 2000
# A tool call's argument is one line of at most this many characters.
TOOL_ARGUMENT_CHARS = 200
# Keys of meta.json the importer writes; any other key belongs to the user.
_OWNED_KEYS = ("source", "source_id", "session_id", "cwd", "git_branch", "version", "agent_id", "parent", "subagents")
_SPACES = re.compile(r"\s+")


@dataclass
class Turn:
    """One message being assembled from log records."""

    role: str
    parts: list[str]
    ts: str | None = None

    @property
    def content(self) -> str:
        return "\n".join(part for part in self.parts if part).strip()


@dataclass
class Compaction:
    """The agent's own summary of everything before it, written when its context filled up."""

    content: str
    before: int  # turns emitted before the compaction: it covers seqs 0 .. before-1
    ts: str | None = None


@dataclass
class Session:
    """What one session log (or one sub-agent run) says, ready to be written as a folder."""

    source: str
    source_id: str
    session_id: str
    log_path: Path
    turns: list[Turn] = field(default_factory=list)
    compactions: list[Compaction] = field(default_factory=list)
    started: str | None = None
    cwd: str | None = None
    git_branch: str | None = None
    version: str | None = None
    title: str | None = None
    agent_id: str | None = None
    parent_source_id: str | None = None
    project: str | None = None

    def add(self, role: str, text: str, ts: str | None) -> Turn | None:
        """Append a turn (blank text is no turn)."""
        text = clean_text(text).strip()
        if not text:
            return None
        turn = Turn(role, [text], ts)
        self.turns.append(turn)
        return turn

    def compacted(self, text: str, ts: str | None) -> None:
        text = clean_text(text).strip()
        if text:
            self.compactions.append(Compaction(text, sum(1 for turn in self.turns if turn.content), ts))

    @cached_property
    def messages(self) -> list[dict[str, str]]:
        """The native rows; computed once, after the log is read (turns are complete by then)."""
        rows = []
        for turn in self.turns:
            content = clean_text(turn.content)
            if content:
                row = {"role": turn.role, "content": content}
                if turn.ts:
                    row["ts"] = clean_text(turn.ts)
                rows.append(row)
        return rows

    @property
    def first_prompt(self) -> str | None:
        """The first thing the person asked; a slash command (``/model opus``) only when nothing else was typed."""
        prompts = [turn.content for turn in self.turns if turn.role == "user" and turn.content]
        return next((prompt for prompt in prompts if not prompt.startswith("/")), prompts[0] if prompts else None)

    @property
    def project_name(self) -> str | None:
        """The project the agent worked in: its working folder's name."""
        return self.project or (Path(self.cwd).name if self.cwd else None) or None


class Notes:
    """Warnings of one import run: an unknown record type is reported once per type, with a count."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.unknown: dict[str, int] = {}
        self.unknown_where: dict[str, str] = {}
        self.warnings: list[str] = []

    def unknown_type(self, kind: str, where: str) -> None:
        if kind not in self.unknown:
            self.unknown_where[kind] = where
            log.warning("session_record_unknown", source=self.source, record_type=kind, where=where)
        self.unknown[kind] = self.unknown.get(kind, 0) + 1

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def reported(self) -> None:
        """Forget the counts (not which types were seen): the next run reports only its own records."""
        self.unknown = dict.fromkeys(self.unknown, 0)

    def report_lines(self) -> list[str]:
        lines = list(self.warnings)
        for kind, count in self.unknown.items():
            if not count:
                continue
            lines.append(
                f"unknown record type {kind!r} skipped ({count} record(s), first at {self.unknown_where[kind]})"
            )
        return lines


# --- text helpers shared by the two readers


def tool_line(name: str, argument: str | None) -> str:
    """``[tool: NAME] argument``: one line, the argument's whitespace collapsed and cut."""
    text = _SPACES.sub(" ", argument or "").strip()
    if len(text) > TOOL_ARGUMENT_CHARS:
        text = text[: TOOL_ARGUMENT_CHARS - 1].rstrip() + "…"
    return f"[tool: {name}] {text}".rstrip()


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with a marker saying how much was left out."""
    text = text.strip()
    if limit <= 0 or len(text) <= limit:
        return text
    return f"{text[:limit].rstrip()}\n[… truncated: {len(text) - limit} more characters]"


def argument_of(value: object, keys: Iterable[str]) -> str:
    """The most telling argument of a tool call: the first of ``keys`` present, else compact JSON."""
    if isinstance(value, dict):
        for key in keys:
            found = value.get(key)
            if isinstance(found, str) and found.strip():
                return found
            if isinstance(found, list) and found and all(isinstance(item, str) for item in found):
                return " ".join(found)
    if isinstance(value, str):
        return value
    if value is None or value == {}:
        return ""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def iso_date(ts: str | None) -> date | None:
    """The UTC date of an ISO timestamp (``...Z`` or with an offset); None when it is not one."""
    if not ts:
        return None
    try:
        moment = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.date()


def read_jsonl(path: Path, notes: Notes) -> Iterator[tuple[int, dict[str, object]]]:
    """The JSON objects of a log, with their 1-based line numbers.

    A last line without its newline is being written right now: it is left
    for the next import without a word.  Any other line that is not a JSON
    object is reported and skipped: one damaged line must not cost the session.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MemorydError(f"cannot read {path}: {exc.strerror or exc}") from exc
    lines = data.split(b"\n")
    last = len(lines)
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            if number == last:
                continue  # cut mid-write: the rest comes with the next import
            notes.warn(f"{path}:{number}: not a JSON line, skipped")
            continue
        if not isinstance(value, dict):
            notes.warn(f"{path}:{number}: not a JSON object, skipped")
            continue
        yield number, value


def text_field(obj: object, key: str) -> str | None:
    """A string field of a record; None when absent or of another type (logs drift between versions)."""
    if isinstance(obj, dict):
        value = obj.get(key)
        if isinstance(value, str):
            return value
    return None


# --- folders


class SessionFolders:
    """The conversations and summaries folders as the session importer sees them.

    Folders are found again by ``source_id`` in their meta.json, so a folder
    renamed by hand is still updated rather than duplicated.  Built once per
    import (or once per daemon, by the mirror) and kept up to date as it writes.
    """

    def __init__(self, conversations: Path, summaries: Path, source: str) -> None:
        self.root = conversations
        self.summaries = summaries
        self.source = source
        try:
            conversations.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MemorydError(
                f"cannot create the conversations folder {conversations}: {exc.strerror or exc}"
            ) from exc
        self.taken, self.by_id = index_folders(conversations, source)

    def slug(self, session: Session) -> str:
        """The session's folder: the one it was imported to before, else a free name (reserved now)."""
        slug = self.by_id.get(session.source_id)
        if slug is not None and (self.root / slug).is_dir():
            return slug
        date_ = iso_date(session.started)
        words = " ".join(
            part for part in (session.project_name, "agent" if session.agent_id else None, session.first_prompt) if part
        )
        for suffix in ("", *(short_id(session.source_id, n) for n in (8, 12, 16, 32))):
            candidate = slug_for(date_, words or None, suffix=suffix)
            if name_key(candidate) not in self.taken:
                self.taken.add(name_key(candidate))
                self.by_id[session.source_id] = candidate
                return candidate
        raise MemorydError(f"no free folder name for session {session.source_id!r}")

    def write(self, session: Session, slug: str, links: dict[str, object]) -> str:
        """Write a session's folder (and its compactions); ``created``, ``updated`` or ``unchanged``."""
        folder = self.root / slug
        messages = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in session.messages).encode("utf-8")
        ours: dict[str, object] = {
            "source": self.source,
            "source_id": session.source_id,
            "session_id": session.session_id,
            "cwd": session.cwd,
            "git_branch": session.git_branch,
            "version": session.version,
            "agent_id": session.agent_id,
            **links,
        }
        ours = {key: value for key, value in ours.items() if value is not None}
        if not folder.is_dir():
            meta = {"title": _title(session), "created_date": _created(session), **ours}
            create_folder(folder, {MESSAGES_NAME: messages, META_NAME: _meta_bytes(meta)})
            outcome = "created"
        else:
            existing = read_meta(folder / META_NAME) or {}
            meta = {**existing, **{key: None for key in _OWNED_KEYS}, **ours}
            meta = {key: value for key, value in meta.items() if value is not None}
            meta.setdefault("title", _title(session))
            changed = _replace(folder / MESSAGES_NAME, messages)
            changed = _replace(folder / META_NAME, _meta_bytes(meta)) or changed
            outcome = "updated" if changed else "unchanged"
        if session.compactions and self._write_compactions(session, slug) and outcome == "unchanged":
            outcome = "updated"
        return outcome

    def _write_compactions(self, session: Session, slug: str) -> bool:
        lines = []
        for number, compaction in enumerate(session.compactions, start=1):
            row = {
                "level": 1,
                "key": f"compaction-{number}",
                "covers": list(range(compaction.before)),
                "content": compaction.content,
            }
            lines.append(json.dumps(row, ensure_ascii=False) + "\n")
        folder = self.summaries / slug
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MemorydError(f"cannot create {folder}: {exc.strerror or exc}") from exc
        return _replace(folder / COMPACTIONS_NAME, "".join(lines).encode("utf-8"))


def _title(session: Session) -> str | None:
    title = session.title or session.first_prompt
    if not title:
        return None
    title = _SPACES.sub(" ", title).strip()
    return title if len(title) <= 120 else title[:119].rstrip() + "…"


def _created(session: Session) -> str | None:
    found = iso_date(session.started)
    return found.isoformat() if found else None


def _meta_bytes(meta: dict[str, object]) -> bytes:
    """meta.json's bytes; strings from the log (a cut emoji: a lone surrogate) made storable first."""
    return (json.dumps(_clean(meta), ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _clean(value: object) -> object:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(key)): _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value


def _replace(target: Path, data: bytes) -> bool:
    """Replace a file atomically, only when its bytes differ (so mtimes, hence the daemon, stay still)."""
    try:
        if target.is_file() and not target.is_symlink() and target.read_bytes() == data:
            return False
        staged = target.with_name(f".{target.name}.import-{secrets.token_hex(4)}")
        try:
            staged.write_bytes(data)
            os.replace(staged, target)
        finally:
            with contextlib.suppress(OSError):
                staged.unlink(missing_ok=True)
    except OSError as exc:
        raise MemorydError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return True


# --- one import run


def write_sessions(report: ImportReport, folders: SessionFolders, group: list[Session]) -> None:
    """Write a session and its sub-agent runs, linked both ways by slug in their meta.json."""
    report.conversations += len(group)
    visible = [session for session in group if session.messages]
    for session in group:
        if not session.messages:
            report.skipped.append(f"{session.log_path} ({session.source_id}): no visible message")
    if not visible:
        return
    slugs = {session.source_id: folders.slug(session) for session in visible}
    children: dict[str, list[str]] = {}
    for session in visible:
        if session.parent_source_id is not None:
            children.setdefault(session.parent_source_id, []).append(slugs[session.source_id])
    for session in visible:
        links: dict[str, object] = {}
        if session.parent_source_id is not None:
            parent_slug = slugs.get(session.parent_source_id) or folders.by_id.get(session.parent_source_id)
            links["parent"] = parent_slug or session.parent_source_id
        if children.get(session.source_id):
            links["subagents"] = sorted(children[session.source_id])
        slug = slugs[session.source_id]
        outcome = folders.write(session, slug, links)
        {"created": report.created, "updated": report.updated, "unchanged": report.unchanged}[outcome].append(slug)
        if outcome != "unchanged":
            log.info(
                "session_imported", source=session.source, slug=slug, outcome=outcome, messages=len(session.messages)
            )


def new_report(source: str, path: Path) -> tuple[ImportReport, float]:
    return ImportReport(source=source, path=path), time.monotonic()
