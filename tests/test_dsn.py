"""A malformed or wrong DSN: a configuration error (exit 2) naming the key, never the password, never retried."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from memoryd.config import Config, DatabaseConfig, load_config
from memoryd.daemon import Daemon
from memoryd.db import Database, RetryPolicy
from memoryd.dsn import redact_dsn
from memoryd.errors import ConfigError
from tests.test_cli import clean_environment, run_memoryd

SECRET = "SECRETPW"

# Each one was seen to crash with a traceback quoting the password, or to be retried as an outage.
HOSTILE_DSNS = [
    f"postgres://u:{SECRET}@[::1:1/x",  # unterminated IPv6 host
    f"postgresql://u:{SECRET}%zzPW@127.0.0.1:1/x",  # bad percent-encoding inside the password
    f"postgresql://u:{SECRET}@127.0.0.1:notaport/x",  # a port that is not a number
    f"postgresql://u:{SECRET}/x",  # a forgotten @host: the password parses as the port
    f"host=127.0.0.1 password={SECRET} sslmode=sometimes",  # a mode libpq checks only when connecting
    f"host=127.0.0.1 password{SECRET}",  # a missing =
]


@pytest.mark.parametrize("dsn", HOSTILE_DSNS)
@pytest.mark.parametrize("command", ["watch", "status"])
def test_hostile_dsn_exits_2_without_the_password(tmp_path: Path, dsn: str, command: str) -> None:
    """`memoryd watch|status` with a malformed MEMORYD_DSN exits 2 naming the key, and no output holds the password."""
    (tmp_path / "config.toml").write_text("", encoding="utf-8")
    env = clean_environment() | {"MEMORYD_CONFIG": str(tmp_path / "config.toml"), "MEMORYD_DSN": dsn}
    result = run_memoryd([command], cwd=tmp_path, env=env, timeout=60)
    assert SECRET not in result.stdout + result.stderr
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("memoryd: configuration error: [database] dsn (MEMORYD_DSN)"), result.stderr
    assert "Traceback" not in result.stderr


def test_non_numeric_port_is_a_configuration_error_not_an_outage() -> None:
    """A DSN whose port is `notaport` fails to load, naming [database] dsn, instead of waiting for a database."""
    with pytest.raises(ConfigError, match=r"^\[database\] dsn: port must be a number from 1 to 65535$"):
        load_config(environ={"MEMORYD_DATABASE_DSN": "postgresql://u:pw@127.0.0.1:notaport/x"})


def test_daemon_with_a_wrong_dsn_stops_at_once(tmp_path: Path) -> None:
    """The daemon given a Config with a bad port raises ConfigError at once instead of retrying forever."""
    config = Config(database=DatabaseConfig(dsn="postgresql://u:pw@127.0.0.1:notaport/x", data_dir=tmp_path / "pg"))
    outcome: list[BaseException] = []

    def target() -> None:
        try:
            Daemon(config, embedder_factory=lambda: None).run()
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the daemon retried a configuration error"
    assert len(outcome) == 1 and isinstance(outcome[0], ConfigError)


def test_option_rejected_by_libpq_at_connect_is_not_retried() -> None:
    """A value only libpq rejects when connecting surfaces as ConfigError after one try, not as an outage."""
    calls = 0

    def connect() -> None:
        nonlocal calls
        calls += 1
        # Past check_dsn (a Database would refuse it): libpq itself says "invalid integer value".
        psycopg.connect("postgresql://u@127.0.0.1:notaport/x", connect_timeout=2).close()

    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"^\[database\] dsn: invalid integer value"):
        RetryPolicy(deadline_s=20.0, initial_wait_s=0.5).call(connect)
    assert calls == 1
    assert time.monotonic() - started < 20


def test_database_refuses_a_malformed_dsn_built_in_code(tmp_path: Path) -> None:
    """Database() checks a DSN that did not come through load_config, without quoting it."""
    with pytest.raises(ConfigError) as caught:
        Database(DatabaseConfig(dsn=f"postgresql://u:{SECRET}%zz@h/x", data_dir=tmp_path))
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        (f"host=h password='{SECRET} two' user=x", "host=h password=*** user=x"),
        (f"postgresql://u@h/x?password={SECRET}&sslmode=require", "postgresql://u@h/x?password=***&sslmode=require"),
        (f"postgres://u:{SECRET}@[::1:1/x", "<invalid dsn>"),
    ],
)
def test_redact_dsn_hides_quoted_and_query_passwords(dsn: str, shown: str) -> None:
    """A quoted key=value password, a ?password= parameter and an unparseable DSN are all redacted whole."""
    assert redact_dsn(dsn) == shown
