"""Claude Code session logs (1.0, 2.0, 2.1) → conversation folders: turns, sub-agents, compactions, odd records."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from memoryd.errors import ParseError
from memoryd.exports.claude_code import import_claude_code
from memoryd.exports.importer import ImportReport
from tests.exports.session_helpers import CLAUDE_CODE, compactions, messages, meta, write_log

V10_MAIN = "2025-07-02__shop_the_cart_total_is_off_by_one_cent_when_a_discount_applies_find"
V10_SIDE = "2025-07-02__shop_agent_list_every_place_in_shop_that_rounds_money_and_say_which"
V20_MAIN = "2025-11-10__atlas_add_vector_tiles_to_the_map_ask_me_before_choosing_a_tile"
V20_AGENT = "2025-11-10__atlas_agent_list_the_map_layers_in_web_map_and_how_each_is_loaded"
V21_MAIN = "2026-03-04__ledger_why_does_the_nightly_import_double_count_refunds"
V21_AGENT = "2026-03-04__ledger_agent_trace_how_refunds_flow_through_import_nightly_py"


def run(tmp_path: Path, source: Path) -> ImportReport:
    return import_claude_code(source, tmp_path / "conversations", tmp_path / "summaries")


def test_v1_0_turns(tmp_path: Path) -> None:
    """1.0: a slash command is a prompt, caveats and command output are not, one reply's lines are one turn."""
    report = run(tmp_path, CLAUDE_CODE / "v1.0")
    assert sorted(report.created) == sorted([V10_MAIN, V10_SIDE])
    assert report.warnings == [] and report.errors == []
    assert messages(tmp_path / "conversations", V10_MAIN) == [
        ("user", "/model opus"),
        ("user", "The cart total is off by one cent when a discount applies. Find why."),
        ("assistant", "I'll look at how the total is computed.\n[tool: Grep] def total"),
        ("tool", "shop/cart.py:41:    def total(self) -> Decimal:"),
        ("assistant", "[tool: Task] Find rounding calls"),
        ("tool", "Two places: cart.py uses ROUND_HALF_EVEN, discount.py uses ROUND_DOWN."),
        (
            "assistant",
            "The discount is rounded down before the total is rounded half-even, so the two roundings disagree"
            " by a cent.\nRound once, at the end: compute the discount unrounded.",
        ),
        ("user", "Do it, and add a test with 19.99 at 15%."),
        ("assistant", "Done: discount.py no longer rounds; test_cart.py covers 19.99 at 15% (total 16.99)."),
    ]


def test_v1_0_meta_and_inline_sidechain(tmp_path: Path) -> None:
    """1.0: meta.json holds source, session id, cwd, branch; an inline sidechain is its own linked conversation."""
    run(tmp_path, CLAUDE_CODE / "v1.0")
    conversations = tmp_path / "conversations"
    main = meta(conversations, V10_MAIN)
    assert main["source"] == "claude-code"
    assert main["session_id"] == main["source_id"] == "6f1c2a9e-3b4d-4e5f-8a7b-1c2d3e4f5a60"
    assert (main["cwd"], main["git_branch"], main["version"]) == ("/home/ana/code/shop", "main", "1.0.43")
    assert main["title"] == "Cart total rounding fix"  # the summary line whose leaf is in this file
    assert main["subagents"] == [V10_SIDE]
    side = meta(conversations, V10_SIDE)
    assert side["parent"] == V10_MAIN
    assert messages(conversations, V10_SIDE) == [
        ("user", "List every place in shop/ that rounds money and say which rounding mode it uses."),
        ("assistant", "[tool: Grep] quantize"),
        (
            "tool",
            "shop/cart.py:44: return (subtotal - discount).quantize(CENT, ROUND_HALF_EVEN)\n"
            "shop/discount.py:12: return (price * rate).quantize(CENT, ROUND_DOWN)",
        ),
        ("assistant", "Two places: cart.py uses ROUND_HALF_EVEN, discount.py uses ROUND_DOWN."),
    ]


def test_v2_0_turns(tmp_path: Path) -> None:
    """2.0: an AskUserQuestion answer is a user turn; thinking, notifications and interruptions are not turns."""
    report = run(tmp_path, CLAUDE_CODE / "v2.0")
    assert report.warnings == []
    turns = messages(tmp_path / "conversations", V20_MAIN)
    assert [role for role, _ in turns] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    assert turns[1] == ("assistant", "[tool: AskUserQuestion] Which tile server should the map use?")
    assert turns[2] == ("user", "Which tile server should the map use? → Martin")
    assert turns[5] == ("assistant", "[tool: Bash] npm run build \\ --workspace web")
    assert not any("task-notification" in text or "interrupted" in text or "asked first" in text for _, text in turns)


def test_v2_0_long_tool_result_truncated(tmp_path: Path) -> None:
    """A tool result longer than tool_result_chars is cut there, with a marker saying how much was left out."""
    import_claude_code(CLAUDE_CODE / "v2.0", tmp_path / "c", tmp_path / "s", tool_result_chars=100)
    build = messages(tmp_path / "c", V20_MAIN)[6][1]
    assert build.startswith("> atlas@1.4.0 build\nvite: transformed module 0")
    head, marker = build.rsplit("\n", 1)
    assert len(head) <= 100
    assert marker.startswith("[… truncated: ") and marker.endswith(" more characters]")


def test_v2_0_sibling_agent_file_and_warmup(tmp_path: Path) -> None:
    """2.0: a sibling agent-<id>.jsonl is a conversation linked to its session; a Warmup run is skipped, and said so."""
    report = run(tmp_path, CLAUDE_CODE / "v2.0")
    conversations = tmp_path / "conversations"
    assert sorted(report.created) == sorted([V20_MAIN, V20_AGENT])
    assert meta(conversations, V20_MAIN)["subagents"] == [V20_AGENT]
    agent = meta(conversations, V20_AGENT)
    assert (agent["parent"], agent["agent_id"]) == (V20_MAIN, "3f9a1c2e")
    assert [role for role, _ in messages(conversations, V20_AGENT)] == ["user", "assistant", "tool", "assistant"]
    assert len(report.skipped) == 1 and "agent-77aa01bc.jsonl: a Warmup run" in report.skipped[0]


def test_v2_1_subagents_folder_progress_and_compaction(tmp_path: Path) -> None:
    """2.1: subagents/ runs are linked conversations, progress copies are not turns, a compaction is a summary."""
    report = run(tmp_path, CLAUDE_CODE / "v2.1")
    conversations, summaries = tmp_path / "conversations", tmp_path / "summaries"
    assert sorted(report.created) == sorted([V21_MAIN, V21_AGENT])
    assert report.warnings == []
    turns = messages(conversations, V21_MAIN)
    assert turns == [
        ("user", "Why does the nightly import double-count refunds?"),
        ("assistant", "Let me have an agent trace the refund path.\n[tool: Task] Trace refunds"),
        ("tool", "Refunds are read twice: once from payments, once from adjustments."),
        ("user", "Keep only the adjustments source and backfill March."),
        ("assistant", "Removed the payments refund reader and queued a backfill for 2026-03-01 to 2026-03-04."),
    ]
    [compaction] = compactions(summaries, V21_MAIN)
    assert compaction["level"] == 1 and compaction["covers"] == [0, 1, 2]
    assert "counted twice" in compaction["content"]
    assert meta(conversations, V21_AGENT)["parent"] == V21_MAIN
    assert meta(conversations, V21_MAIN)["subagents"] == [V21_AGENT]


def test_one_file_imports_its_session(tmp_path: Path) -> None:
    """A sub-agent file given alone imports the session it belongs to, with all its runs."""
    agent_file = next((CLAUDE_CODE / "v2.1").rglob("subagents/*.jsonl"))
    report = run(tmp_path, agent_file)
    assert sorted(report.created) == sorted([V21_MAIN, V21_AGENT])


def test_unknown_record_type_warned_once(tmp_path: Path) -> None:
    """An unknown record type is skipped with one warning for all its records; the session is imported."""
    log = tmp_path / "logs" / "-home-me-app" / "s1.jsonl"
    prompt = {
        "type": "user",
        "uuid": "u1",
        "sessionId": "s1",
        "cwd": "/home/me/app",
        "timestamp": "2026-01-02T03:04:05Z",
    }
    write_log(
        log,
        [
            {**prompt, "message": {"role": "user", "content": "hello there"}},
            {"type": "hologram", "uuid": "h1"},
            {"type": "hologram", "uuid": "h2"},
            {"type": "assistant", "uuid": "a1", "message": {"id": "m1", "role": "assistant", "content": "hi"}},
        ],
    )
    with capture_logs() as logs:
        report = run(tmp_path, log.parent.parent)
    assert report.created == ["2026-01-02__app_hello_there"]
    assert messages(tmp_path / "conversations", "2026-01-02__app_hello_there") == [
        ("user", "hello there"),
        ("assistant", "hi"),
    ]
    assert [w for w in report.warnings if "hologram" in w] == [
        f"unknown record type 'hologram' skipped (2 record(s), first at {log}:2)"
    ]
    assert [e["record_type"] for e in logs if e["event"] == "session_record_unknown"] == ["hologram"]


def test_damaged_lines(tmp_path: Path) -> None:
    """A damaged line mid-file is reported and skipped; a last line cut mid-write waits without a word."""
    log = tmp_path / "logs" / "-home-me-app" / "s2.jsonl"
    write_log(
        log,
        [
            {
                "type": "user",
                "uuid": "u1",
                "timestamp": "2026-01-02T03:04:05Z",
                "message": {"role": "user", "content": "one"},
            },
        ],
    )
    with log.open("a", encoding="utf-8") as stream:
        stream.write('{"type": "user", "uuid": "u2", "mess\n')
        stream.write('{"type": "user", "uuid": "u3", "message": {"role": "user", "content": "two"}}\n')
        stream.write('{"type": "assistant", "uuid": "a1", "message": {"id": "m1", "role": "assis')
    report = run(tmp_path, log)
    assert messages(tmp_path / "conversations", report.created[0]) == [("user", "one"), ("user", "two")]
    assert report.warnings == [f"{log}:2: not a JSON line, skipped"]


def test_resumed_copies_read_once(tmp_path: Path) -> None:
    """Records repeated with the same uuid (a resumed session copies history) are read once."""
    record = {
        "type": "user",
        "uuid": "u1",
        "timestamp": "2026-01-02T03:04:05Z",
        "message": {"role": "user", "content": "same"},
    }
    log = write_log(tmp_path / "logs" / "-x-app" / "s3.jsonl", [record, record])
    report = run(tmp_path, log)
    assert messages(tmp_path / "conversations", report.created[0]) == [("user", "same")]


def test_missing_folder(tmp_path: Path) -> None:
    """A folder that does not exist, or holds no session log, is an error naming it."""
    with pytest.raises(ParseError, match="no such file or folder"):
        run(tmp_path, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParseError, match="no Claude Code session log"):
        run(tmp_path, tmp_path / "empty")
