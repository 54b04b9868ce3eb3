"""Embedding workers: texts/s with 1 and 2 ``memoryd embed --follow`` processes on one database, and the claim overhead.

The texts are those of a generated tree (bench/generate.py), stored once.
On the same texts, each round (the vectors and the vector cache emptied
before each run, so every run encodes everything):

- baseline: ``embed_pending`` in this process, as ``memoryd embed`` runs it;
- 1 worker, 2 workers: ``memoryd embed --follow`` processes, started and idle
  (model loaded, listening) before the clock starts; the clock runs from a
  ``NOTIFY`` on the workers' channel until nothing is pending.

The best of ``--rounds`` is kept for each (a shared machine is noisy), and
reported as a ratio to the baseline of the same run.  Then the claim
overhead: the same loop as one worker's, one transaction at a time (no
overlap), timing the claim, the reuse lookup and chunking, the encoding, and
the COPY and commit of each batch, per text.

    .venv/bin/python -m bench.workers [--conversations 30] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fresh_database, server_dsn, timed, tree_config
from bench.generate import write_tree
from memoryd.config import EmbeddingConfig, LogConfig
from memoryd.db import Database
from memoryd.embed import CLAIM_TEXTS_CPU, Embedder, embed_pending
from memoryd.log import configure_logging
from memoryd.pending import CHANNEL
from memoryd.store import ChunkVector, ClaimCursor, claim_pending, count_pending, reusable_vectors, write_embeddings
from memoryd.sync import Syncer


def forget_vectors(db: Database) -> None:
    db.run(lambda c: c.execute("TRUNCATE embeddings, vector_cache"))


class Worker:
    """A ``memoryd embed --follow`` process; ``idle`` is set each time it logs worker_idle."""

    def __init__(self, config_file: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEMORYD_")}
        env["MEMORYD_CONFIG"] = str(config_file)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "memoryd.cli", "embed", "--follow"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.idle = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            with contextlib.suppress(ValueError):
                if json.loads(line).get("event") == "worker_idle":
                    self.idle.set()

    def stop(self) -> str:
        """SIGTERM, wait, and the worker's last line ("embedded N text(s) ...")."""
        self.popen.send_signal(signal.SIGTERM)
        self.popen.wait(timeout=300)
        self.reader.join(timeout=10)
        assert self.popen.stdout is not None
        out = self.popen.stdout.read().strip()
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()
        return out


@contextlib.contextmanager
def workers(n: int, config_file: Path) -> Iterator[list[Worker]]:
    started = [Worker(config_file) for _ in range(n)]
    try:
        for w in started:
            if not w.idle.wait(600):
                raise RuntimeError("a worker never became idle")
        yield started
    finally:
        for w in started:
            if w.popen.poll() is None:
                w.stop()


def run_workers(db: Database, n: int, config_file: Path, texts: int) -> tuple[float, list[str]]:
    """Seconds from a NOTIFY until nothing is pending, with ``n`` idle workers; each worker's last line."""
    with workers(n, config_file) as running:
        forget_vectors(db)
        with timed() as t:
            db.run(lambda c: c.execute(f"NOTIFY {CHANNEL}"))
            while db.run(count_pending, EmbeddingConfig().model):
                time.sleep(0.05)
        lines = [w.stop() for w in running]
    return t[0], lines


def claim_overhead(db: Database, embedder: Embedder) -> dict[str, float]:
    """Seconds per text of each step of a worker's batch, run one transaction at a time."""
    forget_vectors(db)
    spent = {"claim": 0.0, "reuse+chunk": 0.0, "encode": 0.0, "copy+commit": 0.0}
    texts = 0
    cursor = ClaimCursor()
    while True:
        with db.connection() as conn:
            started = time.perf_counter()
            batch = claim_pending(conn, embedder.name, CLAIM_TEXTS_CPU, cursor)
            claimed = time.perf_counter()
            spent["claim"] += claimed - started
            if not batch:
                break
            cursor = cursor.after(batch)
            vectors_of = reusable_vectors(conn, embedder.name, batch)
            todo = [t for t in batch if t.content_hash not in vectors_of]
            spans = embedder.chunk_many([t.content for t in todo])
            pieces = [(t, i, s) for t, ss in zip(todo, spans, strict=True) for i, s in enumerate(ss)]
            chunked = time.perf_counter()
            spent["reuse+chunk"] += chunked - claimed
            vectors = embedder.encode([t.content[s.start : s.end] for t, _, s in pieces])
            encoded = time.perf_counter()
            spent["encode"] += encoded - chunked
            for n, (t, i, s) in enumerate(pieces):
                vectors_of.setdefault(t.content_hash, []).append((i, s.start, s.end, vectors[n]))
            rows = [ChunkVector(t, c, a, b, v) for t in batch for c, a, b, v in vectors_of[t.content_hash]]
            write_embeddings(conn, embedder.name, rows)
            texts += len(batch)
        spent["copy+commit"] += time.perf_counter() - encoded  # the COPY, and the commit as the block ends
    return {step: seconds / max(texts, 1) for step, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    configure_logging(LogConfig(level="warning"))
    load_before = os.getloadavg()[0]
    embedder = Embedder(EmbeddingConfig())  # precision "auto", as the workers run
    with server_dsn() as admin, fresh_database(admin) as dsn, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tree(root, args.conversations, seed=1)
        config_file = root / "worker.toml"
        config_file.write_text(
            f'[database]\ndsn = "{dsn}"\n[embedding]\nworker_poll_s = 600\n'
            '[log]\nformat = "json"\nlevel = "info"\n[service]\nenabled = false\n',
            encoding="utf-8",
        )
        with Database(tree_config(root, dsn).database) as db:
            Syncer(db, tree_config(root, dsn)).reconcile()
            texts = db.run(count_pending, embedder.name)
            best: dict[str, float] = {}
            splits: dict[str, list[str]] = {}
            for _ in range(args.rounds):
                forget_vectors(db)
                with timed() as t:
                    report = embed_pending(db, embedder)
                assert report.texts == texts, (report.texts, texts)
                best["baseline"] = min(best.get("baseline", float("inf")), t[0])
                for n in (1, 2):
                    seconds, lines = run_workers(db, n, config_file, texts)
                    if seconds < best.get(f"{n}", float("inf")):
                        best[f"{n}"], splits[f"{n}"] = seconds, lines
            overhead = claim_overhead(db, embedder)
    base = best["baseline"]
    print(f"texts: {texts} from {args.conversations} generated conversations; precision {embedder.precision}")
    print(f"baseline  embed_pending in-process: {base:6.1f} s  {texts / base:6.1f} texts/s")
    for n in (1, 2):
        s = best[f"{n}"]
        print(
            f"{n} worker{'s' if n > 1 else ' '} memoryd embed --follow: {s:6.1f} s  {texts / s:6.1f} texts/s"
            f"  {base / s:.2f}x the baseline   ({'; '.join(splits[f'{n}'])})"
        )
    total = sum(overhead.values())
    print("one batch at a time, per text:")
    for step, seconds in overhead.items():
        print(f"    {step:12s} {seconds * 1000:7.2f} ms  {seconds / total:6.1%}")
    claim = overhead["claim"] + overhead["copy+commit"]
    print(
        f"claim overhead (claim + COPY + commit): {claim * 1000:.2f} ms per text,"
        f" {claim / overhead['encode']:.1%} of encoding"
    )
    print(f"load average (1 min) before {load_before:.2f}, after {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
