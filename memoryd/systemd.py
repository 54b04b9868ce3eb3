"""systemd: the user unit filled in for this installation, and the notification protocol.

``systemd/memoryd.service`` is the one template; rendering replaces only the
lines that depend on where memoryd and its configuration live, so the
hardening options are written once.

The notification protocol (``Type=notify``) needs no dependency: READY=1 once
the first reconcile is done, WATCHDOG=1 heartbeats, STATUS= lines.  The
service manager hands us its socket and watchdog period through
``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``; they are read here rather than in
``config.py`` because they describe the service manager, not memoryd's
configuration.  Outside systemd every notification is a no-op.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
import time
from pathlib import Path

import structlog

from memoryd.config import Config
from memoryd.errors import MemorydError
from memoryd.onnx_backend import cache_root

log = structlog.get_logger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parent


def template_path() -> Path:
    for candidate in (
        _PACKAGE_DIR / "_systemd" / "memoryd.service",
        _PACKAGE_DIR.parent / "systemd" / "memoryd.service",
    ):
        if candidate.is_file():
            return candidate
    raise MemorydError(f"no systemd unit template found next to {_PACKAGE_DIR}")  # pragma: no cover


def unit_path(name: str = "memoryd.service") -> Path:
    """Where systemd looks for the current user's units."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "systemd" / "user" / name


WORKER_UNIT = "memoryd-worker.service"
# An embedding worker's watchdog: one batch (256 texts on a CPU, each up to a few chunks) must fit in it.
WORKER_WATCHDOG = "600s"


def memoryd_command() -> list[str]:
    """The memoryd of this very installation (a virtualenv's, typically)."""
    script = Path(sys.executable).parent / "memoryd"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "memoryd.cli"]


def render_unit(config: Config, *, worker: bool = False) -> str:
    """The template with ExecStart, WorkingDirectory and ReadWritePaths for ``config``.

    ``worker``: the unit of an embedding worker (``embed --follow``) instead
    of the daemon, with the same hardening and a longer watchdog.
    """
    if config.file is None:
        raise MemorydError("the unit needs a configuration file to point at")
    # %C is ~/.cache for a user unit: the embedder's ONNX export and precision choice live there.
    cache_root().mkdir(parents=True, exist_ok=True)
    writable = ["%t", "-%C/memoryd"]
    if not config.database.dsn:
        config.database.data_dir.mkdir(parents=True, exist_ok=True)
        writable.insert(0, "-" + _escape(str(config.database.data_dir)))
    command = ("embed", "--follow") if worker else ("watch",)
    replacements = {
        "ExecStart=": _escape(shlex.join([*memoryd_command(), "--config", str(config.file), *command])),
        "WorkingDirectory=": _escape(str(config.file.parent)),
        "ReadWritePaths=": " ".join(writable),
    }
    if worker:
        replacements["Description="] = "memoryd embedding worker: embeds pending texts of a shared database"
        replacements["WatchdogSec="] = WORKER_WATCHDOG
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


class SystemdNotifier:
    """Sends state changes to the service manager, if there is one."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # abstract namespace
            address = "\0" + address[1:]
        self._address = address or None
        usec = os.environ.get("WATCHDOG_USEC", "")
        # Heartbeat at half the watchdog period, as sd_notify(3) recommends.
        self.watchdog_interval_s: float | None = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None
        self._last_heartbeat = 0.0

    def notify(self, *lines: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Never block the daemon on a manager that stopped reading.
                sock.setblocking(False)
                sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:  # the manager went away or is not reading; nothing for us to fix
            log.debug("sd_notify_failed", error=str(exc))

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def heartbeat(self) -> None:
        """WATCHDOG=1, rate-limited to the interval systemd asked for."""
        if self.watchdog_interval_s is None:
            return
        now = time.monotonic()
        if now - self._last_heartbeat >= self.watchdog_interval_s:
            self._last_heartbeat = now
            self.notify("WATCHDOG=1")
