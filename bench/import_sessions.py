"""`memoryd import claude-code` on 1,000 generated sessions, then a no-change re-import.

Sessions: ``--sessions`` Claude Code logs spread over 20 project folders,
each ``--turns`` exchanges long: a prompt, a reply written as two lines
sharing ``message.id`` (text, then a tool call), its tool result, a closing
reply, plus the bookkeeping records real logs carry (snapshots, progress).
Every tenth session has a 2.1 sub-agent file.  Baseline, in the same
process: ``json.loads`` of every line of the same files, the least any
reader of these logs can cost.  Printed: seconds and the ratio to the
baseline for the first import (writes every folder) and the re-import
(must write nothing: files compared by bytes and mtimes).

    .venv/bin/python -m bench.import_sessions [--sessions 1000] [--turns 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench._common import timed
from memoryd.config import LogConfig
from memoryd.exports.claude_code import import_claude_code
from memoryd.log import configure_logging


def write_sessions(root: Path, sessions: int, turns: int) -> int:
    """Generate the logs; returns the number of lines written."""
    lines = 0
    for n in range(sessions):
        session = f"{n:08x}-0000-4000-8000-000000000000"
        project = root / f"-home-me-code-project{n % 20}"
        records = _session(session, n, turns)
        lines += _write(project / f"{session}.jsonl", records)
        if n % 10 == 0:
            agent = [{**r, "isSidechain": True, "agentId": f"a{n}"} for r in _session(session, n + 1, 3)]
            lines += _write(project / session / "subagents" / f"agent-a{n}.jsonl", agent)
    return lines


def _session(session: str, n: int, turns: int) -> list[dict[str, object]]:
    base = {"sessionId": session, "cwd": f"/home/me/code/project{n % 20}", "version": "2.1.12", "gitBranch": "main"}
    records: list[dict[str, object]] = []
    for t in range(turns):
        ts = f"2026-03-{1 + n % 28:02d}T10:{t // 60:02d}:{t % 60:02d}.000Z"
        uid = f"{session[:8]}-{t}"
        records += [
            {"type": "file-history-snapshot", "messageId": f"{uid}-u", "snapshot": {"trackedFileBackups": {}}},
            {
                **base,
                "type": "user",
                "uuid": f"{uid}-u",
                "timestamp": ts,
                "message": {
                    "role": "user",
                    "content": f"Session {n} step {t}: refactor module {t} of the billing code.",
                },
            },
            {
                **base,
                "type": "assistant",
                "uuid": f"{uid}-a1",
                "timestamp": ts,
                "message": {
                    "id": f"msg_{uid}",
                    "role": "assistant",
                    "content": [{"type": "text", "text": f"Reading module {t} first; it holds the invoice rounding."}],
                },
            },
            {
                **base,
                "type": "assistant",
                "uuid": f"{uid}-a2",
                "timestamp": ts,
                "message": {
                    "id": f"msg_{uid}",
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": f"toolu_{uid}",
                            "name": "Read",
                            "input": {"file_path": f"src/m{t}.py"},
                        }
                    ],
                },
            },
            {**base, "type": "progress", "uuid": f"{uid}-p", "data": {"type": "hook_progress"}},
            {
                **base,
                "type": "user",
                "uuid": f"{uid}-r",
                "timestamp": ts,
                "message": {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": f"toolu_{uid}",
                            "content": "def total():\n    pass\n" * 150,
                        }
                    ],
                },
                "toolUseResult": {"type": "text"},
            },
            {
                **base,
                "type": "assistant",
                "uuid": f"{uid}-a3",
                "timestamp": ts,
                "message": {
                    "id": f"msg_{uid}b",
                    "role": "assistant",
                    "content": [{"type": "text", "text": f"Module {t} now rounds once, at the end."}],
                },
            },
        ]
    return records


def _write(path: Path, records: list[dict[str, object]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records), encoding="utf-8")
    return len(records)


def parse_only(root: Path) -> int:
    """The baseline: every line of every log decoded, nothing else."""
    records = 0
    for path in sorted(root.rglob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            json.loads(line)
            records += 1
    return records


def files(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args()
    configure_logging(LogConfig(level="warning"))
    with tempfile.TemporaryDirectory(prefix="memoryd-bench-sessions-") as tmp:
        root = Path(tmp)
        logs = root / "projects"
        lines = write_sessions(logs, args.sessions, args.turns)
        size = sum(p.stat().st_size for p in logs.rglob("*.jsonl"))
        parse_only(logs)  # warm the page cache, so both sides read from memory
        with timed() as t_parse:
            parse_only(logs)
        conversations, summaries = root / "conversations", root / "summaries"
        with timed() as t_first:
            first = import_claude_code(logs, conversations, summaries)
        before = files(root / "conversations")
        with timed() as t_again:
            again = import_claude_code(logs, conversations, summaries)
        unchanged = files(root / "conversations") == before
    base = t_parse[0]
    print(f"{args.sessions} Claude Code sessions, {lines} lines, {size / 1e6:.1f} MB")
    print(f"  baseline json.loads of every line : {base:7.2f} s")
    print(
        f"  first import                      : {t_first[0]:7.2f} s  ({t_first[0] / base:.1f}x baseline)"
        f"  {len(first.created)} folders created, {len(first.errors)} errors"
    )
    print(
        f"  no-change re-import               : {t_again[0]:7.2f} s  ({t_again[0] / base:.1f}x baseline)"
        f"  {len(again.created) + len(again.updated)} written, files untouched: {unchanged}"
    )


if __name__ == "__main__":
    main()
