"""Codex session logs (0.58, 0.94, 0.128) → conversation folders: twins merged, context left out, compactions."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from memoryd.errors import ParseError
from memoryd.exports.codex import import_codex
from memoryd.exports.importer import ImportReport
from tests.exports.session_helpers import CODEX, compactions, messages, meta, write_log

V058 = "2025-11-14__weather_temperatures_show_in_kelvin_on_the_dashboard_convert_to"
V094 = "2026-01-20__invoices_which_invoices_are_overdue"
V0128 = "2026-05-08__weather_is_open_meteo_still_free_for_commercial_use"


def run(tmp_path: Path, source: Path) -> ImportReport:
    return import_codex(source, tmp_path / "conversations", tmp_path / "summaries")


def test_v0_58_item_and_event_twins_merged(tmp_path: Path) -> None:
    """0.58: a prompt or reply written as both item and event is one turn; AGENTS.md and environment are not prompts."""
    report = run(tmp_path, CODEX / "v0.58")
    assert report.created == [V058] and report.warnings == []
    turns = messages(tmp_path / "conversations", V058)
    assert turns[0] == ("user", "Temperatures show in Kelvin on the dashboard. Convert to Celsius.")
    assert turns[1] == ("assistant", "[tool: shell] rg -n 'kelvin' src/")
    assert turns[2] == ("tool", "src/format.ts:8:  return `${t.kelvin} K`;")
    assert turns[3][1].startswith(
        "The dashboard prints the raw Kelvin value in src/format.ts. I'll convert it there.\n"
        "[tool: apply_patch] *** Begin Patch *** Update File: src/format.ts"
    )
    assert turns[4] == ("tool", "Success. Updated the following files:\nM src/format.ts")
    assert turns[5] == ("assistant", "Converted: src/format.ts now shows °C with one decimal.")
    assert len(turns) == 6


def test_v0_58_meta(tmp_path: Path) -> None:
    """meta.json holds the session id, cwd, git branch and CLI version from session_meta."""
    run(tmp_path, CODEX / "v0.58")
    found = meta(tmp_path / "conversations", V058)
    assert found["source"] == "codex"
    assert found["session_id"] == found["source_id"] == "019a6f3e-1c2b-7d4e-9f80-a1b2c3d4e5f6"
    assert (found["cwd"], found["git_branch"], found["version"]) == ("/home/li/src/weather", "fix/units", "0.58.0")
    assert found["created_date"] == "2025-11-14"


def test_v0_94_events_only_prompts_items_only_replies(tmp_path: Path) -> None:
    """A build writing prompts only as events and replies only as items keeps both; a repeated prompt stays twice."""
    run(tmp_path, CODEX / "v0.94")
    assert messages(tmp_path / "conversations", V094) == [
        ("user", "Which invoices are overdue?"),
        ("assistant", "[tool: exec_command] python scripts/overdue.py --today 2026-01-20"),
        ("tool", "INV-0042 due 2026-01-02\nINV-0057 due 2026-01-15"),
        ("assistant", "Two: INV-0042 (due 2 January) and INV-0057 (due 15 January)."),
        ("user", "continue"),
        ("assistant", "Drafted reminder emails for both in drafts/."),
        ("user", "continue"),
        ("assistant", "Nothing left to do: both reminders are drafted."),
    ]


def test_v0_128_phases_web_search_compaction(tmp_path: Path) -> None:
    """0.128: commentary and final answers are assistant text, web_search_call a tool line, compacted a summary."""
    report = run(tmp_path, CODEX / "v0.128")
    assert report.warnings == []
    assert messages(tmp_path / "conversations", V0128) == [
        ("user", "Is Open-Meteo still free for commercial use?"),
        ("assistant", "Checking their current terms.\n[tool: web_search] Open-Meteo commercial use pricing"),
        ("assistant", "No: the free tier is for non-commercial use; commercial use needs an API subscription."),
        ("user", "Then switch the client to MET Norway."),
        ("assistant", "[tool: exec_command] sed -n 1,40p src/client.ts"),
        ("tool", "export const BASE = 'https://api.open-meteo.com/v1';"),
        ("assistant", "Switched BASE to api.met.no with the required User-Agent header."),
    ]
    [compaction] = compactions(tmp_path / "summaries", V0128)
    assert compaction["covers"] == [0, 1, 2] and compaction["content"].startswith("Li asked whether Open-Meteo")


def test_unknown_types_warned_once(tmp_path: Path) -> None:
    """Unknown record and item types are skipped with one warning per type; the rest is imported."""
    log = tmp_path / "sessions" / "rollout-2026-02-01T00-00-00-abc.jsonl"
    line = {"timestamp": "2026-02-01T00:00:00Z"}
    write_log(
        log,
        [
            {**line, "type": "session_meta", "payload": {"id": "abc", "cwd": "/p/app", "cli_version": "0.200.0"}},
            {**line, "type": "event_msg", "payload": {"type": "user_message", "message": "ping"}},
            {**line, "type": "response_item", "payload": {"type": "teleport_call", "call_id": "c1"}},
            {**line, "type": "response_item", "payload": {"type": "teleport_call", "call_id": "c2"}},
            {**line, "type": "weather_report", "payload": {}},
            {**line, "type": "response_item", "payload": {"type": "message", "role": "assistant", "content": "pong"}},
        ],
    )
    with capture_logs() as logs:
        report = run(tmp_path, log.parent)
    assert messages(tmp_path / "conversations", report.created[0]) == [("user", "ping"), ("assistant", "pong")]
    assert sorted(e["record_type"] for e in logs if e["event"] == "session_record_unknown") == [
        "response_item teleport_call",
        "weather_report",
    ]
    assert any("'response_item teleport_call' skipped (2 record(s)" in w for w in report.warnings)


def test_no_rollout(tmp_path: Path) -> None:
    """A folder without any rollout file is an error naming it."""
    with pytest.raises(ParseError, match="no Codex session log"):
        run(tmp_path, tmp_path)
