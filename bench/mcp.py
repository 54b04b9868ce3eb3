"""The MCP search tool: call latency at 200,000 chunks, against ``Memory.search`` in the same run.

Target (issue 9): MCP search tool call p95 ≤ 50 ms at 200,000 chunks.

The data is bench/search.py's: chunks made from 4,000 real sentences encoded
with the real model, loaded with binary COPY, then the full-text and HNSW
indexes built and the tables analysed.  Queries are held-out sentences.

Baseline: ``Memory.search`` in this process (in-process, model loaded and
warm), k = 10, context = 2: what a Python caller gets.  Measured: the
``search`` tool of a real ``memoryd mcp --in-process`` subprocess, called
with the same query and options through the ``mcp`` client over stdio,
timed on the client side from request to parsed result (JSON-RPC framing,
argument validation, the same ``Memory.search``, the hits as JSON).  The two
alternate query by query, so both see the same load on a shared machine;
both are warmed up first (the model loads at the first search).  Hybrid
mode is the target; text mode encodes no query, so its difference is the
protocol's own cost.  The figures are p50/p95 over the queries, and the
ratio of the p95s.

    .venv/bin/python -m bench.mcp [--chunks 200000] [--queries 200] [--cache sentences.npy]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import psycopg
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from bench._common import fresh_database, percentile, server_dsn, tree_config
from bench.search import fill_database, make_corpus
from memoryd.api import Memory
from memoryd.config import EmbeddingConfig, LogConfig
from memoryd.embed import Embedder
from memoryd.log import configure_logging

K = 10
CONTEXT = 2
WARM_UP = 5
CONFIG_TOML = """\
[paths]
conversations = "conversations"
summaries = "summaries"

[database]
dsn = "{dsn}"

[service]
enabled = false

[log]
level = "warning"
"""


async def time_both(
    memory: Memory, embedder: Embedder, config_path: Path, queries: list[str], mode: str
) -> tuple[list[float], list[float], list[float]]:
    """Per query: ``Memory.search``, the MCP search tool, and (not in text mode) encoding the query alone.

    Interleaved, so that all three see the same load on a shared machine.
    """
    memoryd = Path(sys.executable).with_name("memoryd")
    params = StdioServerParameters(command=str(memoryd), args=["--config", str(config_path), "mcp", "--in-process"])
    options: dict[str, Any] = {"k": K, "context": CONTEXT, "mode": mode}
    direct: list[float] = []
    over_mcp: list[float] = []
    encode: list[float] = []
    async with Client(stdio_client(params), read_timeout_seconds=300) as client:
        for query in queries[:WARM_UP]:
            memory.search(query, **options)
            await client.call_tool("search", {"query": query, **options})
        for query in queries:
            started = time.perf_counter()
            hits = memory.search(query, **options)
            direct.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            result = await client.call_tool("search", {"query": query, **options})
            over_mcp.append((time.perf_counter() - started) * 1000)
            assert not result.is_error and result.structured_content, result.content
            assert len(result.structured_content["hits"]) == len(hits), query
            if mode != "text":
                started = time.perf_counter()
                embedder.encode_queries([query])
                encode.append((time.perf_counter() - started) * 1000)
    return direct, over_mcp, encode


def report(name: str, latencies: list[float], baseline: list[float] | None) -> None:
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    ratio = f"  ratio p95 {p95 / percentile(baseline, 95):.2f}x" if baseline else ""
    print(f"{name:<40} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  max {max(latencies):7.1f} ms{ratio}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache", type=Path, help="keep the encoded sentences in this .npy file between runs")
    args = parser.parse_args()
    configure_logging(LogConfig(level="warning"))
    embedder = Embedder(EmbeddingConfig())
    texts, vectors, corpus_queries, _ = make_corpus(embedder, args.chunks, args.queries, args.seed, args.cache)
    queries = [q.text for q in corpus_queries]
    with server_dsn() as admin, fresh_database(admin) as dsn, tempfile.TemporaryDirectory() as tmp:
        with psycopg.connect(dsn) as conn:
            print(fill_database(conn, texts, vectors, embedder, args.seed), flush=True)
        root = Path(tmp)
        config_path = root / "config.toml"
        config_path.write_text(CONFIG_TOML.format(dsn=dsn.replace('"', '\\"')), encoding="utf-8")
        results: dict[str, tuple[list[float], list[float], list[float]]] = {}
        with Memory.open(tree_config(root, dsn), service=False) as memory:
            for mode in ("hybrid", "text"):
                results[mode] = anyio.run(time_both, memory, embedder, config_path, queries, mode)
        for mode, (direct, over_mcp, encode) in results.items():
            report(f"{mode}: Memory.search (baseline)", direct, None)
            report(f"{mode}: MCP search tool (stdio)", over_mcp, direct)
            if encode:
                report(f"{mode}: of which encoding the query", encode, direct)
    hybrid = percentile(results["hybrid"][1], 95)
    print(f"target: MCP search tool p95 <= 50 ms (hybrid): {'met' if hybrid <= 50 else 'NOT met'} ({hybrid:.1f} ms)")


if __name__ == "__main__":
    main()
