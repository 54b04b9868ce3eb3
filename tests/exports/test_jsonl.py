"""Chat datasets (one conversation per line, OpenAI chat or ShareGPT shape) → conversation folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memoryd.errors import ParseError
from memoryd.exports import import_jsonl
from memoryd.formats import parse_conversation

DATASET = Path(__file__).parent.parent / "fixtures" / "datasets" / "chat.jsonl"
SLUGS = [
    "undated__bonjour_comment_faire_une_pâte_à_crêpes",
    "undated__summarize_the_main_ideas_of_jeff_walker_s_product_launch_formula",
    "undated__what_is_the_weather_like_in_boston_today",
    "undated__what_s_the_capital_of_france",
]


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root with its bytes and mtime: any write shows."""
    return {
        str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_dataset_lines_become_folders(tmp_path: Path) -> None:
    """Each line is a folder: roles and texts as in the line, meta.json names the file, the id and a title."""
    out = tmp_path / "conversations"
    report = import_jsonl(DATASET, out)
    assert (report.conversations, sorted(report.created), report.errors) == (4, SLUGS, [])
    sharegpt = out / SLUGS[1]
    assert json.loads((sharegpt / "meta.json").read_text(encoding="utf-8")) == {
        "source": "jsonl",
        "source_id": "chat.jsonl#QWJhYvA_0",
        "title": "Summarize the main ideas of Jeff Walker's Product Launch Formula.",
    }
    conversation = parse_conversation(sharegpt)
    assert conversation.title == "Summarize the main ideas of Jeff Walker's Product Launch Formula."
    assert [m.role for m in conversation.messages] == ["user", "assistant", "user", "assistant"]
    assert conversation.messages[-1].content == "Build anticipation, then launch."
    tools = parse_conversation(out / SLUGS[2])
    assert [(m.role, m.content) for m in tools.messages] == [
        ("user", "What is the weather like in Boston today?"),
        ("assistant", '[tool: get_current_weather] {"location": "Boston, MA"}'),
        ("tool", '{"temperature": "22", "unit": "celsius"}'),
        ("assistant", "It is 22 °C in Boston today."),
    ]
    meta = json.loads((out / SLUGS[2] / "meta.json").read_text(encoding="utf-8"))
    assert meta["source_id"].startswith("sha256:")
    assert [m.role for m in parse_conversation(out / SLUGS[3]).messages] == ["system", "user", "assistant"]


def test_second_import_changes_nothing(tmp_path: Path) -> None:
    """Importing the same dataset twice leaves every file, bytes and mtimes, as it was."""
    out = tmp_path / "conversations"
    import_jsonl(DATASET, out)
    before = tree(out)
    again = import_jsonl(DATASET, out)
    assert (again.created, again.updated, sorted(again.unchanged)) == ([], [], SLUGS)
    assert tree(out) == before


def test_edited_record_with_an_id_is_updated_in_place(tmp_path: Path) -> None:
    """A record with an id that changed in a newer dataset replaces its folder's conversation.json, same slug."""
    out = tmp_path / "conversations"
    import_jsonl(DATASET, out)
    lines = DATASET.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[0])
    record["conversations"].append({"from": "human", "value": "Merci."})
    newer = tmp_path / "chat.jsonl"
    newer.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n", encoding="utf-8")
    report = import_jsonl(newer, out)
    assert (report.created, report.updated) == ([], [SLUGS[1]])
    assert parse_conversation(out / SLUGS[1]).messages[-1].content == "Merci."


def test_broken_lines_are_reported_from_1_and_the_rest_imported(tmp_path: Path) -> None:
    """Bad JSON, a non-conversation and a bad turn are listed with their line number; good lines still import."""
    good = DATASET.read_text(encoding="utf-8").splitlines()[1]
    dataset = tmp_path / "mixed.jsonl"
    dataset.write_text(
        "\n".join(
            [
                good,
                '{"messages": [{"role": "user", "content": "cut',
                "",
                '{"text": "not a chat"}',
                '{"conversations": [{"from": "narrator", "value": "x"}]}',
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    report = import_jsonl(dataset, tmp_path / "out")
    assert report.created == [SLUGS[3]]
    assert report.errors == [
        "line 2: invalid JSON: Unterminated string starting at (column 43)",
        "line 4: an object with keys 'text', not a conversation: expected"
        ' {"messages": [...]} (OpenAI chat) or {"conversations": [...]} (ShareGPT)',
        "line 5: conversations[0]: from: unknown speaker 'narrator' (expected human, gpt or system)",
    ]


def test_a_messages_file_is_not_a_dataset(tmp_path: Path) -> None:
    """A file of one message per line is refused before anything is written, naming the shape and the remedy."""
    messages = tmp_path / "messages.jsonl"
    messages.write_text('{"role": "user", "content": "hi"}\n{"role": "assistant", "content": "hello"}\n')
    with pytest.raises(ParseError) as info:
        import_jsonl(messages, tmp_path / "out")
    assert info.value.reason == (
        "line 1: an object with keys 'role', 'content', not a conversation: this file holds one message per line;"
        " put it in a conversation folder as messages.jsonl"
    )
    assert not any((tmp_path / "out").iterdir())


def test_cli_import_jsonl(tmp_path: Path) -> None:
    """`memoryd import jsonl FILE` writes the folders, prints the counts and exits 0; 1 when a line is damaged."""
    (tmp_path / "config.toml").write_text(
        '[paths]\nconversations = "conversations"\nsummaries = "summaries"\n', encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMORYD_")}

    def run(path: Path) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "memoryd.cli", "--config", "config.toml", "import", "jsonl", str(path)]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)

    result = run(DATASET)
    assert result.returncode == 0, result.stderr
    assert "4 new, 0 updated, 0 unchanged, 0 skipped, 0 damaged" in result.stdout
    assert sorted(p.name for p in (tmp_path / "conversations").iterdir()) == SLUGS
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text("{oops\n", encoding="utf-8")
    result = run(damaged)
    assert result.returncode == 1
    assert result.stderr == (
        "  error: line 1: invalid JSON: Expecting property name enclosed in double quotes (column 2)\n"
    )
