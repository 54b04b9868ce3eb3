"""The systemd user unit: hardened to an exposure of at most 4.5, and still valid for both kinds of database."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from memoryd.config import load_config
from memoryd.systemd import render_unit

MAX_EXPOSURE = 4.5

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (Debian package systemd)"
)


def _render(tmp_path: Path, database: str) -> Path:
    """The unit `memoryd install-service` writes for a configuration with this [database] table."""
    config_file = tmp_path / "memoryd.toml"
    config_file.write_text(
        f'[paths]\nconversations = "{tmp_path / "conversations"}"\nsummaries = "{tmp_path / "summaries"}"\n'
        f"[database]\n{database}\n",
        encoding="utf-8",
    )
    unit = tmp_path / "memoryd.service"
    unit.write_text(render_unit(load_config(config_file)), encoding="utf-8")
    return unit


@pytest.mark.parametrize(
    "database",
    [f'data_dir = "{"embedded-pg"}"', 'dsn = "postgresql://memoryd@db.example.org:5432/memoryd"'],
    ids=["embedded", "tcp-dsn"],
)
def test_unit_exposure_is_at_most_4_5_and_it_verifies(tmp_path: Path, database: str) -> None:
    """`systemd-analyze security --offline` scores the rendered unit <= 4.5, and `verify` accepts it silently."""
    unit = _render(tmp_path, database)
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=60
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout + security.stderr)
    assert found, security.stdout + security.stderr
    assert float(found[1]) <= MAX_EXPOSURE, security.stdout


def test_unit_keeps_what_the_embedded_server_and_a_tcp_dsn_need(tmp_path: Path) -> None:
    """The unit allows Unix and Internet sockets and the system-service calls, and can write the embedded data."""
    text = _render(tmp_path, 'data_dir = "embedded-pg"').read_text(encoding="utf-8")
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n" in text
    assert "SystemCallFilter=@system-service\n" in text
    assert "RestartPreventExitStatus=2 4\n" in text  # a configuration error is not restarted forever
    assert "PrivateNetwork" not in text.replace("PrivateNetwork/IPAddressDeny", "")
    assert f"ReadWritePaths=-{tmp_path / 'embedded-pg'} %t -%C/memoryd\n" in text
