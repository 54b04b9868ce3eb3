"""Codex CLI session logs → conversation folders: ``memoryd import codex [DIR]``.

The Codex CLI (0.58 to 0.128) writes ``~/.codex/sessions/YYYY/MM/DD/rollout-*.jsonl``:
one ``{"timestamp", "type", "payload"}`` record per line.

- ``session_meta`` gives the session id, cwd, CLI version and git branch.
- A prompt and a reply can each be written twice: as a ``response_item``
  (what the model saw) and as an ``event_msg`` (``user_message``,
  ``agent_message``: what the interface showed).  Some builds write prompts
  only as events and replies only as items, so the two sources are merged:
  a text is kept once, whichever source wrote it first, and its twin from
  the other source (same role, same text) is dropped.
- Injected context is not a prompt: ``developer`` messages (permission
  instructions), and ``user`` items holding AGENTS.md,
  ``<environment_context>``, ``<user_instructions>`` and the like.
- Commentary and final answers (``phase``) are both assistant text.
- Reasoning is left out; ``function_call``, ``custom_tool_call``,
  ``local_shell_call`` and ``web_search_call`` (which has no ``call_id``)
  are ``[tool: NAME] argument`` lines; their outputs are ``tool`` turns cut
  to ``tool_result_chars``.
- ``compacted`` records hold the summary that replaced the history: it is
  stored as a summary.  Other ``event_msg`` types are interface
  notifications (token counts, command begin/end) that the items already
  hold; ``turn_context`` is per-turn settings.  Any other record or item
  type is skipped with one warning per type.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from memoryd.errors import MemorydError, ParseError
from memoryd.exports.importer import ImportReport
from memoryd.exports.sessions import (
    DEFAULT_TOOL_RESULT_CHARS,
    Notes,
    Session,
    SessionFolders,
    Turn,
    argument_of,
    new_report,
    read_jsonl,
    text_field,
    tool_line,
    truncate,
    write_sessions,
)

SOURCE = "codex"
DEFAULT_DIR = Path("~/.codex/sessions")

_INJECTED = (
    "<environment_context>",
    "<user_instructions>",
    "<permissions instructions>",
    "<INSTRUCTIONS>",
    "<turn_aborted>",
    "<collaboration_mode>",
    "# AGENTS.md instructions for",
)
_SKIPPED_ITEMS = frozenset({"reasoning", "ghost_snapshot", "compaction"})
_ARGUMENT_KEYS = ("command", "cmd", "path", "file_path", "query", "url", "pattern", "plan", "input")
_SPACES = re.compile(r"\s+")


def import_codex(
    path: Path,
    conversations: Path,
    summaries: Path,
    *,
    tool_result_chars: int = DEFAULT_TOOL_RESULT_CHARS,
    folders: SessionFolders | None = None,
    notes: Notes | None = None,
) -> ImportReport:
    """Write one conversation folder per Codex session found under ``path`` (a folder or one rollout file).

    Raises ``ParseError`` when it holds no rollout file at all.
    """
    path = path.expanduser()
    report, started = new_report(SOURCE, path)
    if not path.exists():
        raise ParseError(path, "no such file or folder (expected Codex's ~/.codex/sessions or a rollout .jsonl)")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("rollout-*.jsonl") if p.is_file())
    if not files:
        raise ParseError(path, "no Codex session log (rollout-*.jsonl) here")
    folders = folders or SessionFolders(conversations, summaries, SOURCE)
    notes = notes or Notes(SOURCE)
    for file in files:
        try:
            write_sessions(report, folders, [read_rollout(file, notes, tool_result_chars)])
        except MemorydError as exc:
            report.errors.append(str(exc))
    report.warnings.extend(notes.report_lines())
    notes.reported()
    report.seconds = time.monotonic() - started
    return report


def read_rollout(path: Path, notes: Notes, tool_result_chars: int = DEFAULT_TOOL_RESULT_CHARS) -> Session:
    """One rollout file → its session."""
    reader = _Reader(path, notes, tool_result_chars)
    for number, record in read_jsonl(path, notes):
        reader.record(record, f"{path}:{number}")
    return reader.session


class _Reader:
    def __init__(self, path: Path, notes: Notes, limit: int) -> None:
        session_id = path.stem.removeprefix("rollout-")
        self.session = Session(SOURCE, session_id, session_id, path)
        self.notes = notes
        self.limit = limit
        self.have_meta = False
        # Texts written by one source and not yet seen from the other: (source, role, text) → turns.
        self.unmatched: dict[tuple[str, str, str], list[Turn]] = {}

    def record(self, record: dict[str, object], where: str) -> None:
        kind = record.get("type")
        payload = record.get("payload")
        ts = text_field(record, "timestamp")
        self.session.started = self.session.started or ts
        if not isinstance(payload, dict):
            if kind is not None:
                self.notes.warn(f"{where}: a {kind} record without a payload object, skipped")
            return
        if kind == "session_meta":
            self._meta(payload)
        elif kind == "response_item":
            self._item(payload, ts, where)
        elif kind == "event_msg":
            self._event(payload, ts)
        elif kind == "compacted":
            self.session.compacted(text_field(payload, "message") or "", ts)
        elif kind == "turn_context":
            self.session.cwd = self.session.cwd or text_field(payload, "cwd")
        else:
            self.notes.unknown_type(str(kind) if isinstance(kind, str) else repr(kind), where)

    def _meta(self, payload: dict[str, object]) -> None:
        if self.have_meta:
            return  # a resumed session repeats its meta; the first one names it
        self.have_meta = True
        session = self.session
        session_id = text_field(payload, "id")
        if session_id:
            session.session_id = session.source_id = session_id
        session.started = text_field(payload, "timestamp") or session.started
        session.cwd = text_field(payload, "cwd") or session.cwd
        session.version = text_field(payload, "cli_version")
        git = payload.get("git")
        session.git_branch = text_field(git, "branch")
        parent = _find_key(payload.get("source"), "parent_thread_id") or text_field(payload, "forked_from_id")
        if parent:
            session.parent_source_id = parent

    # -- response items

    def _item(self, payload: dict[str, object], ts: str | None, where: str) -> None:
        kind = payload.get("type")
        if not isinstance(kind, str):
            self.notes.unknown_type(f"response_item {kind!r}", where)
            return
        if kind == "message":
            role = payload.get("role")
            if role in ("user", "assistant"):
                self._text("item", str(role), _content_text(payload.get("content")), ts)
        elif kind in ("function_call", "custom_tool_call"):
            arguments = payload.get("arguments") if kind == "function_call" else payload.get("input")
            self._tool(text_field(payload, "name") or "?", _argument(arguments), ts)
        elif kind == "local_shell_call":
            action = payload.get("action")
            self._tool("shell", _argument(action.get("command") if isinstance(action, dict) else None), ts)
        elif kind == "web_search_call":
            self._tool("web_search", _argument(payload.get("action")), ts)
        elif kind in ("function_call_output", "custom_tool_call_output", "local_shell_call_output"):
            self.session.add("tool", truncate(_output_text(payload.get("output")), self.limit), ts)
        elif kind in _SKIPPED_ITEMS:
            return
        else:
            self.notes.unknown_type(f"response_item {kind}", where)

    def _tool(self, name: str, argument: str, ts: str | None) -> None:
        """A tool call joins the assistant turn it follows, else starts one."""
        line = tool_line(name, argument)
        last = self.session.turns[-1] if self.session.turns else None
        if last is not None and last.role == "assistant":
            last.parts.append(line)
        else:
            self.session.add("assistant", line, ts)

    # -- events

    def _event(self, payload: dict[str, object], ts: str | None) -> None:
        kind = payload.get("type")
        if kind == "user_message":
            self._text("event", "user", text_field(payload, "message") or "", ts)
        elif kind == "agent_message":
            self._text("event", "assistant", text_field(payload, "message") or "", ts)

    def _text(self, source: str, role: str, text: str, ts: str | None) -> None:
        """Keep a prompt or reply once, whichever of the item and the event wrote it first."""
        text = text.strip()
        if not text or (role == "user" and text.startswith(_INJECTED)):
            return
        key = _SPACES.sub(" ", text)
        other = "event" if source == "item" else "item"
        twins = self.unmatched.get((other, role, key))
        if twins:
            twins.pop(0)
            return
        turn = self.session.add(role, text, ts)
        if turn is not None:
            self.unmatched.setdefault((source, role, key), []).append(turn)


def _content_text(content: object) -> str:
    """A message item's text: its ``input_text``/``output_text`` parts; an image part is ``[image]``."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for part in content:
        if isinstance(part, dict):
            if isinstance(part.get("text"), str):
                parts.append(str(part["text"]))
            elif part.get("type") in ("input_image", "image"):
                parts.append("[image]")
    return "\n".join(parts)


def _argument(value: object) -> str:
    """A call's arguments (a JSON string for function calls) → its most telling value."""
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        value = decoded
    if isinstance(value, list) and len(value) >= 3 and value[1] in ("-lc", "-c") and isinstance(value[-1], str):
        return value[-1]  # ["bash", "-lc", "the command"]
    if isinstance(value, dict) and isinstance(value.get("command"), list):
        command = value["command"]
        if len(command) >= 3 and command[1] in ("-lc", "-c") and isinstance(command[-1], str):
            return str(command[-1])
    return argument_of(value, _ARGUMENT_KEYS)


def _output_text(output: object) -> str:
    """A tool output: plain text, ``{"output": ...}`` JSON in a string, or a list of content parts."""
    if isinstance(output, str):
        try:
            decoded = json.loads(output)
        except ValueError:
            return output
        if isinstance(decoded, dict) and isinstance(decoded.get("output"), str):
            return str(decoded["output"])
        return output
    if isinstance(output, dict) and isinstance(output.get("output"), str):
        return str(output["output"])
    return _content_text(output)


def _find_key(value: object, key: str) -> str | None:
    """A string under ``key`` anywhere in nested objects (where a build put the parent thread's id)."""
    if isinstance(value, dict):
        if isinstance(value.get(key), str):
            return str(value[key])
        for nested in value.values():
            found = _find_key(nested, key)
            if found:
                return found
    return None
