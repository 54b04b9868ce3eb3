"""Embedding speed: memoryd's Embedder (precision "auto", as the daemon runs it) vs plain fp32.

The texts are the messages and summaries of a generated tree (bench/generate.py:
short questions, long answers, French and English), chunked as memoryd chunks
them.  Both sides encode the same chunks:

- ours: what ``embed_pending`` does per transaction, without the database:
  take ``max(batch_size, 16)`` texts, chunk them, ``Embedder.encode`` the
  chunks (chunking included in the time);
- baseline: sentence-transformers' default ``encode`` (fp32, batch size 32) of
  all the chunks, the model loaded plainly (chunking not timed).

Printed: texts/s of each and the speed ratio, the mean and min cosine of our
vectors to the fp32 ones, what "auto" chose and what it measured on its probe,
then texts/s and cosines of every precision on a subset.  Timings alternate
between the two sides and the best of ``--repeats`` is kept, because a 2-core
machine shared with other work is noisy.

    .venv/bin/python bench/embed.py [--conversations 40] [--repeats 2] [--subset 250]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import timed
from bench.generate import write_tree
from memoryd.config import EmbeddingConfig, LogConfig
from memoryd.embed import Embedder, Vectors, cpu_flags, resolve_model_path
from memoryd.formats import parse_conversation
from memoryd.log import configure_logging
from memoryd.summaries import parse_summary_folder


def generated_texts(conversations: int) -> list[str]:
    """The contents memoryd would store for a generated tree: messages, then summaries, per slug."""
    texts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="memoryd-bench-embed-") as tmp:
        root = Path(tmp)
        write_tree(root, conversations, seed=1)
        for folder in sorted((root / "conversations").iterdir()):
            texts.extend(m.content for m in parse_conversation(folder).messages)
            for parsed in parse_summary_folder(root / "summaries" / folder.name).values():
                assert not isinstance(parsed, Exception), parsed
                texts.extend(s.content for s in parsed)
    return texts


def chunk_texts(embedder: Embedder, texts: list[str]) -> list[str]:
    return [t[s.start : s.end] for t in texts for s in embedder.chunk(t)]


def ours(embedder: Embedder, texts: list[str]) -> Vectors:
    """Chunk and encode as ``embed_pending`` does, one transaction's worth of texts at a time."""
    per_transaction = max(embedder.config.batch_size, 16)
    parts = [
        embedder.encode(chunk_texts(embedder, texts[i : i + per_transaction]))
        for i in range(0, len(texts), per_transaction)
    ]
    return np.concatenate(parts)


def cosines(a: Vectors, b: Vectors) -> tuple[float, float]:
    values = (a * b).sum(axis=1)
    return float(values.mean()), float(values.min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--subset", type=int, default=250, help="texts for the per-precision figures (0: skip)")
    args = parser.parse_args()
    configure_logging(LogConfig(level="warning"))
    load_before = os.getloadavg()[0]

    from sentence_transformers import SentenceTransformer

    embedder = Embedder(EmbeddingConfig())  # precision "auto", as the daemon runs
    plain = SentenceTransformer(str(resolve_model_path(embedder.name)), device=embedder.device, local_files_only=True)
    texts = generated_texts(args.conversations)
    chunks = chunk_texts(embedder, texts)
    tokens = sum(len(ids) for ids in embedder.tokenizer(chunks, truncation=True, max_length=256)["input_ids"])

    plain.encode(chunks[:32], normalize_embeddings=True)  # warm-up, both sides
    ours(embedder, texts[:32])
    t_base, t_ours = float("inf"), float("inf")
    for _ in range(args.repeats):
        with timed() as t:
            reference = plain.encode(chunks, normalize_embeddings=True, convert_to_numpy=True)
        t_base = min(t_base, t[0])
        with timed() as t:
            vectors = ours(embedder, texts)
        t_ours = min(t_ours, t[0])
    mean, low = cosines(vectors, np.asarray(reference, dtype=np.float32))

    print(f"device: {embedder.device}; CPU flags: {', '.join(sorted(cpu_flags() & _INTERESTING)) or 'n/a'}")
    print(f"texts: {len(texts)} ({len(chunks)} chunks, {tokens} tokens), {args.conversations} generated conversations")
    print(
        f"baseline  sentence-transformers encode, fp32, batch 32: {t_base:6.1f} s  {len(texts) / t_base:6.1f} texts/s"
        f"  ({len(chunks) / t_base:.1f} chunks/s)"
    )
    print(
        f"ours      Embedder, precision auto -> {embedder.precision}:"
        f" {t_ours:6.1f} s  {len(texts) / t_ours:6.1f} texts/s  ({len(chunks) / t_ours:.1f} chunks/s)"
        f"   speed ratio {t_base / t_ours:.2f}x"
    )
    print(f"cosine of ours to fp32: mean {mean:.4f}  min {low:.4f}  (bar: mean >= 0.99)")
    print(f'"auto" chose {embedder.precision} (probe mean cosine {embedder.probe_cosine:.4f}); its measurements:')
    for name, figures in embedder.candidates.items():
        print(f"    {name:10s} {json.dumps(figures, ensure_ascii=False)}")

    if args.subset:
        sub_texts = texts[: args.subset]
        sub_reference = np.asarray(plain.encode(chunk_texts(embedder, sub_texts), normalize_embeddings=True))
        with timed() as t:
            plain.encode(chunk_texts(embedder, sub_texts), normalize_embeddings=True)
        print(f"per precision, on the first {len(sub_texts)} texts (baseline: {len(sub_texts) / t[0]:.1f} texts/s):")
        for precision in _precisions(embedder.device):
            candidate = Embedder(EmbeddingConfig(precision=precision))
            ours(candidate, sub_texts[:16])
            with timed() as t:
                sub_vectors = ours(candidate, sub_texts)
            mean, low = cosines(sub_vectors, sub_reference)
            ran = candidate.precision if candidate.precision == precision else f"fell back to {candidate.precision}"
            print(
                f"    {precision:10s} {len(sub_texts) / t[0]:6.1f} texts/s  cosine to fp32 mean {mean:.4f}"
                f" min {low:.4f}  probe {candidate.probe_cosine:.4f}  ({ran})"
            )
    print(f"load average (1 min) before {load_before:.2f}, after {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


_INTERESTING = frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8"})


def _precisions(device: str) -> list[str]:
    if device.startswith(("cuda", "mps")):
        return ["fp32", "fp16", "bf16"]
    found = ["fp32", "onnx-fp32", "onnx-int8"]
    if cpu_flags() & {"amx_bf16", "avx512_bf16"}:
        found.append("bf16")
    return found


if __name__ == "__main__":
    main()
