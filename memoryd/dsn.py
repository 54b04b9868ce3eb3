"""The DSN: checked once, before anything connects, and never shown with its password.

libpq quotes the offending token of a malformed DSN in its error (``invalid
percent-encoded token: "SECRET%zzPW"``), often the password itself; and a
wrong value such as ``port=notaport`` only fails at connection time, where it
looks like an outage and would be retried forever.  So a DSN is validated
when the configuration is loaded, and every message about it is built here,
from the parser's reason with its quoted tokens removed.
"""

from __future__ import annotations

import re
from typing import Any

from memoryd.errors import ConfigError

# psycopg is imported inside the functions: `import memoryd` (and a search a
# daemon answers) must not load the driver; only a configured DSN does.

__all__ = ["check_dsn", "config_error_of", "redact_dsn", "split_password"]

# Options whose value libpq checks only when connecting, with the values it accepts (libpq 16/17).
_CHOICES: dict[str, tuple[str, ...]] = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby", "prefer-standby"),
    "load_balance_hosts": ("disable", "random"),
}
_INTEGERS = ("connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count")

# libpq's own words for a wrong option value, raised as OperationalError at connection time;
# a retry cannot fix them (fe-connect.c: "invalid %s value", "invalid integer value", "could not match").
_CONFIG_MESSAGES = re.compile(r"invalid (integer )?value|invalid \w+ value|could not match \d+ port numbers")

# Refusals by the server or by libpq that no retry can fix, each with what to change; the
# server's or libpq's own words follow (fe-secure-openssl.c, fe-auth.c, auth.c).
_REFUSALS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"server does not support SSL"),
        "sslmode requires SSL but the server does not offer it (use sslmode=prefer or disable, or enable ssl on"
        " the server)",
    ),
    (
        re.compile(r"certificate|private key file|sslrootcert"),
        "the server's or the client's SSL certificate was refused (check sslmode, sslrootcert, sslcert, sslkey)",
    ),
    (
        re.compile(r"password authentication failed|no password supplied|authentication failed for user"),
        "the server refused the password (it comes from the DSN, PGPASSWORD, or the PGPASSFILE / ~/.pgpass file)",
    ),
)

_QUOTED = re.compile(r'"[^"]*"?')
_KV_PASSWORD = re.compile(r"((?<![\w'])password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)")
_URI_PASSWORD = re.compile(r"^([a-z]+://[^:/?#@]*:)([^@/?#]*)(@)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)


def _without_quoted(reason: str) -> str:
    """libpq's reason with every quoted token (a password, the whole URI) replaced by …"""
    text = str(reason).strip().splitlines()[0] if str(reason).strip() else "unreadable"
    return _QUOTED.sub('"…"', text)


def check_dsn(dsn: str, *, label: str = "[database] dsn") -> None:
    """Raise ConfigError naming ``label`` when libpq cannot use ``dsn``; never quote its text.

    Checks what libpq's parser checks (syntax, option names), then the values
    it would only reject when connecting: ports, timeouts, enumerated modes.
    No value is echoed: ``postgresql://u:SECRET/db`` (a forgotten ``@host``)
    parses as host ``u``, port ``SECRET``.
    """
    params = _parse(dsn)
    if isinstance(params, str):
        raise ConfigError(f"{label} is not a valid PostgreSQL connection string: {params}")
    ports = [p.strip() for p in str(params.get("port", "")).split(",")] if params.get("port") else []
    for port in ports:
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(f"{label}: port must be a number from 1 to 65535")
    hosts = str(params.get("host") or params.get("hostaddr") or "").split(",")
    if len(ports) > 1 and len(ports) != len(hosts):
        raise ConfigError(f"{label}: {len(ports)} ports for {len(hosts)} host(s); give one port, or one per host")
    for key in _INTEGERS:
        value = params.get(key)
        if value is not None and not str(value).strip().lstrip("-").isdigit():
            raise ConfigError(f"{label}: {key} must be an integer")
    for key, choices in _CHOICES.items():
        value = params.get(key)
        if value is not None and value not in choices:
            raise ConfigError(f"{label}: {key} must be one of {', '.join(choices)}")


def _parse(dsn: str) -> dict[str, Any] | str:
    """libpq's reading of ``dsn``, or why it cannot read it (quoted tokens removed)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        return _without_quoted(str(exc))


def config_error_of(exc: BaseException) -> ConfigError | None:
    """The configuration error behind a connection failure, if libpq rejected an option value.

    A safety net behind :func:`check_dsn`, for values a newer libpq checks and
    this module does not know: such a failure is not an outage, so it is not retried.
    The same for what the server refuses whatever the wait: SSL required but not
    offered, a certificate, a password.
    """
    import psycopg

    if not isinstance(exc, psycopg.OperationalError):
        return None
    if _CONFIG_MESSAGES.search(str(exc)):
        return ConfigError(f"[database] dsn: {_without_quoted(str(exc).removeprefix('connection is bad: '))}")
    for pattern, advice in _REFUSALS:
        if pattern.search(str(exc)):
            return ConfigError(f"[database] dsn: {advice}: {_libpq_reason(str(exc))}")
    return None


def _libpq_reason(message: str) -> str:
    """The last line of libpq's message that says why (after ``... failed: ``), quoted tokens removed."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    reason = lines[0].rsplit(" failed: ", 1)[-1] if lines else "refused"
    return _QUOTED.sub('"…"', reason)


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced, fit for logs and status output."""
    if isinstance(_parse(dsn), str):
        return "<invalid dsn>"
    if "://" in dsn.split("?", 1)[0]:
        redacted = _URI_PASSWORD.sub(lambda m: f"{m[1]}***{m[3]}" if m[2] else m[0], dsn, count=1)
        return _QUERY_PASSWORD.sub(r"\1***", redacted)
    return _KV_PASSWORD.sub(r"\1***", dsn)


def split_password(dsn: str) -> tuple[str, str | None]:
    """The DSN without its password, and the password (None when it has none), for a child process's env."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    if not password:
        return dsn, None
    return make_conninfo("", **params), str(password)
