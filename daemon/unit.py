"""The systemd user unit, filled in for this installation.

``systemd/memoryd.service`` is the one template; rendering replaces only the
lines that depend on where memoryd and its configuration live, so the
hardening options are written once.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from daemon.config import Config
from daemon.errors import MemorydError
from daemon.onnx_backend import cache_root

_PACKAGE_DIR = Path(__file__).resolve().parent


def template_path() -> Path:
    for candidate in (
        _PACKAGE_DIR / "_systemd" / "memoryd.service",
        _PACKAGE_DIR.parent / "systemd" / "memoryd.service",
    ):
        if candidate.is_file():
            return candidate
    raise MemorydError(f"no systemd unit template found next to {_PACKAGE_DIR}")  # pragma: no cover


def unit_path() -> Path:
    """Where systemd looks for the current user's units."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "systemd" / "user" / "memoryd.service"


def memoryd_command() -> list[str]:
    """The memoryd of this very installation (a virtualenv's, typically)."""
    script = Path(sys.executable).parent / "memoryd"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "daemon.cli"]


def render_unit(config: Config) -> str:
    """The template with ExecStart, WorkingDirectory and ReadWritePaths for ``config``."""
    if config.source is None:
        raise MemorydError("the unit needs a configuration file to point at")
    # %C is ~/.cache for a user unit: the embedder's ONNX export and precision choice live there.
    cache_root().mkdir(parents=True, exist_ok=True)
    writable = ["%t", "-%C/memoryd"]
    if not config.database.dsn:
        config.database.data_dir.mkdir(parents=True, exist_ok=True)
        writable.insert(0, "-" + _escape(str(config.database.data_dir)))
    replacements = {
        "ExecStart=": _escape(shlex.join([*memoryd_command(), "--config", str(config.source), "watch"])),
        "WorkingDirectory=": _escape(str(config.source.parent)),
        "ReadWritePaths=": " ".join(writable),
    }
    lines = []
    for line in template_path().read_text(encoding="utf-8").splitlines():
        for key, value in replacements.items():
            if line.startswith(key):
                line = key + value
        lines.append(line)
    return "\n".join(lines) + "\n"


def _escape(path: str) -> str:
    """systemd expands % specifiers in unit values; a literal % is %%."""
    return path.replace("%", "%%")
