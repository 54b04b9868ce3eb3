"""Footprint: what memoryd costs the machine it runs on (scheduling, memory when idle)."""

from __future__ import annotations

import re
from pathlib import Path

from memoryd.config import Config
from memoryd.systemd import render_unit


def test_unit_yields_cpu_and_disk(tmp_path: Path, config: Config) -> None:
    """The rendered unit lowers memoryd's CPU and I/O priority below the user's own work."""
    from dataclasses import replace

    source = tmp_path / "config.toml"
    source.write_text("")
    text = render_unit(replace(config, source=source))
    settings = dict(re.findall(r"^(Nice|CPUWeight|IOSchedulingClass|IOSchedulingPriority)=(\S+)$", text, re.M))
    assert int(settings["Nice"]) > 0
    assert int(settings["CPUWeight"]) < 100  # systemd's default weight
    assert settings["IOSchedulingClass"] in ("idle", "best-effort")
    if settings["IOSchedulingClass"] == "best-effort":
        assert int(settings["IOSchedulingPriority"]) == 7
