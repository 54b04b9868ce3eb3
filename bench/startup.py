"""Daemon start-up: time to READY on an unchanged tree, with the real model to load.

The daemon is started (real watcher, real model factory) on a tree whose
conversations are all stored already, and timed from ``run()`` to ``ready``
(the first reconcile done).  Baseline: the same reconcile run by itself in
the same process, as ``memoryd ingest`` would run it.  The ratio is what the
daemon's other start-up work (watches, the model loading) costs the reconcile.

    .venv/bin/python -m bench.startup [--conversations 5000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench._common import fresh_database, server_dsn, timed, tree_config
from bench.generate import write_tree
from bench.rescan import give_vectors
from memoryd.config import Config, LogConfig
from memoryd.daemon import Daemon
from memoryd.db import Database
from memoryd.log import configure_logging
from memoryd.sync import Syncer


def time_to_ready(config: Config) -> float:
    """Seconds from Daemon.run() to ready, the real model loading in the daemon's own way."""
    daemon = Daemon(config)
    thread = threading.Thread(target=daemon.run, name="bench-daemon")
    started = time.perf_counter()
    thread.start()
    if not daemon.ready.wait(600):
        raise RuntimeError("the daemon was not ready within 600 s")
    seconds = time.perf_counter() - started
    daemon.embedder_ready.wait(600)  # let the model finish loading before the next run
    daemon.stop()
    thread.join()
    return seconds


def bench_startup(admin: str, conversations: int, runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="memoryd-bench-") as tmp, fresh_database(admin) as dsn:
        root = Path(tmp)
        write_tree(root, conversations, seed=5, messages=4)
        config = tree_config(root, dsn)
        with Database(config.database) as db:
            Syncer(db, config).reconcile()
            give_vectors(db)  # nothing pending: the embedder has no work to add after READY
        baseline, daemon = [], []
        for _ in range(runs):
            with Database(config.database) as db, timed() as t:
                Syncer(db, config).reconcile()
            baseline.append(t[0])
            daemon.append(time_to_ready(config))
    ours, base = statistics.median(daemon), statistics.median(baseline)
    print(f"daemon start to READY, {conversations} unchanged conversations: {ours:.2f} s (median of {runs})")
    print(f"baseline reconcile alone (memoryd ingest): {base:.2f} s   time ratio {ours / base:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    configure_logging(LogConfig(level="warning"))
    with server_dsn() as admin:
        bench_startup(admin, args.conversations, args.runs)


if __name__ == "__main__":
    main()
