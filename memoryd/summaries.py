"""Summary folders → ``Summary`` values, one verdict per file.

Pure, like ``memoryd.formats``.  Results are per file because a file is the unit
that is edited: one bad file (or one bad line of a ``.jsonl``) turns that
whole file into an error, which lets the store keep the summaries it already
holds from that file while the folder's other files go on being synced.

Unlike transcripts, summary files are decoded strictly as UTF-8: tools write
them, so bytes that are not UTF-8 mean a damaged file, and an error (which
keeps the file's stored summaries) is safer than storing a repaired guess.
Symlinks follow the same rule as in ``memoryd.formats``: never out of the watched
folder, loops refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from memoryd.errors import ParseError
from memoryd.formats.common import Fail, load_json, short_repr
from memoryd.formats.files import is_file_or_link, is_ignored_name, read_text, readable_file, resolve_link
from memoryd.records import Summary, clean_text

SUMMARY_SUFFIXES = (".json", ".jsonl")


@dataclass(frozen=True, slots=True)
class _Located:
    """A summary and where it was written, to name both places of a duplicate."""

    summary: Summary
    where: str
    line: int | None


def summary_files(folder: Path) -> list[Path]:
    """The folder's summary files, sorted; a missing folder simply holds none.

    Symlinks are listed whatever they point to, so that one leading out of
    the watched folder, dangling or looping becomes that file's error.
    """
    try:
        if not folder.exists():
            return []
        if not folder.is_dir():
            raise ParseError(folder, "not a folder")
        return [
            path
            for path in sorted(folder.iterdir())
            if path.suffix.lower() in SUMMARY_SUFFIXES and not is_ignored_name(path.name) and is_file_or_link(path)
        ]
    except OSError as exc:
        raise ParseError(folder, f"cannot list: {exc.strerror or exc}") from exc


def parse_summary_folder(folder: Path, *, root: Path | None = None) -> dict[Path, list[Summary] | ParseError]:
    """Every summary file of a folder, each with its summaries or the error that stopped it.

    A (level, key) already taken by an earlier file (in sorted order) makes the
    later file the error, so which one wins does not depend on timing.
    ``root`` is the watched folder (default: the folder's parent); no symlink
    is followed out of it.
    """
    root = folder.parent if root is None else root
    if folder.is_symlink():
        resolve_link(folder, root)  # a loop or a link out of the root: the whole folder is in error
    results: dict[Path, list[Summary] | ParseError] = {}
    taken: dict[tuple[int, str], str] = {}
    for path in summary_files(folder):
        try:
            located = _parse_file(path, root)
            _check_unique(path, located, taken)
        except ParseError as exc:
            results[path] = exc
            continue
        taken.update({(item.summary.level, item.summary.key): item.where for item in located})
        results[path] = [item.summary for item in located]
    return results


def parse_summary_file(path: Path, *, root: Path | None = None) -> list[Summary]:
    """The summaries of one file, duplicates within it refused; ``root`` as for ``parse_summary_folder``."""
    located = _parse_file(path, path.parent.parent if root is None else root)
    _check_unique(path, located, {})
    return [item.summary for item in located]


def _check_unique(path: Path, located: Sequence[_Located], taken: dict[tuple[int, str], str]) -> None:
    """Refuse a (level, key) taken by an earlier file or an earlier entry of this one."""
    own: dict[tuple[int, str], str] = {}
    for item in located:
        identity = (item.summary.level, item.summary.key)
        first = taken.get(identity) or own.get(identity)
        if first is not None:
            raise ParseError(
                path,
                f"duplicate summary (level {identity[0]}, key {identity[1]!r}), already defined in {first}",
                line=item.line,
            )
        own[identity] = item.where


def _parse_file(path: Path, root: Path) -> list[_Located]:
    try:
        stem = path.stem
        stem.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ParseError(path, "file name is not valid UTF-8") from exc
    if not readable_file(path, root):
        raise ParseError(path, "not a regular file")
    if path.suffix.lower() == ".jsonl":
        return _parse_jsonl(path, stem)
    return _parse_json(path, stem)


def _parse_jsonl(path: Path, stem: str) -> list[_Located]:
    """One object per line; an empty file is a file with no summaries (yet)."""
    _data, text = read_text(path, allow_empty=True)
    located = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue

        def fail(reason: str, number: int = number) -> ParseError:
            return ParseError(path, reason, line=number)

        summary = _summary(load_json(line, fail), path, f"{stem}:{number}", fail)
        located.append(_Located(summary, f"{path.name}:{number}", number))
    return located


def _parse_json(path: Path, stem: str) -> list[_Located]:
    """One object, or leniently an array of them."""
    _data, text = read_text(path)

    def fail(reason: str) -> ParseError:
        return ParseError(path, reason)

    value = load_json(text, fail)
    if not isinstance(value, list):
        return [_Located(_summary(value, path, stem, fail), path.name, None)]
    located = []
    for index, item in enumerate(value):

        def fail_at(reason: str, index: int = index) -> ParseError:
            return ParseError(path, f"[{index}]: {reason}")

        summary = _summary(item, path, f"{stem}:{index}", fail_at)
        located.append(_Located(summary, f"{path.name}[{index}]", None))
    return located


def _summary(value: object, path: Path, default_key: str, fail: Fail) -> Summary:
    if not isinstance(value, dict):
        raise fail("expected a JSON object")
    return Summary(
        level=_level(value.get("level"), fail),
        key=_key(value.get("key"), default_key, fail),
        covers=_covers(value.get("covers"), fail),
        content=_content(value.get("content"), fail),
        topics=_topics(value.get("topics"), fail),
        source_path=path,
    )


def _level(value: object, fail: Fail) -> int:
    # JSON ``true`` decodes to a Python int; it is no level.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise fail(f"level: expected an integer ≥ 1, got {short_repr(value)}")
    return value


def _key(value: object, default: str, fail: Fail) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or not value.strip():
        raise fail(f"key: expected a non-empty string, got {short_repr(value)}")
    return clean_text(value.strip())


def _covers(value: object, fail: Fail) -> tuple[int, ...]:
    """Sorted and unique: covers is a set of seq numbers, however it was written."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise fail("covers: expected a list of integers ≥ 0")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item < 0:
            raise fail(f"covers: expected integers ≥ 0, got {short_repr(item)}")
    return tuple(sorted(set(value)))


def _content(value: object, fail: Fail) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail("content: expected a non-empty string")
    return clean_text(value)


def _topics(value: object, fail: Fail) -> tuple[str, ...]:
    """Stripped, blank ones dropped, first occurrence kept."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(topic, str) for topic in value):
        raise fail("topics: expected a list of strings")
    topics = (clean_text(topic.strip()) for topic in value)
    return tuple(dict.fromkeys(topic for topic in topics if topic))
