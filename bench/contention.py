"""Embedding beside the user's own work: CPU-seconds per text and throughput, quiet and contended.

memoryd embeds in the background of a laptop.  Two things matter when the
user's own work runs at the same time: memoryd must not waste CPU (the
CPU-seconds it spends per text should stay near a quiet run's: no spinning
threads fighting for cores), and it should still make progress.  Three runs
of ``embed_pending`` (as ``memoryd embed`` runs it, precision "auto") on the
same texts:

- quiet: nothing else started by the bench (the machine's own load is printed);
- beside PyTorch: another process multiplying matrices on every core;
- beside busy loops: one spinning Python process per core.

Each contended figure is printed as a ratio to the quiet run of the same
process (CPU-seconds per text: target about 1.3-1.4x or less, as issue 12
measured before its pipeline; throughput: 36-47% of quiet or better on
2 cores).  ``--nice 10`` runs memoryd at the unit's priority (systemd
``Nice=10``), to see how much of the machine it then yields.

    .venv/bin/python -m bench.contention [--conversations 8] [--nice 0]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fresh_database, server_dsn, timed, tree_config
from bench.generate import write_tree
from memoryd.config import EmbeddingConfig, LogConfig
from memoryd.db import Database
from memoryd.embed import Embedder, embed_pending
from memoryd.log import configure_logging
from memoryd.sync import Syncer

TORCH_JOB = (
    "import os, torch\n"
    "torch.set_num_threads(os.cpu_count())\n"
    "a = torch.randn(768, 768)\n"
    "while True:\n"
    "    a = torch.tanh(a @ a)\n"
)
BUSY_LOOP = "while True:\n    pass\n"


def start_load(kind: str) -> list[subprocess.Popen[bytes]]:
    """The competing work: one PyTorch process on every core, or one busy loop per core."""
    if kind == "quiet":
        return []
    if kind == "pytorch":
        return [subprocess.Popen([sys.executable, "-c", TORCH_JOB])]
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(os.cpu_count() or 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--nice", type=int, default=0, help="niceness of the embedding (the unit uses 10)")
    args = parser.parse_args()
    configure_logging(LogConfig(level="warning"))
    load_before = os.getloadavg()[0]
    embedder = Embedder(EmbeddingConfig())
    with server_dsn() as admin, fresh_database(admin) as dsn, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tree(root, args.conversations, seed=1)
        with Database(tree_config(root, dsn).database) as db:
            Syncer(db, tree_config(root, dsn)).reconcile()
            embed_pending(db, embedder)  # warm-up: first-batch costs out of the figures
            if args.nice:
                os.nice(args.nice)  # after the warm-up: the competing processes keep priority 0
            figures: dict[str, tuple[float, float, int]] = {}
            for kind in ("quiet", "pytorch", "busy"):
                db.run(lambda c: c.execute("TRUNCATE embeddings, vector_cache"))
                load = start_load(kind)
                try:
                    time.sleep(2 if load else 0)  # let the competitors reach full speed
                    cpu = time.process_time()
                    with timed() as t:
                        report = embed_pending(db, embedder)
                    figures[kind] = (t[0], time.process_time() - cpu, report.texts)
                finally:
                    for process in load:
                        process.kill()
                        process.wait()
    wall_q, cpu_q, texts = figures["quiet"]
    print(f"{texts} texts, precision {embedder.precision}, niceness {args.nice}, {os.cpu_count()} CPUs")
    print("| run | wall s | texts/s | of quiet | CPU-s per text (ms) | x quiet |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind, (wall, cpu, n) in figures.items():
        print(
            f"| {kind} | {wall:.1f} | {n / wall:.1f} | {wall_q / wall:.0%} | {cpu / n * 1000:.1f}"
            f" | {cpu / n / (cpu_q / texts):.2f}x |"
        )
    print(f"load average (1 min) before {load_before:.2f}, after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
