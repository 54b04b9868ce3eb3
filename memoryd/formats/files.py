"""Reading input files safely: size limits, symlinks kept inside the watched folder, encodings.

Shared by every format and by ``summaries.py``: what counts as a readable
file, and how bytes become text, is decided once.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from memoryd.errors import ParseError

# A transcript or meta.json larger than this is refused before it is read: it
# would cost the daemon that much memory several times over.
MAX_FILE_BYTES = 256 * 1024 * 1024

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# Characters no text file holds in quantity: C0 controls other than
# \t \n \v \f \r and ESC (terminal transcripts keep colour codes), DEL, and
# the U+FFFD that undecodable bytes become.
_NOT_TEXT = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f\ufffd]")
_BINARY_SAMPLE = 65536  # characters looked at, like git and grep look at a file's head
_BINARY_RATIO = 0.3  # random bytes score about 0.6, text in a legacy 8-bit encoding far below 0.3


def is_ignored_name(name: str) -> bool:
    """Hidden files and editor leftovers are never input, whatever their suffix."""
    return name.startswith(".") or name.endswith(("~", "#")) or name.lower().endswith((".tmp", ".swp", ".swx", ".part"))


def readable_file(path: Path, root: Path) -> bool:
    """Whether ``path`` is a regular file that may be read, a symlink only if it stays inside ``root``.

    A missing path, a folder or a special file (FIFO, socket, device) is
    simply not input: False.  A symlink that loops, dangles or leads out of
    ``root`` (the watched folder) is a ``ParseError``: following it could read
    anything on the machine, and skipping it silently would hide the problem.
    """
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ParseError(path, f"cannot read: {exc.strerror or exc}") from exc
    if stat.S_ISLNK(st.st_mode):
        target = resolve_link(path, root)
        try:
            st = target.stat()
        except OSError as exc:
            raise ParseError(path, f"cannot read: {exc.strerror or exc}") from exc
    return stat.S_ISREG(st.st_mode)


def is_file_or_link(path: Path) -> bool:
    """A regular file or a symlink (to be judged by ``readable_file``), without following anything."""
    try:
        mode = path.lstat().st_mode
    except OSError:  # absent, or removed while listing
        return False
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


def resolve_link(path: Path, root: Path) -> Path:
    """The real path of a symlink, refused if it loops, dangles or leaves ``root``."""
    try:
        target = Path(os.path.realpath(path, strict=True))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ParseError(path, "symlink loop: not followed") from exc
        if exc.errno == errno.ENOENT:
            raise ParseError(path, "broken symlink: its target does not exist") from exc
        raise ParseError(path, f"cannot follow symlink: {exc.strerror or exc}") from exc
    try:
        base = Path(os.path.realpath(root, strict=True))
    except OSError as exc:
        raise ParseError(root, f"cannot resolve the watched folder: {exc.strerror or exc}") from exc
    if not target.is_relative_to(base):
        raise ParseError(path, f"symlink to {target}, outside the watched folder {base}: not followed")
    return target


def read_bytes(path: Path, *, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file no larger than ``limit``.

    Opened non-blocking and checked after opening, so a FIFO that replaced the
    file meanwhile is refused instead of blocking the daemon forever.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ParseError(path, f"cannot read: {exc.strerror or exc}") from exc
    try:
        with open(fd, "rb", closefd=False) as file:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ParseError(path, "not a regular file")
            if st.st_size > limit:
                raise ParseError(path, f"too large: {st.st_size} bytes (the limit is {limit})")
            data = file.read(limit + 1)
    except OSError as exc:
        raise ParseError(path, f"cannot read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ParseError(path, f"too large: over {limit} bytes")
    return data


def read_text(path: Path, *, allow_empty: bool = False) -> tuple[bytes, str]:
    """Read a file as bytes and decode it strictly as UTF-8, a leading BOM dropped.

    Bytes are returned too because hashes must describe what is on disk, not
    the decoded text; a single read keeps both consistent if the file changes
    meanwhile.  An empty file (or a lone BOM) is an error unless the format
    gives emptiness a meaning, as JSONL does ("nothing").  Transcripts use the
    lenient ``decode_text`` instead.
    """
    data = read_bytes(path)
    offset = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    try:
        text = data[offset:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = offset + exc.start
        line = data[:at].count(b"\n") + 1
        raise ParseError(path, f"not valid UTF-8 at byte {at}", line=line) from exc
    if not text and not allow_empty:
        raise ParseError(path, "empty file")
    return data, text


def decode_text(path: Path, data: bytes) -> tuple[str, str | None]:
    """Bytes → text without failing on the encoding; the warning says what was repaired.

    UTF-8 is expected (a BOM is dropped); a UTF-16 byte order mark is
    honoured; other bytes that are not UTF-8 become U+FFFD.  Data that is
    mostly not text (an image, an archive, text in an 8-bit encoding that
    would come out as mostly U+FFFD) is refused: stored, it would only
    replace a good conversation with noise.
    """
    warning = None
    if data.startswith(_UTF16_BOMS):
        text = data.decode("utf-16", "replace")
        warning = f"{path.name}: decoded as UTF-16 (byte order mark)"
    else:
        offset = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
        try:
            text = data[offset:].decode("utf-8")
        except UnicodeDecodeError as exc:
            text = data[offset:].decode("utf-8", "replace")
            at = offset + exc.start
            line = data[:at].count(b"\n") + 1
            warning = (
                f"{path.name}: not valid UTF-8 (first bad byte at offset {at}, line {line}),"
                " undecodable bytes replaced by U+FFFD"
            )
    sample = text[:_BINARY_SAMPLE]
    if sample:
        bad = sum(1 for _ in _NOT_TEXT.finditer(sample))
        if bad / len(sample) > _BINARY_RATIO:
            raise ParseError(
                path,
                f"not text (binary data, or an encoding other than UTF-8): {bad} of the first {len(sample)}"
                " characters are control characters or undecodable bytes",
            )
    return text, warning
