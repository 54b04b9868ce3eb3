"""Mutated Claude Code and Codex logs: an import report or an error naming the input, never a crash."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memoryd.errors import MemorydError
from memoryd.exports.claude_code import import_claude_code
from memoryd.exports.codex import import_codex
from memoryd.formats import parse_conversation
from memoryd.summaries import parse_summary_folder
from tests.exports.session_helpers import CLAUDE_CODE, CODEX

_LOGS = {
    "claude-code": [path.read_bytes().splitlines() for path in sorted(CLAUDE_CODE.rglob("*.jsonl"))],
    "codex": [path.read_bytes().splitlines() for path in sorted(CODEX.rglob("*.jsonl"))],
}
_COUNTER = itertools.count()

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.sampled_from(["\ud83d", "\x00", "-1"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
_KEYS = st.sampled_from(
    [
        "type",
        "message",
        "content",
        "payload",
        "uuid",
        "parentUuid",
        "isSidechain",
        "isMeta",
        "isCompactSummary",
        "toolUseResult",
        "timestamp",
        "cwd",
        "sessionId",
        "id",
        "role",
        "text",
        "summary",
        "leafUuid",
        "arguments",
        "output",
        "action",
        "git",
        "name",
        "input",
        "tool_use_id",
        "phase",
        "message_id",
    ]
)


def _mutate_value(value: object, key: str, new: object) -> object:
    """Put ``new`` under ``key`` at every level where ``key`` appears, and at the top."""
    if isinstance(value, dict):
        mutated = {k: _mutate_value(v, key, new) for k, v in value.items()}
        if key in mutated or not value:
            mutated[key] = new
        return mutated
    if isinstance(value, list):
        return [_mutate_value(item, key, new) for item in value]
    return value


@st.composite
def mutated_line(draw: st.DrawFn, line: bytes) -> bytes:
    kind = draw(st.sampled_from(["keep", "keep", "drop", "cut", "bytes", "value", "retype"]))
    if kind == "keep":
        return line
    if kind == "drop":
        return b""
    if kind == "cut":
        return line[: draw(st.integers(0, max(0, len(line) - 1)))]
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    record = json.loads(line)
    if kind == "retype":
        new: object = draw(st.sampled_from(["user", "assistant", "summary", "response_item", "event_msg", "x"]))
        return json.dumps(_mutate_value(record, "type", new)).encode()
    return json.dumps(_mutate_value(record, draw(_KEYS), draw(_JSON))).encode()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150, deadline=None)
@given(source=st.sampled_from(sorted(_LOGS)), data=st.data())
def test_session_import_fuzz(tmp_path: Path, source: str, data: st.DataObject) -> None:
    """Every mutated log gives a report or a MemorydError; every folder and summary file written parses."""
    lines = data.draw(st.sampled_from(_LOGS[source]))
    mutated = [data.draw(mutated_line(line)) for line in lines]
    run = next(_COUNTER)
    log = tmp_path / f"in{run}" / ("-p-app" if source == "claude-code" else "2026") / f"rollout-s{run}.jsonl"
    log.parent.mkdir(parents=True)
    log.write_bytes(b"\n".join(mutated) + b"\n")
    out, summaries = tmp_path / f"out{run}", tmp_path / f"sum{run}"
    importer = import_claude_code if source == "claude-code" else import_codex
    try:
        report = importer(log.parent.parent, out, summaries)
    except MemorydError:
        return
    written = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert written == sorted(report.created)
    for slug in written:
        assert parse_conversation(out / slug).messages
        if (summaries / slug).exists():
            assert all(isinstance(result, list) for result in parse_summary_folder(summaries / slug).values())
