"""Configuration: ``config.toml`` plus ``MEMORYD_*`` environment overrides.

This is the only module that reads the environment or the configuration file;
everything else receives a frozen :class:`Config`.  Unknown keys and wrong
types are errors that name the key, because a silently ignored typo in a
daemon's configuration is found months later.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

from memoryd.dsn import check_dsn
from memoryd.errors import ConfigError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
USER_CONFIG = Path("~/.config/memoryd/config.toml")


@dataclass(frozen=True, slots=True)
class PathsConfig:
    conversations: Path = Path("conversations")
    summaries: Path = Path("summaries")


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    dsn: str | None = None
    data_dir: Path = Path("data/embedded-pg")
    retry_deadline_s: int = 30


# How the model runs: "auto" picks per machine (see memoryd.embed); the others force one.
Precision = Literal["auto", "fp32", "bf16", "fp16", "onnx-fp32", "onnx-int8"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_ONNX_PRECISIONS = ("onnx-fp32", "onnx-int8")


@dataclass(frozen=True, slots=True)
class EmbeddingConfig:
    model: str = DEFAULT_MODEL
    batch_size: int = 64
    chunk_tokens: int = 256
    chunk_overlap: int = 32
    device: str = "auto"
    precision: Precision = "auto"
    # Seconds without encoding after which the daemon frees the model (0: keep it); it loads again on demand.
    idle_unload_s: int = 0
    # False: the daemon stores text but leaves its encoding to workers (`memoryd embed --follow`).
    local: bool = True
    # A worker looks for pending texts at least this often, notifications or not.
    worker_poll_s: int = 30


@dataclass(frozen=True, slots=True)
class WatchConfig:
    debounce_ms: int = 1500
    max_wait_ms: int = 10000
    rescan_interval_s: int = 600
    on_delete: Literal["delete", "keep"] = "delete"


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: Literal["auto", "console", "json"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """The daemon's query service (HTTP + JSON on a Unix socket)."""

    enabled: bool = True
    socket: Path | None = None  # None: $XDG_RUNTIME_DIR/memoryd/memoryd.sock, else beside the data folder

    def socket_path(self, data_dir: Path, environ: Mapping[str, str] | None = None) -> Path:
        if self.socket is not None:
            return self.socket
        env = os.environ if environ is None else environ
        runtime = env.get("XDG_RUNTIME_DIR")
        if runtime:
            return Path(runtime) / "memoryd" / "memoryd.sock"
        return data_dir.parent / "memoryd.sock"


# The longest source name: it is shown in every hit and status line, and kept in an advisory lock holder's name.
MAX_SOURCE_NAME = 64


def default_source_name() -> str:
    """The host name: one source per machine unless ``[source] name`` says otherwise."""
    return socket.gethostname()


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """Which source this machine's folders are: its conversations, locks and deletions are its own."""

    name: str = field(default_factory=default_source_name)


@dataclass(frozen=True, slots=True)
class MirrorConfig:
    """Agent session log folders the daemon mirrors into conversation folders (unset: not mirrored)."""

    claude_code: Path | None = None
    codex: Path | None = None
    tool_result_chars: int = 2000


@dataclass(frozen=True, slots=True)
class Config:
    paths: PathsConfig = PathsConfig()
    database: DatabaseConfig = DatabaseConfig()
    embedding: EmbeddingConfig = EmbeddingConfig()
    watch: WatchConfig = WatchConfig()
    log: LogConfig = LogConfig()
    service: ServiceConfig = ServiceConfig()
    mirror: MirrorConfig = MirrorConfig()
    source: SourceConfig = field(default_factory=SourceConfig)
    file: Path | None = None
    """The configuration file that was read, if any."""
    deprecated: tuple[tuple[str, str], ...] = ()
    """(old name, new name) of each deprecated section the file or environment used; logged once at start."""


_SECTIONS: dict[str, type[Any]] = {
    "paths": PathsConfig,
    "database": DatabaseConfig,
    "embedding": EmbeddingConfig,
    "watch": WatchConfig,
    "log": LogConfig,
    "service": ServiceConfig,
    "mirror": MirrorConfig,
    "source": SourceConfig,
}
# Old section names still read, under their new name, with a config_deprecated warning.
# [sources] became [mirror] when [source] (this machine's source) arrived: side by side they confused.
_DEPRECATED_SECTIONS = {"sources": "mirror"}


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from a file and the environment.

    The file is ``path``, else ``$MEMORYD_CONFIG``, else ``./config.toml``, else
    ``~/.config/memoryd/config.toml``; with none of them the defaults apply.
    Relative paths are taken relative to the file's folder (the working
    directory without a file), so a systemd unit and a shell agree on them.
    """
    env = os.environ if environ is None else environ
    source = _find_config_file(path, env)
    raw: dict[str, Any] = {}
    if source is not None:
        try:
            raw = tomllib.loads(source.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {source}: {exc.strerror}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    _merge_environment(raw, env)
    deprecated = _rename_deprecated(raw)
    base = source.parent if source is not None else Path.cwd()
    sections = {name: _build_section(name, cls, raw.pop(name, {}), base) for name, cls in _SECTIONS.items()}
    if raw:
        unknown = ", ".join(sorted(raw))
        raise ConfigError(f"unknown configuration section(s): {unknown} (known: {', '.join(_SECTIONS)})")
    config = Config(**sections, file=source, deprecated=deprecated)
    _check_consistency(config)
    if config.database.dsn:
        label = "[database] dsn (MEMORYD_DSN)" if env.get("MEMORYD_DSN") else "[database] dsn"
        check_dsn(config.database.dsn, label=label)
    return config


def _rename_deprecated(raw: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Move a deprecated section's keys under its new name; the (old, new) pairs that were used."""
    used: list[tuple[str, str]] = []
    for old, new in _DEPRECATED_SECTIONS.items():
        if old not in raw:
            continue
        table = raw.pop(old)
        current = raw.get(new, {})
        if not isinstance(table, dict) or not isinstance(current, dict):
            raise ConfigError(f"[{old}] (now [{new}]) must be a table")
        raw[new] = {**table, **current}  # the new name wins where both set a key
        used.append((old, new))
    return tuple(used)


def log_deprecated(config: Config) -> None:
    """One ``config_deprecated`` warning per deprecated section used, once logging is set up."""
    if not config.deprecated:
        return
    import structlog

    for old, new in config.deprecated:
        structlog.get_logger(__name__).warning(
            "config_deprecated", section=old, use=new, message=f"[{old}] is deprecated: rename it [{new}]"
        )


def _find_config_file(path: Path | None, env: Mapping[str, str]) -> Path | None:
    if path is None and env.get("MEMORYD_CONFIG"):
        path = Path(env["MEMORYD_CONFIG"])
    if path is not None:
        path = path.expanduser()
        if not path.is_file():
            raise ConfigError(f"configuration file not found: {path}")
        return path.resolve()
    for candidate in (Path("config.toml"), USER_CONFIG.expanduser()):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _merge_environment(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    """Apply ``MEMORYD_DSN`` and ``MEMORYD_<SECTION>_<KEY>`` on top of the file."""
    for name, value in env.items():
        if not name.startswith("MEMORYD_") or name in ("MEMORYD_CONFIG", "MEMORYD_TEST_DSN"):
            continue
        rest = "database_dsn" if name == "MEMORYD_DSN" else name[len("MEMORYD_") :].lower()
        section = next((s for s in (*_SECTIONS, *_DEPRECATED_SECTIONS) if rest.startswith(s + "_")), None)
        if section is None:
            raise ConfigError(f"unknown environment variable {name} (expected MEMORYD_<SECTION>_<KEY>)")
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table, not {type(table).__name__}")
        table[rest[len(section) + 1 :]] = _EnvValue(value)


class _EnvValue(str):
    """A string from the environment, converted to the key's type when built."""


def _build_section(name: str, cls: type[Any], table: Any, base: Path) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table, not {type(table).__name__}")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    # Default paths are relative too: to the file's folder, like explicit ones.
    values: dict[str, Any] = {f.name: base / getattr(cls(), f.name) for f in fields(cls) if hints[f.name] is Path}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"unknown key [{name}] {key} (known: {', '.join(sorted(known))})")
        values[key] = _coerce(f"[{name}] {key}", hints[key], value, base)
    return cls(**values)


def _coerce(label: str, hint: Any, value: Any, base: Path) -> Any:
    from_env = isinstance(value, _EnvValue)
    options = get_args(hint)
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{label} must be a non-empty path string")
        path = Path(value).expanduser()
        return path if path.is_absolute() else base / path
    if hint == (Path | None):
        if value == "":
            return None
        return _coerce(label, Path, value, base)
    if hint is bool:
        if from_env and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            value = value.lower() in ("1", "true", "yes", "on")
        if not isinstance(value, bool):
            raise ConfigError(f"{label} must be true or false, got {str(value)!r}")
        return value
    if hint is int:
        if from_env:
            try:
                value = int(value)
            except ValueError:
                raise ConfigError(f"{label} must be an integer, got {str(value)!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{label} must be an integer, got {value!r}")
        if value < 0:
            raise ConfigError(f"{label} must be >= 0, got {value}")
        return value
    if options and all(isinstance(o, str) for o in options):  # Literal[...]
        if value not in options:
            raise ConfigError(f"{label} must be one of {', '.join(options)}; got {value!r}")
        return str(value)
    if hint is str or hint == (str | None):
        if not isinstance(value, str):
            raise ConfigError(f"{label} must be a string, got {value!r}")
        if not value:
            if hint is str:
                raise ConfigError(f"{label} must not be empty")
            return None
        return str(value)
    raise ConfigError(f"{label}: unsupported type {hint}")  # pragma: no cover - schema bug


def _check_consistency(config: Config) -> None:
    emb = config.embedding
    if emb.batch_size < 1:
        raise ConfigError("[embedding] batch_size must be >= 1")
    if emb.chunk_tokens < 16:
        raise ConfigError("[embedding] chunk_tokens must be >= 16")
    if 2 * emb.chunk_overlap >= emb.chunk_tokens:
        raise ConfigError("[embedding] chunk_overlap must be less than half of chunk_tokens")
    if emb.device not in ("auto", "cpu") and not emb.device.startswith(("cuda", "mps")):
        raise ConfigError(f"[embedding] device must be auto, cpu, cuda[:N] or mps; got {emb.device!r}")
    if emb.precision in _ONNX_PRECISIONS and emb.device not in ("auto", "cpu"):
        raise ConfigError(f"[embedding] precision {emb.precision} runs on the CPU: set device to auto or cpu")
    if emb.precision == "fp16" and emb.device == "cpu":
        raise ConfigError("[embedding] precision fp16 needs a GPU (device auto, cuda[:N] or mps); on a CPU use auto")
    if emb.worker_poll_s < 1:
        raise ConfigError("[embedding] worker_poll_s must be >= 1")
    if config.watch.debounce_ms > config.watch.max_wait_ms:
        raise ConfigError("[watch] debounce_ms must not exceed max_wait_ms")
    if config.watch.rescan_interval_s < 1:
        raise ConfigError("[watch] rescan_interval_s must be >= 1")
    check_source_name(config.source.name)


def check_source_name(name: str) -> None:
    """A source name is shown and compared as is: non-empty, printable, at most MAX_SOURCE_NAME characters."""
    label = "[source] name (MEMORYD_SOURCE_NAME; default: the host name)"
    if not name:
        raise ConfigError(f"{label} must not be empty")
    if not name.isprintable():
        raise ConfigError(f"{label} must be printable (no control characters), got {name!r}")
    if len(name) > MAX_SOURCE_NAME:
        raise ConfigError(f"{label} must be at most {MAX_SOURCE_NAME} characters, got {len(name)}: {name!r}")
