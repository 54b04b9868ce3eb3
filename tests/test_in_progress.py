"""A transcript still being written: its complete part is stored, marked in progress, never reported as broken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memoryd import store
from memoryd.config import Config
from memoryd.db import Database
from memoryd.errors import ParseError
from memoryd.formats import parse_conversation
from memoryd.sync import Syncer

LINES = [json.dumps({"role": "user", "content": f"message {n}"}) for n in range(3)]


def _folder(root: Path, text: str, slug: str = "2025-12-01__being_written") -> Path:
    folder = root / slug
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "messages.jsonl").write_text(text, encoding="utf-8")
    return folder


def test_unterminated_unreadable_last_line_is_not_yet_written(tmp_path: Path) -> None:
    """A last line cut mid-object and without its newline leaves the complete lines, marked in progress."""
    conv = parse_conversation(_folder(tmp_path, "\n".join(LINES[:2]) + "\n" + LINES[2][:15]))
    assert [m.content for m in conv.messages] == ["message 0", "message 1"]
    assert conv.in_progress and conv.warnings == ()


def test_unterminated_readable_last_line_is_a_message(tmp_path: Path) -> None:
    """A complete last object without a trailing newline is a message, and the transcript is complete."""
    conv = parse_conversation(_folder(tmp_path, "\n".join(LINES)))
    assert len(conv.messages) == 3 and not conv.in_progress


def test_broken_terminated_line_is_still_an_error(tmp_path: Path) -> None:
    """The same cut text on a line that has its newline is an error naming the line."""
    with pytest.raises(ParseError, match="invalid JSON") as caught:
        parse_conversation(_folder(tmp_path, LINES[0] + "\n" + LINES[1][:15] + "\n" + LINES[2] + "\n"))
    assert caught.value.line == 2 and not caught.value.in_progress


def test_first_line_not_yet_written_is_in_progress_not_broken(tmp_path: Path) -> None:
    """A file holding only the start of its first line raises a ParseError flagged in_progress."""
    with pytest.raises(ParseError) as caught:
        parse_conversation(_folder(tmp_path, LINES[0][:10]))
    assert caught.value.in_progress


def test_sync_marks_in_progress_and_clears_it_when_complete(config: Config, db: Database) -> None:
    """A sync of a half-written transcript records no error and marks the slug; the complete file clears the mark."""
    syncer = Syncer(db, config)
    folder = _folder(config.paths.conversations, LINES[0] + "\n" + LINES[1][:12])
    slug = folder.name
    syncer.sync_slug(slug)
    status = db.run(store.stats, config.embedding.model)
    assert status["in_progress"] == [slug]
    assert status["problems"] == []
    assert status["messages"] == 1
    (folder / "messages.jsonl").write_text("\n".join(LINES) + "\n", encoding="utf-8")
    assert syncer.reconcile().synced == 1
    status = db.run(store.stats, config.embedding.model)
    assert status["in_progress"] == [] and status["problems"] == [] and status["messages"] == 3
