"""`memoryd verify` on a stored tree: what it costs, that it finds no drift, and that it writes nothing.

Tree: 2,000 generated conversations with their summaries, stored, and given
vectors (precomputed: the question is the comparison, not the model).  Then
``verify`` runs three times and reports seconds (median), drift found (must
be 0) and rows written (every row's xmin compared before and after: must be
0).  Baseline, in the same process: parsing every folder and nothing else
(``parse_conversation`` + ``parse_summary_folder``), the least a re-read can
cost; and ``ingest --force`` (re-parse and compare every stored message),
which verify should not exceed.

    .venv/bin/python -m bench.verify [--conversations 2000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from bench._common import fresh_database, server_dsn, timed, tree_config
from bench.generate import write_tree
from bench.rescan import MODEL, give_vectors, row_versions
from memoryd.config import LogConfig
from memoryd.db import Database
from memoryd.formats import parse_conversation
from memoryd.log import configure_logging
from memoryd.summaries import parse_summary_folder
from memoryd.sync import Syncer
from memoryd.verify import verify


def parse_all(root: Path) -> int:
    messages = 0
    for folder in sorted((root / "conversations").iterdir()):
        messages += len(parse_conversation(folder).messages)
        summaries = root / "summaries" / folder.name
        if summaries.is_dir():
            parse_summary_folder(summaries)
    return messages


def bench_verify(admin: str, conversations: int) -> None:
    with tempfile.TemporaryDirectory(prefix="memoryd-bench-") as tmp, fresh_database(admin) as dsn:
        root = Path(tmp)
        write_tree(root, conversations, seed=5, messages=6)
        base_config = tree_config(root, dsn)
        config = replace(base_config, embedding=replace(base_config.embedding, model=MODEL))
        with Database(config.database) as db:
            Syncer(db, config).reconcile()
            give_vectors(db)
            before = db.run(row_versions)
            runs, drift = [], 0
            for _ in range(3):
                with timed() as t:
                    report = verify(db, config)
                runs.append(t[0])
                drift += len(report.drift)
            written = len(before ^ db.run(row_versions))
            forced = []
            for _ in range(3):
                with timed() as t:
                    Syncer(db, config).reconcile(force=True)
                forced.append(t[0])
        parses = []
        for _ in range(3):
            with timed() as t:
                messages = parse_all(root)
            parses.append(t[0])
    ours, parse, force = statistics.median(runs), statistics.median(parses), statistics.median(forced)
    print(
        f"verify of {conversations} conversations ({messages} messages, {report.summaries} summaries):"
        f" {ours:.3f} s (median of 3), {drift} drift found, {written} rows written"
    )
    print(f"baseline parse of every folder: {parse:.3f} s   time ratio {ours / parse:.2f}x")
    print(f"ingest --force (re-parse and compare): {force:.3f} s   verify / ingest --force {ours / force:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=2000)
    args = parser.parse_args()
    configure_logging(LogConfig(level="warning"))
    with server_dsn() as admin:
        bench_verify(admin, args.conversations)


if __name__ == "__main__":
    main()
