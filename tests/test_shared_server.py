"""A shared server over TCP: libpq options passed through, sslmode, pgpass, passwords never shown.

Against a server of the tests' own that listens on 127.0.0.1 and asks for a
password (tests/tcp_server.py), through the real commands where the exit
code and the output matter.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import pq, sql

from memoryd.config import DatabaseConfig
from memoryd.db import Database, RetryPolicy
from memoryd.dsn import check_dsn, redact_dsn, split_password
from tests.conftest import write_conversation
from tests.tcp_server import PASSWORD, ROLE, TcpServer, tcp_server
from tests.test_cli import Cli, clean_environment, make_cli, memoryd_command

# Values that pass check_dsn for the options it checks itself; any other keyword gets "x".
_VALID = {
    "port": "5432",
    "sslmode": "prefer",
    "gssencmode": "disable",
    "channel_binding": "prefer",
    "target_session_attrs": "any",
    "load_balance_hosts": "disable",
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "5",
    "keepalives_count": "5",
}


@pytest.fixture(scope="module")
def remote() -> Iterator[TcpServer]:
    """The password-protected TCP server, for this module."""
    with tcp_server() as server:
        yield server


@pytest.fixture
def remote_cli(tmp_path: Path, remote: TcpServer) -> Cli:
    """`memoryd` with this test's folders and a fresh database on the TCP server (no password in the DSN)."""
    name = f"memoryd_tcp_{uuid.uuid4().hex[:10]}"
    remote.create_database(name)
    return make_cli(tmp_path, remote.dsn(name))


def libpq_keywords() -> list[str]:
    """Every connection option the linked libpq knows."""
    return sorted(option.keyword.decode() for option in pq.Conninfo.get_defaults())


def test_every_libpq_keyword_and_uri_parameter_is_accepted() -> None:
    """check_dsn refuses none of libpq's own options, whether key=value or a URI query parameter."""
    keywords = [k for k in libpq_keywords() if k not in ("host", "hostaddr", "dbname", "user")]
    assert {"sslmode", "sslrootcert", "sslcert", "sslkey", "passfile", "options"} <= set(keywords)
    for keyword in keywords:
        value = _VALID.get(keyword, "x")
        check_dsn(f"host=db.example user=u dbname=d {keyword}={value}")
        check_dsn(f"postgresql://u@db.example/d?{keyword}={value}")


@pytest.mark.parametrize("sslmode", ["disable", "allow", "prefer"])
def test_tcp_dsn_passes_its_options_to_libpq(remote: TcpServer, sslmode: str) -> None:
    """A TCP DSN with sslmode, application_name and options reaches the server as written, in every connection."""
    dsn = remote.dsn(
        password=PASSWORD, sslmode=sslmode, application_name="memoryd-tcp", options="-c statement_timeout=4321"
    )
    with Database(DatabaseConfig(dsn=dsn), retry=RetryPolicy(deadline_s=20.0)) as db, db.connection() as conn:
        row = conn.execute(
            "SELECT current_setting('application_name'), current_setting('statement_timeout'),"
            " host(inet_server_addr()), (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())"
        ).fetchone()
    assert row == ("memoryd-tcp", "4321ms", "127.0.0.1", False)


def test_uri_dsn_with_query_parameters_works(remote: TcpServer) -> None:
    """A postgresql:// URI with sslmode and other options as query parameters connects over TCP."""
    dsn = (
        f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{remote.port}/{ROLE}"
        "?sslmode=prefer&connect_timeout=5&application_name=memoryd-uri&target_session_attrs=read-write"
    )
    with Database(DatabaseConfig(dsn=dsn), retry=RetryPolicy(deadline_s=20.0)) as db, db.connection() as conn:
        assert conn.execute("SELECT current_setting('application_name')").fetchone() == ("memoryd-uri",)


def test_sslmode_require_without_ssl_on_the_server_exits_2(remote_cli: Cli) -> None:
    """`status` with sslmode=require on a server without SSL exits 2 at once, naming sslmode, without a traceback."""
    dsn = remote_cli.dsn + f" password={PASSWORD} sslmode=require"
    result = remote_cli.run("status", "--in-process", env={"MEMORYD_DSN": dsn}, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        "memoryd: configuration error: [database] dsn: sslmode requires SSL but the server does not offer it"
    ), result.stderr
    assert "Traceback" not in result.stderr


def _pgpass(path: Path, server: TcpServer, password: str = PASSWORD) -> Path:
    path.write_text(f"127.0.0.1:{server.port}:*:{ROLE}:{password}\n", encoding="utf-8")
    path.chmod(0o600)  # libpq ignores a pgpass file others can read
    return path


def test_pgpassfile_supplies_the_password(remote_cli: Cli, remote: TcpServer, tmp_path: Path) -> None:
    """A DSN without a password works when PGPASSFILE names a file holding it; `db url` then shows none."""
    passfile = _pgpass(tmp_path / "passfile", remote)
    env = {"PGPASSFILE": str(passfile), "HOME": str(tmp_path / "nohome")}
    init = remote_cli.run("init", env=env)
    assert init.returncode == 0, init.stderr
    url = remote_cli.run("db", "url", env=env)
    assert url.returncode == 0, url.stderr
    assert url.stdout == f"{remote_cli.dsn}\n"


def test_home_pgpass_supplies_the_password(remote_cli: Cli, remote: TcpServer, tmp_path: Path) -> None:
    """Without PGPASSFILE, ~/.pgpass supplies the password of a password-less DSN."""
    home = tmp_path / "home"
    home.mkdir()
    _pgpass(home / ".pgpass", remote)
    result = remote_cli.run("init", env={"HOME": str(home)})
    assert result.returncode == 0, result.stderr


def test_no_password_anywhere_exits_2_saying_where_one_comes_from(remote_cli: Cli, tmp_path: Path) -> None:
    """A password-less DSN and no pgpass file: the server refuses it, exit 2 naming where a password comes from."""
    result = remote_cli.run(
        "init", env={"HOME": str(tmp_path / "nohome"), "PGPASSFILE": str(tmp_path / "missing")}, timeout=120
    )
    assert result.returncode == 2, result.stderr
    message = result.stderr.splitlines()[-1]
    assert message.startswith("memoryd: configuration error: [database] dsn: the server refused the password"), message
    assert "PGPASSFILE / ~/.pgpass" in message
    assert "no password supplied" in message


def _leak_role(server: TcpServer, marker: str) -> str:
    """A role whose password is ``marker``, owning a database of the same name; returns the name."""
    name = f"leak_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(sql.Identifier(name), sql.Literal(marker))
        )
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(name)))
    return name


def _daemon_output(cli: Cli, dsn: str) -> str:
    """Everything `memoryd -v watch` prints from its start to its stop by SIGTERM once ready."""
    env = clean_environment() | {"MEMORYD_CONFIG": str(cli.config_path), "MEMORYD_DSN": dsn}
    lines: list[str] = []
    with subprocess.Popen(
        [*memoryd_command(), "-v", "watch"],
        cwd=cli.cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        assert process.stdout is not None
        deadline = time.monotonic() + 240
        for line in process.stdout:
            lines.append(line)
            if '"daemon_ready"' in line or time.monotonic() > deadline:
                process.send_signal(signal.SIGTERM)
                break
        try:
            rest, _ = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            rest, _ = process.communicate()
        lines.append(rest)
    output = "".join(lines)
    assert '"daemon_ready"' in output and '"daemon_stopped"' in output, output[-3000:]
    return output


@pytest.mark.slow
def test_a_password_never_appears_in_any_output(remote: TcpServer, tmp_path: Path) -> None:
    """With debug logs on, no command (working, refused, unreachable, malformed) prints the DSN's password."""
    marker = f"PW-MARKER-{uuid.uuid4().hex}"
    name = _leak_role(remote, marker)
    good = f"postgresql://{name}:{marker}@127.0.0.1:{remote.port}/{name}?sslmode=prefer"
    cli = make_cli(tmp_path, good)
    write_conversation(cli.conversations, "2025-01-02__leak", [("user", "hello"), ("assistant", "hi")], title="Leak")
    outputs: list[str] = []

    def run(*args: str, dsn: str = good, expect: int = 0) -> None:
        result = cli.run("-v", *args, env={"MEMORYD_DSN": dsn, "MEMORYD_DATABASE_RETRY_DEADLINE_S": "2"}, timeout=240)
        assert result.returncode == expect, (args, result.stderr[-3000:])
        outputs.append(result.stdout + result.stderr)

    run("init")
    run("ingest")
    run("status", "--in-process")
    run("status", "--in-process", "--json")
    run("search", "hello", "--mode", "text", "--in-process")
    run("verify", expect=1)  # drift: the texts are not embedded
    run("db", "url")
    run("init", dsn=f"postgresql://{ROLE}:{marker}@127.0.0.1:{remote.port}/{ROLE}", expect=2)  # wrong password
    run("init", dsn=f"host=127.0.0.1 port=1 user={name} password={marker} dbname={name}", expect=3)  # no server
    run("init", dsn=good.replace("sslmode=prefer", "sslmode=require"), expect=2)
    run("init", dsn=good.replace(f"{remote.port}", "notaport"), expect=2)
    outputs.append(_daemon_output(cli, good))
    everything = "\n".join(outputs)
    assert "database ready: postgresql://" in everything  # the commands did print their DSN, redacted
    assert marker not in everything
    shown = cli.run("db", "url", "--show-password", env={"MEMORYD_DSN": good})
    assert shown.stdout == f"{good}\n", "--show-password is the one way to print it"


def test_db_url_masks_the_password(remote: TcpServer, tmp_path: Path) -> None:
    """`db url` prints the DSN with *** for its password; --show-password prints it whole."""
    dsn = remote.dsn(password=PASSWORD, sslmode="disable")
    cli = make_cli(tmp_path, dsn)
    masked = cli.run("db", "url")
    assert masked.returncode == 0, masked.stderr
    assert masked.stdout == f"{redact_dsn(dsn)}\n"
    assert PASSWORD not in masked.stdout and "password=***" in masked.stdout
    assert cli.run("db", "url", "--show-password").stdout == f"{dsn}\n"


@pytest.mark.parametrize(
    ("dsn", "without", "password"),
    [
        (
            "postgresql://u:s3cret@h:5432/d?sslmode=require",
            "user=u dbname=d host=h port=5432 sslmode=require",
            "s3cret",
        ),
        ("host=h user=u dbname=d", "host=h user=u dbname=d", None),
        ("postgresql://postgres:@/postgres?host=/tmp/x", "postgresql://postgres:@/postgres?host=/tmp/x", None),
    ],
)
def test_split_password_keeps_every_other_option(dsn: str, without: str, password: str | None) -> None:
    """`db psql` gets the DSN without its password (every other option kept) and the password apart."""
    assert split_password(dsn) == (without, password)
