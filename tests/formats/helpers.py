"""Conversation folders written for the format tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memoryd.errors import ParseError
from memoryd.formats import parse_conversation

FIXTURES = Path(__file__).parent.parent / "fixtures"
SLUG = "2025-06-25__orage_codé_textuel"

BASIC_MD = "## User\nHello\n\n## Assistant\nHi!\n"


def make_folder(tmp_path: Path, files: dict[str, str | bytes], slug: str = SLUG) -> Path:
    folder = tmp_path / slug
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content.encode("utf-8") if isinstance(content, str) else content
        (folder / name).write_bytes(data)
    return folder


def jsonl(*objects: object) -> str:
    return "".join(json.dumps(obj, ensure_ascii=False) + "\n" for obj in objects)


def parse_error(folder: Path) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_conversation(folder)
    return info.value


def fixture_folder(tmp_path: Path, *sources: Path, slug: str = SLUG) -> Path:
    """A conversation folder holding copies of fixture files."""
    return make_folder(tmp_path, {source.name: source.read_bytes() for source in sources}, slug=slug)


def export_conversation(source: str, index: int) -> dict[str, object]:
    """One conversation of a fixture export (tests/fixtures/<source>/conversations.json)."""
    value = json.loads((FIXTURES / source / "conversations.json").read_text(encoding="utf-8"))[index]
    assert isinstance(value, dict)
    return value
