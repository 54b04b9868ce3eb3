"""Summary folders → Summary values: formats, default keys, per-file errors, duplicates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memoryd.errors import ParseError
from memoryd.records import Summary
from memoryd.summaries import parse_summary_file, parse_summary_folder


def make_folder(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    folder = tmp_path / "2025-06-25__slug"
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content.encode("utf-8") if isinstance(content, str) else content
        (folder / name).write_bytes(data)
    return folder


def jsonl(*objects: object) -> str:
    return "".join(json.dumps(obj, ensure_ascii=False) + "\n" for obj in objects)


def summaries_of(result: list[Summary] | ParseError) -> list[Summary]:
    assert isinstance(result, list), result
    return result


def error_of(result: list[Summary] | ParseError) -> ParseError:
    assert isinstance(result, ParseError), result
    return result


L1 = {"level": 1, "covers": [0, 1], "content": "résumé"}


def test_single_json_summary(tmp_path: Path) -> None:
    """A .json object is one summary keyed by the file stem; covers sorted and unique."""
    document = {
        "level": 2,
        "covers": [3, 1, 2, 1],
        "content": "c",
        "topics": ["a", " b", "a", ""],
    }
    folder = make_folder(tmp_path, {"l2.json": json.dumps(document)})
    path = folder / "l2.json"
    assert parse_summary_folder(folder) == {
        path: [
            Summary(
                level=2,
                key="l2",
                covers=(1, 2, 3),
                content="c",
                topics=("a", "b"),
                source_path=path,
            )
        ]
    }


def test_jsonl_summaries_default_keys(tmp_path: Path) -> None:
    """Each .jsonl line is a summary keyed stem:line (1-based, blank lines counted)."""
    text = jsonl(L1) + "\n" + jsonl({"level": 1, "content": "x"})
    folder = make_folder(tmp_path, {"l1.jsonl": text})
    summaries = summaries_of(parse_summary_folder(folder)[folder / "l1.jsonl"])
    assert [(s.level, s.key, s.covers, s.topics) for s in summaries] == [
        (1, "l1:1", (0, 1), ()),
        (1, "l1:3", (), ()),
    ]


def test_json_array_default_keys(tmp_path: Path) -> None:
    """A .json array holds several summaries keyed stem:index (0-based)."""
    folder = make_folder(tmp_path, {"all.json": json.dumps([L1, {**L1, "level": 2}])})
    summaries = summaries_of(parse_summary_folder(folder)[folder / "all.json"])
    assert [(s.level, s.key) for s in summaries] == [(1, "all:0"), (2, "all:1")]


def test_explicit_key(tmp_path: Path) -> None:
    """An explicit key replaces the default one."""
    folder = make_folder(tmp_path, {"x.jsonl": jsonl({**L1, "key": " part-1 "})})
    summaries = summaries_of(parse_summary_folder(folder)[folder / "x.jsonl"])
    assert summaries[0].key == "part-1"


def test_only_summary_files_are_read(tmp_path: Path) -> None:
    """Hidden files, editor leftovers, other suffixes and subfolders are ignored; sorted."""
    folder = make_folder(
        tmp_path,
        {
            "b.json": json.dumps(L1),
            "a.JSONL": jsonl(L1),
            ".hidden.json": "garbage",
            ".b.json.swp": "garbage",
            "b.json~": "garbage",
            "b.json.tmp": "garbage",
            "#b.json#": "garbage",
            "notes.md": "garbage",
        },
    )
    (folder / "sub.json").mkdir()
    (folder / "sub.json" / "c.json").write_text("garbage", encoding="utf-8")
    assert list(parse_summary_folder(folder)) == [folder / "a.JSONL", folder / "b.json"]


def test_symlink_inside_the_watched_folder_is_read(tmp_path: Path) -> None:
    """A summary file symlinked to another file of the summaries folder is read like that file."""
    shared = tmp_path / "shared.json"
    shared.write_text(json.dumps(L1), encoding="utf-8")
    folder = make_folder(tmp_path, {})
    (folder / "l1.json").symlink_to(shared)
    assert [s.key for s in summaries_of(parse_summary_folder(folder)[folder / "l1.json"])] == ["l1"]


def test_symlink_to_a_folder_is_an_error(tmp_path: Path) -> None:
    """A summary name that leads to a folder is that file's error, not a crash or a silent skip."""
    (tmp_path / "elsewhere").mkdir()
    folder = make_folder(tmp_path, {})
    (folder / "x.json").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert error_of(parse_summary_folder(folder)[folder / "x.json"]).reason == "not a regular file"


def test_missing_folder_has_no_summaries(tmp_path: Path) -> None:
    """A slug without a summaries folder simply has none."""
    assert parse_summary_folder(tmp_path / "nothing") == {}


def test_folder_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    """A file where the folder should be raises a ParseError naming it."""
    path = tmp_path / "slug"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(ParseError) as info:
        parse_summary_folder(path)
    assert info.value.path == path


def test_one_bad_file_does_not_affect_others(tmp_path: Path) -> None:
    """A broken file is an error of its own; the folder's other files still parse."""
    folder = make_folder(tmp_path, {"a.json": "{broken", "b.json": json.dumps(L1)})
    results = parse_summary_folder(folder)
    assert error_of(results[folder / "a.json"]).path == folder / "a.json"
    assert len(summaries_of(results[folder / "b.json"])) == 1


def test_bad_jsonl_line_fails_the_whole_file(tmp_path: Path) -> None:
    """One bad line turns the whole .jsonl into an error with that line, keeping none of it."""
    text = jsonl(L1, {**L1, "level": 2}) + '{"level": 3}\n' + jsonl({**L1, "level": 4})
    folder = make_folder(tmp_path, {"s.jsonl": text})
    error = error_of(parse_summary_folder(folder)[folder / "s.jsonl"])
    assert (error.path, error.line) == (folder / "s.jsonl", 3)
    assert error.reason.startswith("content")


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("{broken", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"content": "x"}', "level"),
        ('{"level": 0, "content": "x"}', "level"),
        ('{"level": true, "content": "x"}', "level"),
        ('{"level": "1", "content": "x"}', "level"),
        ('{"level": 1.0, "content": "x"}', "level"),
        ('{"level": 1, "content": "x", "covers": 3}', "covers"),
        ('{"level": 1, "content": "x", "covers": [-1]}', "covers"),
        ('{"level": 1, "content": "x", "covers": [true]}', "covers"),
        ('{"level": 1, "content": "x", "covers": ["0"]}', "covers"),
        ('{"level": 1}', "content"),
        ('{"level": 1, "content": "  "}', "content"),
        ('{"level": 1, "content": ["x"]}', "content"),
        ('{"level": 1, "content": "x", "topics": "a"}', "topics"),
        ('{"level": 1, "content": "x", "topics": [1]}', "topics"),
        ('{"level": 1, "content": "x", "key": ""}', "key"),
        ('{"level": 1, "content": "x", "key": 7}', "key"),
    ],
)
def test_jsonl_validation_names_path_line_and_field(tmp_path: Path, line: str, field: str) -> None:
    """Each invalid field is reported with the file, the line and the field's name."""
    folder = make_folder(tmp_path, {"s.jsonl": jsonl(L1) + line + "\n"})
    error = error_of(parse_summary_folder(folder)[folder / "s.jsonl"])
    assert (error.path, error.line) == (folder / "s.jsonl", 2)
    assert error.reason.startswith(field)


def test_json_validation_names_path_and_field(tmp_path: Path) -> None:
    """An invalid field in a .json object names the file and the field."""
    folder = make_folder(tmp_path, {"s.json": '{"level": 0, "content": "x"}'})
    error = error_of(parse_summary_folder(folder)[folder / "s.json"])
    assert (error.path, error.line) == (folder / "s.json", None)
    assert error.reason.startswith("level: expected an integer ≥ 1")


def test_json_array_validation_names_index(tmp_path: Path) -> None:
    """An invalid element of a .json array names its index and the field."""
    folder = make_folder(tmp_path, {"s.json": json.dumps([L1, {"level": 1}])})
    error = error_of(parse_summary_folder(folder)[folder / "s.json"])
    assert error.path == folder / "s.json"
    assert error.reason.startswith("[1]: content")


def test_json_syntax_error_has_line(tmp_path: Path) -> None:
    """Invalid JSON in a .json file reports the decoder's line."""
    folder = make_folder(tmp_path, {"s.json": '{\n"level": 1,\n}'})
    error = error_of(parse_summary_folder(folder)[folder / "s.json"])
    assert (error.path, error.line) == (folder / "s.json", 3)


def test_duplicate_across_files(tmp_path: Path) -> None:
    """The second file (in sorted order) claiming a (level, key) is the error, naming the first."""
    folder = make_folder(
        tmp_path,
        {
            "a.json": json.dumps({**L1, "key": "k"}),
            "b.jsonl": jsonl({**L1, "level": 2}, {**L1, "key": "k"}),
        },
    )
    results = parse_summary_folder(folder)
    assert len(summaries_of(results[folder / "a.json"])) == 1
    error = error_of(results[folder / "b.jsonl"])
    assert (error.path, error.line) == (folder / "b.jsonl", 2)
    assert "duplicate summary (level 1, key 'k')" in error.reason
    assert "a.json" in error.reason


def test_same_key_other_level_is_no_duplicate(tmp_path: Path) -> None:
    """Identity is (level, key): the same key at two levels is two summaries."""
    folder = make_folder(tmp_path, {"s.jsonl": jsonl({**L1, "key": "k"}, {**L1, "level": 2, "key": "k"})})
    assert len(summaries_of(parse_summary_folder(folder)[folder / "s.jsonl"])) == 2


def test_duplicate_within_a_file(tmp_path: Path) -> None:
    """Two lines of one .jsonl with the same (level, key) fail that file at the second line."""
    folder = make_folder(tmp_path, {"s.jsonl": jsonl({**L1, "key": "k"}, {**L1, "key": "k"})})
    error = error_of(parse_summary_folder(folder)[folder / "s.jsonl"])
    assert (error.path, error.line) == (folder / "s.jsonl", 2)
    assert "s.jsonl:1" in error.reason
    with pytest.raises(ParseError):
        parse_summary_file(folder / "s.jsonl")


def test_failed_file_claims_no_keys(tmp_path: Path) -> None:
    """Keys of a file that failed do not make a later file a duplicate."""
    folder = make_folder(
        tmp_path,
        {
            "a.jsonl": jsonl({**L1, "key": "k"}) + "{broken\n",
            "b.json": json.dumps({**L1, "key": "k"}),
        },
    )
    results = parse_summary_folder(folder)
    error_of(results[folder / "a.jsonl"])
    assert [s.key for s in summaries_of(results[folder / "b.json"])] == ["k"]


def test_empty_files(tmp_path: Path) -> None:
    """An empty .jsonl holds no summaries; an empty .json is an error; [] holds none."""
    folder = make_folder(tmp_path, {"a.jsonl": "", "b.json": "", "c.json": "[]"})
    results = parse_summary_folder(folder)
    assert results[folder / "a.jsonl"] == []
    error = error_of(results[folder / "b.json"])
    assert (error.path, error.reason) == (folder / "b.json", "empty file")
    assert results[folder / "c.json"] == []


def test_invalid_utf8_is_an_error(tmp_path: Path) -> None:
    """Undecodable bytes make the file an error naming it."""
    folder = make_folder(tmp_path, {"s.jsonl": jsonl(L1).encode() + b"\xc3\x28\n"})
    error = error_of(parse_summary_folder(folder)[folder / "s.jsonl"])
    assert error.path == folder / "s.jsonl"
    assert error.line == 2
    assert error.reason.startswith("not valid UTF-8 at byte")


def test_clean_text_applied(tmp_path: Path) -> None:
    """NUL in content, topics and key becomes U+FFFD."""
    document = '{"level": 1, "content": "a\\u0000b", "topics": ["t\\u0000"], "key": "k\\u0000"}'
    folder = make_folder(tmp_path, {"s.json": document})
    summary = summaries_of(parse_summary_folder(folder)[folder / "s.json"])[0]
    assert (summary.content, summary.topics, summary.key) == (
        "a\ufffdb",
        ("t\ufffd",),
        "k\ufffd",
    )


def test_bom_is_stripped(tmp_path: Path) -> None:
    """A leading UTF-8 BOM does not break the first line."""
    folder = make_folder(tmp_path, {"s.jsonl": b"\xef\xbb\xbf" + jsonl(L1).encode()})
    assert len(summaries_of(parse_summary_folder(folder)[folder / "s.jsonl"])) == 1


# --- never anything but ParseError

_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 5) | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["level", "covers", "content", "topics", "key"]),
            children,
            max_size=5,
        )
    ),
    max_leaves=12,
)
_TEXT = st.one_of(
    st.text(),
    _JSON_VALUES.map(json.dumps),
    st.lists(_JSON_VALUES.map(json.dumps), max_size=5).map("\n".join),
)
_NAMES = st.sampled_from(["s.json", "s.jsonl"])


def _check_fuzzed(folder: Path) -> None:
    for path, result in parse_summary_folder(folder).items():
        if isinstance(result, ParseError):
            assert result.path == path
            continue
        for summary in result:
            assert summary.level >= 1
            assert summary.content.strip()
            assert list(summary.covers) == sorted(set(summary.covers))


def _reset(folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=300)
@given(name=_NAMES, text=_TEXT)
def test_random_text_only_raises_parse_error(tmp_path: Path, name: str, text: str) -> None:
    """Any text in a summary file gives summaries or a ParseError for that file, nothing else."""
    folder = tmp_path / "slug"
    _reset(folder)
    (folder / name).write_bytes(text.encode("utf-8", "surrogatepass"))
    _check_fuzzed(folder)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(name=_NAMES, data=st.binary())
def test_random_bytes_only_raise_parse_error(tmp_path: Path, name: str, data: bytes) -> None:
    """Any bytes in a summary file give summaries or a ParseError for that file, nothing else."""
    folder = tmp_path / "slug"
    _reset(folder)
    (folder / name).write_bytes(data)
    _check_fuzzed(folder)
