"""The daemon: drop-to-searchable latency, and the cost of a reconcile of an unchanged tree.

- latency: 20 new 100-message conversations are dropped one at a time into
  the watched folder (staged, then renamed into place, as a tool would);
  for each, the time until every one of its texts is embedded and a search
  for its own first message returns it.  Baseline: the same work done
  directly (``sync_slug`` + ``embed_pending``, no watcher, no debounce) on
  the same kind of conversation, so the ratio is the daemon's own overhead.
- idle memory: ``memoryd watch`` in a process of its own, its RSS once idle
  after embedding a dropped file and after searches through its query
  service, next to a bare process that loads the same model with
  sentence-transformers (target: at most 350 MB).
- reconcile: a periodic reconcile over 5,000 unchanged conversations vs a
  bare ``os.scandir`` + ``stat`` walk of the same tree (bench/rescan.py).

Production defaults are used (debounce 1.5 s, max wait 10 s) unless
``--debounce-ms`` says otherwise.

    .venv/bin/python -m bench.daemon [--drops 20] [--unchanged 5000] [--only-rss]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
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


def _rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MB: its resident memory now, and at its peak."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


_BARE = """
import json, sys
from pathlib import Path
from sentence_transformers import SentenceTransformer
from memoryd.embed import resolve_model_path
model = SentenceTransformer(str(resolve_model_path(sys.argv[1])), device="cpu", local_files_only=True)
model.encode(["the storm poem, written in code"] * 64)
fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
print(json.dumps({k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}))
"""


def _embedded(dsn: str, slug: str) -> bool:
    import psycopg

    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('embeddings')").fetchone() == (None,):
            return False  # the daemon has not created its tables yet
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.message_id = m.id))"
            " FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE c.slug = %s",
            (slug,),
        ).fetchone()
    return row is not None and row[0] > 0 and row[1] == 0


def bench_idle_rss(admin: str, settle_s: float = 5.0) -> None:
    """``memoryd watch`` in its own process: RSS once idle after embedding a dropped file, and after a search
    through its query service; next to a bare process that loads the same model with sentence-transformers."""
    from memoryd.api import SearchRequest
    from memoryd.config import load_config
    from memoryd.query_client import connect_service

    rng = random.Random(3)
    with tempfile.TemporaryDirectory(prefix="memoryd-bench-") as tmp, fresh_database(admin) as dsn:
        root = Path(tmp)
        for folder in ("conversations", "summaries"):
            (root / folder).mkdir()
        config_file = root / "memoryd.toml"
        config_file.write_text(
            f'[paths]\nconversations = "{root / "conversations"}"\nsummaries = "{root / "summaries"}"\n'
            f'[database]\ndsn = "{dsn}"\n[service]\nsocket = "{root / "memoryd.sock"}"\n[log]\nformat = "json"\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEMORYD_")}
        env["MEMORYD_CONFIG"] = str(config_file)
        log_file = (root / "daemon.log").open("w")
        daemon = subprocess.Popen([sys.executable, "-m", "memoryd.cli", "watch"], env=env, stderr=log_file)
        try:
            slug, turns = conversation(rng, 0, messages=100)
            drop(root / "conversations", slug, turns)
            deadline = time.monotonic() + 600
            while not _embedded(dsn, slug):
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the daemon did not embed the drop: see {root / 'daemon.log'}")
                time.sleep(0.2)
            time.sleep(settle_s)
            idle, peak = _rss_mb(daemon.pid)
            if os.environ.get("BENCH_DEBUG"):
                print((root / "daemon.log").read_text()[-6000:])
            client = connect_service(load_config(config_file), required=True)
            assert client is not None
            for _ in range(5):
                client.search(SearchRequest(query=turns[0]["content"], k=5))
            client.close()
            time.sleep(settle_s)
            after_search, peak = _rss_mb(daemon.pid)
        finally:
            daemon.terminate()
            daemon.wait(60)
            log_file.close()
    bare = subprocess.run(
        [sys.executable, "-c", _BARE, EmbeddingConfig().model], capture_output=True, text=True, check=True
    )
    bare_rss = json.loads(bare.stdout.strip().splitlines()[-1])
    print(
        f"daemon idle RSS after embedding a drop: {idle:.0f} MB; after 5 searches through its query service:"
        f" {after_search:.0f} MB; peak {peak:.0f} MB (PostgreSQL not counted)"
        f"   baseline bare sentence-transformers process with the model loaded: {bare_rss['VmRSS']:.0f} MB"
        f" (peak {bare_rss['VmHWM']:.0f} MB)   ratio {idle / bare_rss['VmRSS']:.2f}x   target <= 350 MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drops", type=int, default=20)
    parser.add_argument("--unchanged", type=int, default=5000)
    parser.add_argument("--debounce-ms", type=int, default=1500)
    parser.add_argument("--only-rss", action="store_true", help="measure the idle RSS only")
    args = parser.parse_args()
    configure_logging(LogConfig(level="warning"))
    with server_dsn() as admin:
        bench_idle_rss(admin)
        if args.only_rss:
            return
        embedder = Embedder(EmbeddingConfig())
        bench_rescan(admin, args.unchanged)
        bench_latency(admin, args.drops, args.debounce_ms, embedder)


if __name__ == "__main__":
    main()
