"""[mirror]: the daemon mirrors agent session logs into conversation folders, with the real watcher."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
from structlog.testing import capture_logs

from memoryd.config import Config, MirrorConfig
from memoryd.mirror import SourceMirror
from tests.daemon_helpers import fast_config, running_daemon, wait_for
from tests.exports.session_helpers import write_log


def turn(n: int, session: str) -> dict[str, object]:
    """Line n of a Claude Code session: prompts on even lines, replies on odd ones."""
    base = {
        "uuid": f"{session}-{n}",
        "sessionId": session,
        "cwd": "/home/me/orchard",
        "timestamp": f"2026-04-02T09:00:{n:02d}Z",
    }
    if n % 2:
        return {
            **base,
            "type": "assistant",
            "message": {"id": f"m-{session}-{n}", "role": "assistant", "content": f"answer {n}"},
        }
    return {**base, "type": "user", "message": {"role": "user", "content": f"{session} question {n}"}}


def stored(dsn: str) -> dict[str, int]:
    """Stored conversations and their message counts."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT c.slug, count(m.id) FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id"
            " GROUP BY c.slug"
        ).fetchall()
    return {slug: count for slug, count in rows}


def test_daemon_mirrors_sessions(tmp_path: Path, config: Config, db_dsn: str, embedder: Any) -> None:
    """A session is stored at start, its appended lines update the same conversation, deleting the log keeps it."""
    projects = tmp_path / "claude" / "projects"
    log_a = write_log(projects / "-home-me-orchard" / "alpha.jsonl", [turn(0, "alpha"), turn(1, "alpha")])
    config = replace(fast_config(config), mirror=MirrorConfig(claude_code=projects))
    slug_a = "2026-04-02__orchard_alpha_question_0"
    slug_b = "2026-04-02__orchard_beta_question_0"
    with running_daemon(config, embedder):
        wait_for(lambda: stored(db_dsn) == {slug_a: 2}, timeout=60, what="the session stored at start")
        write_log(log_a, [turn(2, "alpha"), turn(3, "alpha")], mode="a")
        wait_for(lambda: stored(db_dsn) == {slug_a: 4}, timeout=60, what="appended lines stored")
        log_a.unlink()
        write_log(projects / "-home-me-orchard" / "beta.jsonl", [turn(0, "beta"), turn(1, "beta")])
        wait_for(lambda: slug_b in stored(db_dsn), timeout=60, what="a new session stored after the deletion")
        assert stored(db_dsn) == {slug_a: 4, slug_b: 2}
    assert (config.paths.conversations / slug_a / "messages.jsonl").is_file()


def test_mirror_without_sources_does_nothing(config: Config) -> None:
    """Without [mirror] the mirror watches nothing, starts no thread and writes nothing."""
    with capture_logs() as logs, SourceMirror(config) as mirror:
        assert mirror.mirror_all() == 0
        assert mirror.poll() == 0
    assert list(config.paths.conversations.iterdir()) == []
    assert logs == []


def test_mirror_missing_source_folder(tmp_path: Path, config: Config) -> None:
    """A [mirror] folder that does not exist (yet) is logged once and mirrored once it appears."""
    codex = tmp_path / "codex-sessions"
    config = replace(config, mirror=MirrorConfig(codex=codex))
    with capture_logs() as logs, SourceMirror(config) as mirror:
        assert mirror.mirror_all() == 0
        rollout = codex / "2026" / "04" / "02" / "rollout-2026-04-02T09-00-00-abc.jsonl"
        line = {"timestamp": "2026-04-02T09:00:00Z"}
        write_log(
            rollout,
            [
                {**line, "type": "session_meta", "payload": {"id": "abc", "cwd": "/p/orchard"}},
                {**line, "type": "event_msg", "payload": {"type": "user_message", "message": "prune the pears"}},
            ],
        )
        assert mirror.mirror_all() == 1
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["source_missing"]
    assert [p.name for p in config.paths.conversations.iterdir()] == ["2026-04-02__orchard_prune_the_pears"]


def test_rescan_reads_only_changed_logs(tmp_path: Path, config: Config) -> None:
    """A rescan reads only logs whose size or mtime changed; a folder deleted by hand returns when its log grows."""
    projects = tmp_path / "claude"
    log = write_log(projects / "-home-me-orchard" / "gamma.jsonl", [turn(0, "gamma"), turn(1, "gamma")])
    config = replace(config, mirror=MirrorConfig(claude_code=projects))
    folder = config.paths.conversations / "2026-04-02__orchard_gamma_question_0"
    with SourceMirror(config) as mirror:
        assert mirror.mirror_all() == 1
        shutil.rmtree(folder)
        assert mirror.mirror_all() == 0
        assert not folder.exists()
        write_log(log, [turn(2, "gamma")], mode="a")
        assert mirror.mirror_all() == 1
    assert folder.is_dir()
