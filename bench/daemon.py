"""The daemon: drop-to-searchable latency, and the cost of a reconcile of an unchanged tree.

- latency: 20 new 100-message conversations are dropped one at a time into
  the watched folder (staged, then renamed into place, as a tool would);
  for each, the time until every one of its texts is embedded and a search
  for its own first message returns it.  Baseline: the same work done
  directly (``sync_slug`` + ``embed_pending``, no watcher, no debounce) on
  the same kind of conversation, so the ratio is the daemon's own overhead.
- reconcile: a periodic reconcile over 5,000 unchanged conversations vs a
  bare ``os.scandir`` + ``stat`` walk of the same tree (bench/rescan.py).

Production defaults are used (debounce 1.5 s, max wait 10 s) unless
``--debounce-ms`` says otherwise.

    .venv/bin/python -m bench.daemon [--drops 20] [--unchanged 5000]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from bench._common import fresh_database, percentile, server_dsn, timed, tree_config
from bench.generate import conversation
from bench.rescan import bench_rescan
from memoryd.config import EmbeddingConfig, LogConfig
from memoryd.daemon import Daemon
from memoryd.db import Database
from memoryd.embed import Embedder, embed_pending
from memoryd.log import configure_logging
from memoryd.search import SearchFilters, search
from memoryd.sync import Syncer


def drop(root: Path, slug: str, turns: list[dict[str, str]]) -> None:
    staging = root / f".staging-{slug}"
    staging.mkdir(parents=True)
    (staging / "messages.jsonl").write_text("".join(json.dumps(t) + "\n" for t in turns), encoding="utf-8")
    staging.rename(root / slug)


def searchable(db: Database, embedder: Embedder, slug: str, query: str) -> bool:
    def check(conn) -> bool:  # type: ignore[no-untyped-def]
        pending = conn.execute(
            "SELECT count(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE c.slug = %s"
            " AND NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.message_id = m.id)",
            (slug,),
        ).fetchone()
        stored = conn.execute("SELECT 1 FROM conversations WHERE slug = %s", (slug,)).fetchone()
        return bool(stored) and pending[0] == 0

    if not db.run(check):
        return False
    hits = db.run(search, embedder, query, k=1, filters=SearchFilters(slugs=(slug,)))
    return bool(hits)


def bench_latency(admin: str, drops: int, debounce_ms: int, embedder: Embedder) -> None:
    rng = random.Random(2)
    with tempfile.TemporaryDirectory(prefix="memoryd-bench-") as tmp, fresh_database(admin) as dsn:
        root = Path(tmp)
        config = tree_config(root, dsn)
        config = replace(config, watch=replace(config.watch, debounce_ms=debounce_ms))
        # Baseline: the same work, done directly.
        direct: list[float] = []
        with Database(config.database) as db:
            syncer = Syncer(db, config)
            for n in range(3):
                slug, turns = conversation(rng, 10_000 + n, messages=100)
                drop(config.paths.conversations, slug, turns)
                with timed() as t:
                    syncer.sync_slug(slug)
                    embed_pending(db, embedder)
                direct.append(t[0])
        daemon = Daemon(config, embedder_factory=lambda: embedder)
        thread = threading.Thread(target=daemon.run)
        thread.start()
        latencies: list[float] = []
        try:
            daemon.ready.wait(120)
            with Database(config.database) as db:
                for n in range(drops):
                    slug, turns = conversation(rng, n, messages=100)
                    started = time.perf_counter()
                    drop(config.paths.conversations, slug, turns)
                    while not searchable(db, embedder, slug, turns[0]["content"]):
                        time.sleep(0.05)
                    latencies.append(time.perf_counter() - started)
        finally:
            daemon.stop()
            thread.join()
    base = statistics.median(direct)
    print(
        f"drop -> searchable ({drops} drops of 100 messages, debounce {debounce_ms} ms):"
        f" p50 {percentile(latencies, 50):.2f} s  p95 {percentile(latencies, 95):.2f} s"
        f"   baseline direct sync+embed p50 {base:.2f} s   p50 ratio {percentile(latencies, 50) / base:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drops", type=int, default=20)
    parser.add_argument("--unchanged", type=int, default=5000)
    parser.add_argument("--debounce-ms", type=int, default=1500)
    args = parser.parse_args()
    configure_logging(LogConfig(level="warning"))
    embedder = Embedder(EmbeddingConfig())
    with server_dsn() as admin:
        bench_rescan(admin, args.unchanged)
        bench_latency(admin, args.drops, args.debounce_ms, embedder)


if __name__ == "__main__":
    main()
