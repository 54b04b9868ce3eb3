"""The model's fast tokenizer, used directly (the Rust ``tokenizers`` library, without transformers).

Loading transformers and torch costs about 170 MB of memory for what a
50 MB ONNX model and a 1 MB tokenizer do alone; the daemon keeps only this
(see ``Embedder``).  Whole batches go to Rust in one call
(``encode_batch``): token ids for encoding, character offsets for chunking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Tokenizing a 50 MB transcript at once would hold tens of millions of
# offsets in memory; long texts are tokenized in segments of this many
# characters, each starting a little before the previous one ended.
SEGMENT_CHARS = 100_000
SEGMENT_OVERLAP_CHARS = 2_000


@dataclass(frozen=True, slots=True)
class Span:
    """A chunk of a text: character offsets into it."""

    start: int
    end: int


class Tokenizer:
    """Token ids (with the model's special tokens, cut at ``max_tokens``) and offsets (without) of whole batches.

    Two Rust tokenizers from the same definition, configured once and never
    changed afterwards: a fast tokenizer whose settings change between calls
    refuses concurrent use ("Already borrowed"), one that is only read does not.
    """

    def __init__(self, definition: str, max_tokens: int) -> None:
        from tokenizers import Tokenizer as RustTokenizer

        self.definition = definition
        self.max_tokens = max_tokens
        self._encoder = RustTokenizer.from_str(definition)
        self._encoder.no_padding()
        self._encoder.enable_truncation(max_tokens)
        self._splitter = RustTokenizer.from_str(definition)
        self._splitter.no_padding()
        self._splitter.no_truncation()
        padding = self._encoder.token_to_id("[PAD]")
        self.pad_id = int(padding) if padding is not None else 0

    @classmethod
    def from_file(cls, path: Path, max_tokens: int) -> Tokenizer:
        """The tokenizer saved by :meth:`save`."""
        return cls(path.read_text(encoding="utf-8"), max_tokens)

    @classmethod
    def from_transformers(cls, tokenizer: Any, max_tokens: int) -> Tokenizer:
        """The Rust tokenizer inside a transformers "fast" tokenizer, with its special tokens and normalizer."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            kind = type(tokenizer).__name__
            raise ValueError(f"memoryd needs a fast tokenizer (tokenizer.json); the model has {kind}")
        pad = tokenizer.pad_token_id
        self = cls(backend.to_str(), max_tokens)
        if pad is not None:
            self.pad_id = int(pad)
        return self

    def save(self, path: Path) -> None:
        """Write the definition where :meth:`from_file` reads it (whole file or nothing)."""
        partial = path.with_suffix(".partial")
        partial.write_text(self.definition, encoding="utf-8")
        partial.replace(path)

    def copy(self) -> Tokenizer:
        """An independent tokenizer, for another thread."""
        twin = Tokenizer(self.definition, self.max_tokens)
        twin.pad_id = self.pad_id
        return twin

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids as the model reads them: special tokens added, at most ``max_tokens``."""
        return [e.ids for e in self._encoder.encode_batch(list(texts))]

    def spans(self, texts: Sequence[str], window: int, overlap: int) -> list[list[Span]]:
        """Cut each text into spans of at most ``window`` tokens, ``overlap`` tokens shared between neighbours.

        A text that fits in the window is one span covering all of it (most
        messages): only its token count is looked at.
        """
        pieces: list[tuple[int, int, str]] = []  # (text index, segment start, segment)
        for n, text in enumerate(texts):
            if text.strip():
                pieces.extend((n, start, segment) for start, segment in segments(text))
        encodings = self._splitter.encode_batch([p[2] for p in pieces], add_special_tokens=False)
        offsets_of: dict[int, list[tuple[int, list[tuple[int, int]]]]] = {}
        for (n, start, _), encoding in zip(pieces, encodings, strict=True):
            offsets_of.setdefault(n, []).append((start, encoding.offsets))
        out: list[list[Span]] = []
        for n, text in enumerate(texts):
            found = offsets_of.get(n, [])
            if len(found) == 1 and len(found[0][1]) <= window:
                out.append([Span(0, len(text))])
            else:
                out.append(_window_spans(text, found, window, overlap))
        return out


def _window_spans(text: str, found: list[tuple[int, list[tuple[int, int]]]], window: int, overlap: int) -> list[Span]:
    spans: list[Span] = []
    step = window - overlap
    for seg_start, offsets in found:
        if not offsets:
            continue
        for first in range(0, len(offsets), step):
            last = min(first + window, len(offsets)) - 1
            span = Span(seg_start + offsets[first][0], seg_start + offsets[last][1])
            if not spans or span.end > spans[-1].end:
                spans.append(span)
            if last == len(offsets) - 1:
                break
    if len(spans) <= 1:
        return [Span(0, len(text))]
    return spans


def segments(text: str) -> list[tuple[int, str]]:
    """``text`` cut at spaces into overlapping pieces of at most SEGMENT_CHARS, with their start offsets."""
    if len(text) <= SEGMENT_CHARS:
        return [(0, text)]
    out: list[tuple[int, str]] = []
    start = 0
    while start < len(text):
        end = min(start + SEGMENT_CHARS, len(text))
        if end < len(text):
            cut = text.rfind(" ", start + SEGMENT_CHARS // 2, end)
            end = cut if cut > 0 else end
        out.append((start, text[start:end]))
        if end >= len(text):
            break
        start = max(end - SEGMENT_OVERLAP_CHARS, start + 1)
    return out
