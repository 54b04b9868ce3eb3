"""systemd's notification protocol (``Type=notify``), without a dependency.

READY=1 once the first reconcile is done, WATCHDOG=1 heartbeats, STATUS=
lines.  The protocol hands us its socket and watchdog period through
``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``; they are read here rather than in
``config.py`` because they describe the service manager, not memoryd's
configuration.  Outside systemd every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time

import structlog

log = structlog.get_logger(__name__)


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
