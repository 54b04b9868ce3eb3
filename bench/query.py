"""Asking the memory: `memoryd search` with and without a daemon, and Memory.search warm at scale.

1. Whole processes, as a user or an agent runs them, on a small generated
   tree (ingested and embedded first).  ``memoryd search --json`` with a
   daemon (``memoryd watch``, a separate process, answers on its socket)
   against the same search ``--in-process`` (the process loads the model and
   opens the database itself: the only way before the query service), and
   text mode in-process for reference.  Wall time of each process, p50/p95.
2. ``Memory.search`` warm (the model loaded, the database warm, hybrid mode,
   k = 10, context = 2), at ``--chunks`` chunks built as bench/search.py builds
   them.  Baseline in the same run: ``search_query`` alone, the database part
   of the same hybrid search with the query already encoded and no context;
   the ratio is what the API adds (encoding the query, the context queries).

    .venv/bin/python -m bench.query [--chunks 200000] [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench._common import fresh_database, percentile, server_dsn, timed, tree_config
from bench.generate import write_tree
from memoryd.api import LocalMemory, Memory
from memoryd.config import EmbeddingConfig, LogConfig
from memoryd.db import Database
from memoryd.embed import Embedder, embed_pending
from memoryd.errors import ServiceError
from memoryd.log import configure_logging
from memoryd.query_client import ServiceClient
from memoryd.search import search_query
from memoryd.sync import Syncer

QUERIES = [
    "how does the agent store the summary",
    "l'index compare les résumés",
    "which pipeline rewrites the database",
    "the model forgets what the script embeds",
]


def report(name: str, seconds: list[float], baseline: list[float] | None) -> None:
    p50, p95 = percentile(seconds, 50) * 1000, percentile(seconds, 95) * 1000
    line = f"  {name:<52} p50 {p50:8.1f} ms  p95 {p95:8.1f} ms"
    if baseline is not None:
        line += f"   p95 ratio to baseline {percentile(baseline, 95) / percentile(seconds, 95):6.1f}x faster"
    print(line, flush=True)


def _memoryd(config_path: Path, *args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("memoryd")), "--config", str(config_path), *args]


def wait_for_model(socket_path: Path, *, timeout: float) -> None:
    """Until the daemon's query service answers with its model loaded (minutes on a busy 2-core machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if socket_path.exists():
            client = ServiceClient(socket_path)
            try:
                if client.health().get("model_ready"):
                    return
            except ServiceError:
                pass
            finally:
                client.close()
        time.sleep(1)
    raise SystemExit(f"the daemon's model was not ready within {timeout:.0f} s")


def whole_processes(admin: str, runs: int, conversations: int, embedder: Embedder) -> None:
    """Part 1: `memoryd search --json` wall time, daemon against in-process."""
    with tempfile.TemporaryDirectory(prefix="mdq-") as tmp, fresh_database(admin) as dsn:
        root = Path(tmp)
        write_tree(root, conversations, seed=3)
        config = tree_config(root, dsn)
        with Database(config.database) as db:
            Syncer(db, config).reconcile()
            embed_pending(db, embedder)
        socket_path = root / "memoryd.sock"
        config_path = root / "config.toml"
        config_path.write_text(
            f'[paths]\nconversations = "conversations"\nsummaries = "summaries"\n'
            f'[database]\ndsn = "{dsn}"\n[service]\nsocket = "{socket_path}"\n[log]\nlevel = "warning"\n',
            encoding="utf-8",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEMORYD_")}

        def run(*args: str) -> float:
            with timed() as t:
                result = subprocess.run(_memoryd(config_path, *args), env=env, capture_output=True, check=False)
            if result.returncode != 0:
                raise SystemExit(f"memoryd {' '.join(args)} failed: {result.stderr.decode()}")
            json.loads(result.stdout)
            return t[0]

        cold = [run("search", QUERIES[n % len(QUERIES)], "--json", "--in-process") for n in range(max(3, runs // 5))]
        text = [run("search", QUERIES[n % len(QUERIES)], "--json", "--in-process", "--mode", "text") for n in range(5)]
        daemon = subprocess.Popen(_memoryd(config_path, "watch"), env=env, stderr=subprocess.DEVNULL)
        try:
            wait_for_model(socket_path, timeout=600)
            run("search", "warm-up", "--json")
            warm = [run("search", QUERIES[n % len(QUERIES)], "--json") for n in range(runs)]
        finally:
            daemon.terminate()
            daemon.wait(60)
    print(f"`memoryd search --json` as a whole process, {conversations} conversations, hybrid, k = 10:")
    report("in-process: loads the model (baseline)", cold, None)
    report("in-process, --mode text (no model)", text, cold)
    report("through the daemon's query service", warm, cold)


def warm_api(admin: str, chunks: int, queries: int, embedder: Embedder) -> None:
    """Part 2: Memory.search warm at ``chunks`` chunks, against search_query alone."""
    import psycopg

    from bench.search import fill_database, make_corpus

    texts, vectors, corpus_queries, _ = make_corpus(embedder, chunks, queries, seed=1, cache=None)
    with fresh_database(admin) as dsn:
        with psycopg.connect(dsn) as conn:
            print(fill_database(conn, texts, vectors, embedder, 1), flush=True)
        config = tree_config(Path(tempfile.gettempdir()), dsn)
        with Database(config.database) as db:
            memory = Memory(config, LocalMemory(config, db, embedder=lambda: embedder))
            for q in corpus_queries:  # warm the caches, as a running daemon's would be
                memory.search(q.text)
            api: list[float] = []
            for q in corpus_queries:
                with timed() as t:
                    memory.search(q.text, k=10, context=2)
                api.append(t[0])
            bare: list[float] = []
            for q in corpus_queries:
                with timed() as t:
                    db.run(search_query, q, k=10, mode="hybrid")
                bare.append(t[0])
    print(f"Memory.search warm at {chunks:,} chunks, hybrid, k = 10, {len(corpus_queries)} queries:")
    report("search_query alone, query pre-encoded (baseline)", bare, None)
    report("Memory.search: encode + search + context 2", api, None)
    print(f"  ratio p95: {percentile(api, 95) / percentile(bare, 95):.2f}x the database part alone")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="searches through the daemon (part 1)")
    parser.add_argument("--conversations", type=int, default=100, help="the small tree of part 1")
    parser.add_argument("--chunks", type=int, default=200_000, help="part 2's size; 0 skips part 2")
    parser.add_argument("--queries", type=int, default=200, help="part 2's queries")
    args = parser.parse_args()
    configure_logging(LogConfig(level="warning"))
    random.seed(1)
    embedder = Embedder(replace(EmbeddingConfig()))
    with server_dsn() as admin:
        whole_processes(admin, args.runs, args.conversations, embedder)
        if args.chunks:
            warm_api(admin, args.chunks, args.queries, embedder)


if __name__ == "__main__":
    main()
