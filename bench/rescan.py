"""A second ingest of an unchanged tree: what it costs and that it writes nothing.

Tree: 5,000 generated conversations with their summaries, stored, and given
vectors (precomputed, so the first load does not spend an hour in the
model; the question here is what the *second* pass does).  Then the same
`ingest` runs again and reports seconds, rows written (every row's xmin
compared before and after: must be 0) and texts that would be encoded
(pending embeddings: must be 0).  Baseline: a bare ``os.scandir`` + ``stat``
walk of the same tree, the least any change detection can cost.

    .venv/bin/python -m bench.rescan [--conversations 5000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import fresh_database, server_dsn, timed, tree_config
from bench.generate import write_tree
from memoryd.config import LogConfig
from memoryd.db import Database
from memoryd.log import configure_logging
from memoryd.store import ChunkVector, claim_pending, count_pending, write_embeddings
from memoryd.sync import Syncer

MODEL = "bench-precomputed"
TABLES = ("conversations", "messages", "summaries", "embeddings", "folder_state", "ingest_errors")


def walk(root: Path) -> int:
    files = 0
    for sub in ("conversations", "summaries"):
        with os.scandir(root / sub) as slugs:
            for slug in slugs:
                with os.scandir(slug.path) as entries:
                    for entry in entries:
                        entry.stat()
                        files += 1
    return files


def row_versions(conn: Any) -> set[tuple[str, str, str]]:
    versions: set[tuple[str, str, str]] = set()
    for table in TABLES:
        key = "slug" if table == "folder_state" else "path" if table == "ingest_errors" else "id"
        versions |= {(table, str(k), x) for k, x in conn.execute(f"SELECT {key}, xmin::text FROM {table}")}
    return versions


def give_vectors(db: Database) -> None:
    vector = np.ones(384, dtype=np.float32) / np.sqrt(384)
    while True:

        def batch(conn: Any) -> int:
            texts = claim_pending(conn, MODEL, 5000)
            return write_embeddings(conn, MODEL, [ChunkVector(t, 0, 0, len(t.content), vector) for t in texts])

        if db.run(batch) == 0:
            return


def bench_rescan(admin: str, conversations: int) -> None:
    with tempfile.TemporaryDirectory(prefix="memoryd-bench-") as tmp, fresh_database(admin) as dsn:
        root = Path(tmp)
        write_tree(root, conversations, seed=3, messages=4)
        config = tree_config(root, dsn)
        with Database(config.database) as db:
            syncer = Syncer(db, config)
            with timed() as t_first:
                syncer.reconcile()
            give_vectors(db)
            before = db.run(row_versions)
            runs = []
            for _ in range(3):
                with timed() as t:
                    report = syncer.reconcile()
                runs.append(t[0])
            after = db.run(row_versions)
            pending = db.run(count_pending, MODEL)
            with timed() as t_forced:
                forced = syncer.reconcile(force=True)
            after_forced = db.run(row_versions)
        walks = []
        for _ in range(3):
            with timed() as t:
                files = walk(root)
            walks.append(t[0])
    ours, base = statistics.median(runs), statistics.median(walks)
    print(
        f"second ingest of {conversations} unchanged conversations ({files} files):"
        f" {ours:.3f} s (median of 3), {report.checked} slugs parsed,"
        f" {len(before ^ after)} rows written, {pending} texts to encode"
    )
    print(f"baseline scandir+stat walk: {base:.3f} s   time ratio {ours / base:.1f}x")
    print(
        f"forced re-parse of every slug (ingest --force): {t_forced[0]:.1f} s, {forced.checked} slugs parsed,"
        f" {len(before ^ after_forced)} rows written   baseline first ingest of the same tree: {t_first[0]:.1f} s"
        f"   ratio {t_forced[0] / t_first[0]:.2f}x (target <= 2x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=5000)
    args = parser.parse_args()
    configure_logging(LogConfig(level="warning"))
    with server_dsn() as admin:
        bench_rescan(admin, args.conversations)


if __name__ == "__main__":
    main()
