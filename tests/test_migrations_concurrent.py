"""Migrations taken by several machines at once: the advisory lock, across real processes.

Each machine is a process of its own (`memoryd init`, or a bare
apply_migrations), started together on one database; a daemon may be
running on it meanwhile.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from memoryd.config import Config
from memoryd.db import migrations_dir
from tests.conftest import write_conversation
from tests.daemon_helpers import fast_config, running_daemon, wait_for
from tests.test_cli import clean_environment, make_cli, memoryd_command

PROCESSES = 4

# Another machine's newer memoryd: one more migration, which rewrites a table the daemon writes to.
EXTRA_MIGRATION = """\
ALTER TABLE conversations ADD COLUMN migrated_elsewhere TEXT;
CREATE TABLE other_machine_was_here (id INT);
"""

APPLY = """\
import sys
from collections.abc import Iterator
from pathlib import Path
import psycopg
from memoryd.db import apply_migrations
with psycopg.connect(sys.argv[1]) as conn:
    print(",".join(apply_migrations(conn, Path(sys.argv[2]))))
"""


def _versions(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def _events(stderr: str, name: str) -> list[dict[str, Any]]:
    """The JSON log events called ``name`` in one process's stderr."""
    found = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                found.append(event)
    return found


def test_concurrent_inits_apply_each_migration_once(tmp_path: Path, empty_dsn: str) -> None:
    """Four `memoryd init` started together on an empty database all exit 0; each migration is applied by one."""
    cli = make_cli(tmp_path, empty_dsn)
    env = clean_environment() | {"MEMORYD_CONFIG": str(cli.config_path), "MEMORYD_DSN": empty_dsn}
    processes = [
        subprocess.Popen(
            [*memoryd_command(), "-v", "init"],
            cwd=cli.cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        results.append((process.returncode, out, err))
    assert [code for code, _, _ in results] == [0] * PROCESSES, [err[-2000:] for _, _, err in results]
    expected = sorted(path.stem for path in migrations_dir().glob("[0-9][0-9][0-9]_*.sql"))
    applied = sorted(event["version"] for _, _, err in results for event in _events(err, "migration_applied"))
    assert applied == expected, "each migration applied by exactly one process"
    assert _versions(empty_dsn) == expected


@pytest.mark.slow
def test_migrating_from_another_process_while_the_daemon_runs(
    config: Config, db_dsn: str, embedder: Any, tmp_path: Path
) -> None:
    """Two processes migrate (a new column on conversations) while a daemon ingests; all succeed, it goes on."""
    newer = tmp_path / "newer-sql"
    shutil.copytree(migrations_dir(), newer)
    (newer / "900_other_machine.sql").write_text(EXTRA_MIGRATION, encoding="utf-8")
    config = fast_config(config)

    def stored(slug: str) -> bool:
        with psycopg.connect(db_dsn) as conn:
            return conn.execute("SELECT 1 FROM conversations WHERE slug = %s", (slug,)).fetchone() is not None

    with running_daemon(config, embedder):
        write_conversation(config.paths.conversations, "2025-03-01__before", [("user", "before the migration")])
        migrators = [
            subprocess.Popen(
                [sys.executable, "-c", APPLY, db_dsn, str(newer)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outcomes = [(*process.communicate(timeout=300), process.returncode) for process in migrators]
        assert [code for _, _, code in outcomes] == [0, 0], [err[-2000:] for _, err, _ in outcomes]
        applied = sorted((out.strip().splitlines() or [""])[-1] for out, _, _ in outcomes)
        assert applied == ["", "900_other_machine"], "one process applied the new migration, the other nothing"
        wait_for(lambda: stored("2025-03-01__before"), timeout=120, what="the first conversation stored")
        write_conversation(config.paths.conversations, "2025-03-02__after", [("user", "after the migration")])
        wait_for(lambda: stored("2025-03-02__after"), timeout=120, what="a conversation stored after the migration")
        init = make_cli(tmp_path / "cli", db_dsn).run("init")
        assert init.returncode == 0, init.stderr
    versions = _versions(db_dsn)
    assert versions.count("900_other_machine") == 1
    assert versions == sorted(path.stem for path in newer.glob("*.sql"))
