"""Embedding speed: ``memoryd embed`` end to end through the database, against the raw encoder and plain fp32.

The texts are the messages and summaries of a generated tree (bench/generate.py:
short questions, long answers, French and English), stored by a reconcile.
Three rates on the same texts, model load excluded:

- ours: ``embed_pending`` as ``memoryd embed`` runs it (precision "auto"):
  claims, chunking, encoding, COPY, commits;
- raw: ``Embedder.encode`` of the same chunks, one call, the same precision
  (the ceiling of ours; target on a CPU: ours >= 90% of it);
- baseline: sentence-transformers' default ``encode`` (fp32, batch size 32) of
  the same chunks, the model loaded plainly (target on CUDA: ours >= 5x).

Between repeats the embeddings and the vector cache are emptied, so every
repeat encodes everything.  The best of ``--repeats`` is kept (a shared
machine is noisy).  Then texts/s and cosines of every precision on a subset.

    .venv/bin/python -m bench.embed [--conversations 40] [--repeats 2] [--subset 250] [--model NAME|DIR]

On a lent GPU machine, bench/device/ packs and runs it (see bench/device/run.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fresh_database, server_dsn, timed, tree_config
from bench.generate import write_tree
from memoryd.config import EmbeddingConfig, LogConfig
from memoryd.db import Database
from memoryd.embed import Embedder, Vectors, cpu_flags, embed_pending, resolve_model_path
from memoryd.log import configure_logging
from memoryd.sync import Syncer


def stored_texts(db: Database) -> list[str]:
    """The contents waiting for vectors: what ``embed_pending`` will encode."""
    return [
        row[0]
        for row in db.run(
            lambda c: c.execute("SELECT content FROM messages UNION ALL SELECT content FROM summaries").fetchall()
        )
    ]


def chunk_texts(embedder: Embedder, texts: list[str]) -> list[str]:
    return [t[s.start : s.end] for t, spans in zip(texts, embedder.chunk_many(texts), strict=True) for s in spans]


def ours(embedder: Embedder, texts: list[str]) -> Vectors:
    """Raw encoding, for the per-precision figures: chunk, then one ``encode``."""
    return embedder.encode(chunk_texts(embedder, texts))


def forget_vectors(db: Database) -> None:
    db.run(lambda c: c.execute("TRUNCATE embeddings, vector_cache"))


def cosines(a: Vectors, b: Vectors) -> tuple[float, float]:
    values = (a * b).sum(axis=1)
    return float(values.mean()), float(values.min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--subset", type=int, default=250, help="texts for the per-precision figures (0: skip)")
    parser.add_argument(
        "--model", default=EmbeddingConfig().model, help="a model name or folder (the device pack's fp16 copy)"
    )
    args = parser.parse_args()
    configure_logging(LogConfig(level="warning"))
    load_before = os.getloadavg()[0]

    from sentence_transformers import SentenceTransformer

    embedder = Embedder(EmbeddingConfig(model=args.model))  # precision "auto", as the daemon runs
    plain = SentenceTransformer(str(resolve_model_path(embedder.name)), device=embedder.device, local_files_only=True)
    plain.float()  # the baseline is fp32 whatever the folder's weights are stored in
    with server_dsn() as admin, fresh_database(admin) as dsn, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tree(root, args.conversations, seed=1)
        with Database(tree_config(root, dsn).database) as db:
            Syncer(db, tree_config(root, dsn)).reconcile()
            texts = stored_texts(db)
            chunks = chunk_texts(embedder, texts)
            tokens = sum(len(ids) for ids in embedder.tokenizer.ids(chunks))
            plain.encode(chunks[:32], normalize_embeddings=True)  # warm-up, every side
            embedder.encode(chunks[:32])
            t_base, t_raw, t_ours = float("inf"), float("inf"), float("inf")
            for _ in range(args.repeats):
                with timed() as t:
                    reference = plain.encode(chunks, normalize_embeddings=True, convert_to_numpy=True)
                t_base = min(t_base, t[0])
                cpu = time.process_time()
                with timed() as t:
                    vectors = embedder.encode(chunks)
                t_raw, cpu_raw = min(t_raw, t[0]), time.process_time() - cpu
                forget_vectors(db)
                cpu = time.process_time()
                with timed() as t:
                    report = embed_pending(db, embedder)
                t_ours, cpu_ours = min(t_ours, t[0]), time.process_time() - cpu
                assert report.texts == len(texts), (report.texts, len(texts))
    mean, low = cosines(vectors, np.asarray(reference, dtype=np.float32))

    print(f"device: {embedder.device}; CPU flags: {', '.join(sorted(cpu_flags() & _INTERESTING)) or 'n/a'}")
    print(f"texts: {len(texts)} ({len(chunks)} chunks, {tokens} tokens), {args.conversations} generated conversations")
    print(
        f"baseline  sentence-transformers encode, fp32, batch 32: {t_base:6.1f} s  {len(texts) / t_base:6.1f} texts/s"
        f"  ({len(chunks) / t_base:.1f} chunks/s)"
    )
    print(
        f"raw       Embedder.encode of the chunks, {embedder.precision}: {t_raw:6.1f} s"
        f"  {len(texts) / t_raw:6.1f} texts/s"
    )
    print(
        f"ours      embed_pending through the database, auto -> {embedder.precision}:"
        f" {t_ours:6.1f} s  {len(texts) / t_ours:6.1f} texts/s  ({len(chunks) / t_ours:.1f} chunks/s)"
        f"   {t_raw / t_ours:.0%} of raw (target on a CPU >= 90%)   {t_base / t_ours:.2f}x the baseline"
    )
    print(
        f"CPU-seconds per text (this process, all threads; last repeat): ours {cpu_ours / len(texts) * 1000:.1f} ms,"
        f" raw {cpu_raw / len(texts) * 1000:.1f} ms"
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
            candidate = Embedder(EmbeddingConfig(model=args.model, precision=precision))
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
