"""Tests for memoryd.config: the file lookup, relative paths, MEMORYD_* overrides
and the exact text of every configuration error.

Every test runs in an empty working directory with an empty HOME and passes
``environ`` explicitly, so neither ./config.toml, ~/.config/memoryd nor the
developer's own MEMORYD_* variables can leak in.
"""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from memoryd.config import Config, DatabaseConfig, PathsConfig, WatchConfig, load_config, log_deprecated
from memoryd.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory and HOME for each test."""
    work = tmp_path / "work"
    home = tmp_path / "home"
    work.mkdir()
    home.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    return work


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path | None, environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ)
    return str(info.value)


# -- where the configuration comes from ---------------------------------------


def test_defaults_without_any_file(isolated: Path) -> None:
    """Without a file or MEMORYD_* variable, the defaults apply, paths relative to the working directory."""
    config = load_config(None, {})
    assert config.file is None
    assert config.database.dsn is None
    assert config.paths.conversations.resolve() == isolated / "conversations"
    assert config.paths.summaries.resolve() == isolated / "summaries"
    assert config.database.data_dir.resolve() == isolated / "data" / "embedded-pg"
    defaults = Config()
    database = replace(config.database, data_dir=defaults.database.data_dir)
    assert replace(config, paths=defaults.paths, database=database) == defaults


def test_repo_config_toml_equals_the_defaults() -> None:
    """The documented config.toml holds exactly the code's defaults, its relative paths taken from its folder."""
    config = load_config(REPO_ROOT / "config.toml", {})
    expected = Config(
        paths=PathsConfig(conversations=REPO_ROOT / "conversations", summaries=REPO_ROOT / "summaries"),
        database=DatabaseConfig(dsn=None, data_dir=REPO_ROOT / "data" / "embedded-pg"),
        file=REPO_ROOT / "config.toml",
    )
    assert config == expected


def test_relative_paths_are_resolved_against_the_file_folder(tmp_path: Path) -> None:
    """Relative paths in the file are relative to its folder, not the working directory; ~ is expanded."""
    path = write(
        tmp_path / "etc" / "memoryd.toml",
        '[paths]\nconversations = "convs"\nsummaries = "/srv/sums"\n[database]\ndata_dir = "~/pg"\n',
    )
    config = load_config(path, {})
    assert config.file == path.resolve()
    assert config.paths.conversations == tmp_path / "etc" / "convs"
    assert config.paths.summaries == Path("/srv/sums")
    assert config.database.data_dir == tmp_path / "home" / "pg"


def test_omitted_paths_are_resolved_against_the_file_folder(tmp_path: Path) -> None:
    """A file that omits [paths] and data_dir still gets them relative to its own folder."""
    path = write(tmp_path / "etc" / "memoryd.toml", '[database]\ndsn = "postgresql://u@h/db"\n')
    config = load_config(path, {})
    assert config.paths.conversations == tmp_path / "etc" / "conversations"
    assert config.paths.summaries == tmp_path / "etc" / "summaries"
    assert config.database.data_dir == tmp_path / "etc" / "data" / "embedded-pg"


def test_config_toml_in_working_directory_is_found(isolated: Path) -> None:
    """Without a path or MEMORYD_CONFIG, ./config.toml is read."""
    write(isolated / "config.toml", "[watch]\nrescan_interval_s = 5\n")
    config = load_config(None, {})
    assert config.file == (isolated / "config.toml").resolve()
    assert config.watch.rescan_interval_s == 5


def test_user_config_is_the_last_resort(tmp_path: Path) -> None:
    """Without ./config.toml, ~/.config/memoryd/config.toml is read."""
    path = write(tmp_path / "home" / ".config" / "memoryd" / "config.toml", "[watch]\nrescan_interval_s = 7\n")
    config = load_config(None, {})
    assert config.file == path.resolve()
    assert config.watch.rescan_interval_s == 7


def test_memoryd_config_names_the_file(tmp_path: Path, isolated: Path) -> None:
    """MEMORYD_CONFIG is read instead of ./config.toml."""
    write(isolated / "config.toml", "[watch]\nrescan_interval_s = 5\n")
    path = write(tmp_path / "other.toml", "[watch]\nrescan_interval_s = 9\n")
    config = load_config(None, {"MEMORYD_CONFIG": str(path)})
    assert config.file == path.resolve()
    assert config.watch.rescan_interval_s == 9


def test_explicit_path_wins_over_memoryd_config(tmp_path: Path) -> None:
    """A path given by the caller (--config) wins over MEMORYD_CONFIG."""
    explicit = write(tmp_path / "explicit.toml", "[watch]\nrescan_interval_s = 3\n")
    other = write(tmp_path / "other.toml", "[watch]\nrescan_interval_s = 9\n")
    config = load_config(explicit, {"MEMORYD_CONFIG": str(other)})
    assert config.file == explicit.resolve()
    assert config.watch.rescan_interval_s == 3


# -- environment overrides -----------------------------------------------------


def test_memoryd_dsn_overrides_the_file(tmp_path: Path) -> None:
    """MEMORYD_DSN replaces [database] dsn from the file."""
    path = write(tmp_path / "c.toml", '[database]\ndsn = "postgresql://file@h/db"\n')
    assert load_config(path, {}).database.dsn == "postgresql://file@h/db"
    config = load_config(path, {"MEMORYD_DSN": "postgresql://env@h/db"})
    assert config.database.dsn == "postgresql://env@h/db"


def test_env_integer_is_converted() -> None:
    """MEMORYD_WATCH_DEBOUNCE_MS=500 becomes the int 500 and leaves the other [watch] keys at their defaults."""
    config = load_config(None, {"MEMORYD_WATCH_DEBOUNCE_MS": "500"})
    assert config.watch == WatchConfig(debounce_ms=500)
    assert type(config.watch.debounce_ms) is int


def test_env_overrides_a_key_of_the_file(tmp_path: Path) -> None:
    """MEMORYD_<SECTION>_<KEY> wins over the file and keeps the file's other keys of that section."""
    path = write(tmp_path / "c.toml", '[watch]\ndebounce_ms = 100\non_delete = "keep"\n')
    config = load_config(path, {"MEMORYD_WATCH_DEBOUNCE_MS": "200", "MEMORYD_WATCH_ON_DELETE": "delete"})
    assert config.watch == WatchConfig(debounce_ms=200, on_delete="delete")


def test_memoryd_test_dsn_is_ignored() -> None:
    """MEMORYD_TEST_DSN belongs to the test suite and is not a configuration key."""
    assert load_config(None, {"MEMORYD_TEST_DSN": "postgresql://t@h/db"}) == load_config(None, {})


@pytest.mark.parametrize(
    ("text", "environ"),
    [
        ('[database]\ndsn = ""\n', {}),
        ("", {"MEMORYD_DSN": ""}),
        ('[database]\ndsn = "postgresql://file@h/db"\n', {"MEMORYD_DSN": ""}),
    ],
    ids=["file", "env", "env-over-file"],
)
def test_empty_dsn_means_embedded(tmp_path: Path, text: str, environ: dict[str, str]) -> None:
    """An empty dsn, in the file or MEMORYD_DSN, means the embedded server (dsn None)."""
    path = write(tmp_path / "c.toml", text)
    assert load_config(path, environ).database.dsn is None


# -- errors, with their exact text ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[wacth]\ndebounce_ms = 1\n",
            "unknown configuration section(s): wacth"
            " (known: paths, database, embedding, watch, log, service, mirror, source)",
        ),
        (
            "[watch]\ndebounce = 500\n",
            "unknown key [watch] debounce (known: debounce_ms, max_wait_ms, on_delete, rescan_interval_s)",
        ),
        ('[watch]\ndebounce_ms = "500"\n', "[watch] debounce_ms must be an integer, got '500'"),
        ("[watch]\ndebounce_ms = true\n", "[watch] debounce_ms must be an integer, got True"),
        ("[watch]\ndebounce_ms = -1\n", "[watch] debounce_ms must be >= 0, got -1"),
        ('[watch]\non_delete = "maybe"\n', "[watch] on_delete must be one of delete, keep; got 'maybe'"),
        ("[database]\ndsn = 5432\n", "[database] dsn must be a string, got 5432"),
        ('[embedding]\nmodel = ""\n', "[embedding] model must not be empty"),
        ('[paths]\nconversations = ""\n', "[paths] conversations must be a non-empty path string"),
        ('paths = "conversations"\n', "[paths] must be a table, not str"),
        (
            "[embedding]\nchunk_tokens = 64\nchunk_overlap = 32\n",
            "[embedding] chunk_overlap must be less than half of chunk_tokens",
        ),
        ("[embedding]\nchunk_tokens = 8\nchunk_overlap = 2\n", "[embedding] chunk_tokens must be >= 16"),
        ("[embedding]\nbatch_size = 0\n", "[embedding] batch_size must be >= 1"),
        ('[embedding]\ndevice = "tpu"\n', "[embedding] device must be auto, cpu, cuda[:N] or mps; got 'tpu'"),
        (
            '[embedding]\nprecision = "int4"\n',
            "[embedding] precision must be one of auto, fp32, bf16, fp16, onnx-fp32, onnx-int8; got 'int4'",
        ),
        (
            '[embedding]\nprecision = "onnx-int8"\ndevice = "cuda"\n',
            "[embedding] precision onnx-int8 runs on the CPU: set device to auto or cpu",
        ),
        (
            '[embedding]\nprecision = "fp16"\ndevice = "cpu"\n',
            "[embedding] precision fp16 needs a GPU (device auto, cuda[:N] or mps); on a CPU use auto",
        ),
        ("[watch]\ndebounce_ms = 2000\nmax_wait_ms = 1000\n", "[watch] debounce_ms must not exceed max_wait_ms"),
        ("[watch]\nrescan_interval_s = 0\n", "[watch] rescan_interval_s must be >= 1"),
    ],
    ids=[
        "unknown-section",
        "unknown-key",
        "string-for-int",
        "bool-for-int",
        "negative-int",
        "bad-literal",
        "int-for-string",
        "empty-string",
        "empty-path",
        "section-not-table",
        "overlap-half-of-chunk",
        "chunk-too-small",
        "batch-size-zero",
        "bad-device",
        "bad-precision",
        "onnx-on-gpu",
        "fp16-on-cpu",
        "debounce-over-max-wait",
        "rescan-zero",
    ],
)
def test_file_error_message(tmp_path: Path, text: str, message: str) -> None:
    """A wrong key or value in the file is a ConfigError whose text names it."""
    assert config_error(write(tmp_path / "c.toml", text), {}) == message


def test_invalid_toml_names_the_file_and_the_position(tmp_path: Path) -> None:
    """A file that is not TOML is a ConfigError naming the file, line and column."""
    path = write(tmp_path / "c.toml", "[watch\ndebounce_ms = 1\n")
    assert config_error(path, {}) == (
        f"{path.resolve()}: not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 7)"
    )


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    """A file that is not UTF-8 is a ConfigError naming the file, not a crash."""
    path = tmp_path / "c.toml"
    path.write_bytes(b'[paths]\nconversations = "caf\xe9"\n')
    assert config_error(path, {}).startswith(f"{path.resolve()}: not valid TOML: ")


def test_missing_explicit_file(tmp_path: Path) -> None:
    """A file named explicitly that does not exist is an error, not a silent fallback to the defaults."""
    path = tmp_path / "nope.toml"
    assert config_error(path, {}) == f"configuration file not found: {path}"


def test_missing_memoryd_config_file(tmp_path: Path, isolated: Path) -> None:
    """MEMORYD_CONFIG naming a missing file is an error even when ./config.toml exists."""
    write(isolated / "config.toml", "")
    path = tmp_path / "nope.toml"
    assert config_error(None, {"MEMORYD_CONFIG": str(path)}) == f"configuration file not found: {path}"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MEMORYD_FOO": "1"}, "unknown environment variable MEMORYD_FOO (expected MEMORYD_<SECTION>_<KEY>)"),
        (
            {"MEMORYD_WATCH_DEBOUNCE": "1"},
            "unknown key [watch] debounce (known: debounce_ms, max_wait_ms, on_delete, rescan_interval_s)",
        ),
        ({"MEMORYD_WATCH_DEBOUNCE_MS": "soon"}, "[watch] debounce_ms must be an integer, got 'soon'"),
        ({"MEMORYD_WATCH_DEBOUNCE_MS": "1.5"}, "[watch] debounce_ms must be an integer, got '1.5'"),
        ({"MEMORYD_WATCH_ON_DELETE": "maybe"}, "[watch] on_delete must be one of delete, keep; got 'maybe'"),
        ({"MEMORYD_WATCH_DEBOUNCE_MS": "20000"}, "[watch] debounce_ms must not exceed max_wait_ms"),
    ],
    ids=["unknown-variable", "unknown-key", "not-an-integer", "float", "bad-literal", "inconsistent"],
)
def test_environment_error_message(environ: dict[str, str], message: str) -> None:
    """A wrong MEMORYD_* variable is a ConfigError whose text names it."""
    assert config_error(None, environ) == message


def test_memoryd_dsn_with_non_table_database_is_a_config_error(tmp_path: Path) -> None:
    """MEMORYD_DSN with a file whose `database` is not a table is a ConfigError, not a TypeError."""
    path = write(tmp_path / "c.toml", 'database = "postgresql://u@h/db"\n')
    assert config_error(path, {"MEMORYD_DSN": "postgresql://env@h/db"}) == "[database] must be a table, not str"


def test_precision_from_the_environment() -> None:
    """MEMORYD_EMBEDDING_PRECISION picks the precision; the default is auto."""
    assert load_config(None, {}).embedding.precision == "auto"
    assert load_config(None, {"MEMORYD_EMBEDDING_PRECISION": "onnx-int8"}).embedding.precision == "onnx-int8"


def test_mirror_paths(tmp_path: Path) -> None:
    """[mirror] paths are resolved like other paths, ~ expanded; an empty one (the default) mirrors nothing."""
    path = write(tmp_path / "config.toml", '[mirror]\nclaude_code = "~/.claude/projects"\ncodex = "logs/codex"\n')
    config = load_config(path, {})
    assert config.mirror.claude_code == Path("~/.claude/projects").expanduser()
    assert config.mirror.codex == tmp_path / "logs" / "codex"
    assert load_config(path, {"MEMORYD_MIRROR_CODEX": ""}).mirror.codex is None
    assert Config().mirror.claude_code is None
    assert config_error(path, {"MEMORYD_MIRROR_TOOL_RESULT_CHARS": "lots"}) == (
        "[mirror] tool_result_chars must be an integer, got 'lots'"
    )


# -- [source] and the [sources] → [mirror] rename ------------------------------


def test_source_name_defaults_to_the_host_name(tmp_path: Path) -> None:
    """Without [source] name, this machine's source is its host name; the file and MEMORYD_SOURCE_NAME set it."""
    assert load_config(None, {}).source.name == socket.gethostname()
    path = write(tmp_path / "config.toml", '[source]\nname = "laptop"\n')
    assert load_config(path, {}).source.name == "laptop"
    assert load_config(path, {"MEMORYD_SOURCE_NAME": "desktop"}).source.name == "desktop"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "[source] name must not be empty"),
        (
            "lap\ttop",
            "[source] name (MEMORYD_SOURCE_NAME; default: the host name) must be printable (no control characters),"
            " got 'lap\\ttop'",
        ),
        (
            "x" * 65,
            "[source] name (MEMORYD_SOURCE_NAME; default: the host name) must be at most 64 characters,"
            f" got 65: {'x' * 65!r}",
        ),
    ],
)
def test_bad_source_names_are_named(name: str, message: str) -> None:
    """An empty, unprintable or over-long source name is a configuration error naming [source] name."""
    assert config_error(None, {"MEMORYD_SOURCE_NAME": name}) == message


def test_sources_section_is_a_deprecated_alias_of_mirror(tmp_path: Path) -> None:
    """[sources] still configures the mirror, and one config_deprecated warning names [mirror]; [mirror] keys win."""
    path = write(tmp_path / "config.toml", '[sources]\ncodex = "logs/codex"\ntool_result_chars = 10\n')
    config = load_config(path, {"MEMORYD_MIRROR_TOOL_RESULT_CHARS": "20"})
    assert config.mirror.codex == tmp_path / "logs" / "codex"
    assert config.mirror.tool_result_chars == 20
    assert config.deprecated == (("sources", "mirror"),)
    with capture_logs() as logs:
        log_deprecated(config)
    assert [(e["event"], e["section"], e["use"], e["log_level"]) for e in logs] == [
        ("config_deprecated", "sources", "mirror", "warning")
    ]
    assert load_config(None, {"MEMORYD_SOURCES_CODEX": "/x"}).mirror.codex == Path("/x")
    assert load_config(write(tmp_path / "new.toml", '[mirror]\ncodex = "c"\n'), {}).deprecated == ()
