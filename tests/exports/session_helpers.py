"""Helpers for the agent session log tests: read back what an import wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent.parent / "fixtures"
CLAUDE_CODE = FIXTURES / "claude_code"
CODEX = FIXTURES / "codex"


def messages(conversations: Path, slug: str) -> list[tuple[str, str]]:
    """(role, content) of every line of a written messages.jsonl."""
    lines = (conversations / slug / "messages.jsonl").read_text(encoding="utf-8").splitlines()
    return [(row["role"], row["content"]) for row in map(json.loads, lines)]


def meta(conversations: Path, slug: str) -> dict[str, Any]:
    value = json.loads((conversations / slug / "meta.json").read_text(encoding="utf-8"))
    assert isinstance(value, dict)
    return value


def compactions(summaries: Path, slug: str) -> list[dict[str, Any]]:
    path = summaries / slug / "compactions.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_log(path: Path, records: list[dict[str, Any]], *, mode: str = "w") -> Path:
    """Write (or append) JSONL records the way an agent does: one compact object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open(mode, encoding="utf-8") as stream:
        for record in records:
            stream.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    return path


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root with its bytes and mtime: any write shows."""
    return {
        str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }
