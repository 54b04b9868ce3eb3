"""One-shot pipeline: ingest and embed a generated tree, each against a baseline.

- ingest: memoryd's store (one transaction per slug, COPY for messages) vs a
  naive row-by-row INSERT of the same parsed messages;
- embed: memoryd's embed (claim, chunk, encode, binary COPY, HNSW index) vs
  sentence-transformers' plain ``encode`` of the same chunk texts, no database;
- re-ingest of the unchanged tree: memoryd's reconcile vs a bare ``os.scandir``
  + ``stat`` walk of the same tree (the least any change detection can cost).

    .venv/bin/python -m bench.pipeline [--conversations 100]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import psycopg

from bench._common import fresh_database, server_dsn, timed, tree_config
from bench.generate import write_tree
from bench.rescan import walk
from memoryd.config import EmbeddingConfig, LogConfig
from memoryd.db import Database
from memoryd.embed import Embedder, embed_pending
from memoryd.formats import parse_conversation
from memoryd.log import configure_logging
from memoryd.sync import Syncer


def naive_ingest(dsn: str, conversations_dir: Path) -> int:
    """The baseline: one INSERT per row, one commit per conversation, like a first script would."""
    rows = 0
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "CREATE TABLE c (id serial PRIMARY KEY, slug text UNIQUE, title text);"
            "CREATE TABLE m (id bigserial PRIMARY KEY, c int REFERENCES c ON DELETE CASCADE, seq int, role text,"
            " content text, UNIQUE (c, seq))"
        )
        conn.commit()
        for folder in sorted(conversations_dir.iterdir()):
            conv = parse_conversation(folder)
            (cid,) = conn.execute(
                "INSERT INTO c (slug, title) VALUES (%s, %s) RETURNING id", (conv.slug, conv.title)
            ).fetchone()  # type: ignore[misc]
            for m in conv.messages:
                conn.execute(
                    "INSERT INTO m (c, seq, role, content) VALUES (%s, %s, %s, %s)", (cid, m.seq, m.role, m.content)
                )
                rows += 1
            conn.commit()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=50)
    args = parser.parse_args()
    configure_logging(LogConfig(level="warning"))
    with tempfile.TemporaryDirectory(prefix="memoryd-bench-") as tmp, server_dsn() as admin:
        root = Path(tmp)
        write_tree(root, args.conversations, seed=1)
        with fresh_database(admin) as dsn, fresh_database(admin) as baseline_dsn:
            config = tree_config(root, dsn)
            with Database(config.database) as db:
                syncer = Syncer(db, config)
                with timed() as t_ingest:
                    report = syncer.reconcile()
                with db.connection() as conn:
                    messages, summaries = conn.execute(
                        "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM summaries)"
                    ).fetchone()  # type: ignore[misc]
                with timed() as t_naive:
                    naive_rows = naive_ingest(baseline_dsn, root / "conversations")
                assert naive_rows == messages

                embedder = Embedder(EmbeddingConfig())
                with timed() as t_embed:
                    embedded = embed_pending(db, embedder)
                with db.connection() as conn:
                    chunk_texts = [
                        content[start:end]
                        for content, start, end in conn.execute(
                            "SELECT COALESCE(m.content, s.content), e.chunk_start, e.chunk_end FROM embeddings e"
                            " LEFT JOIN messages m ON m.id = e.message_id LEFT JOIN summaries s ON s.id = e.summary_id"
                        )
                    ]
                with timed() as t_raw:
                    embedder.model.encode(chunk_texts, batch_size=embedder.config.batch_size, normalize_embeddings=True)

                with timed() as t_rescan:
                    again = syncer.reconcile()
                with timed() as t_walk:
                    files = walk(root)

    print(f"tree: {args.conversations} conversations, {messages} messages, {summaries} summaries, {files} files")
    print(
        f"ingest:    {t_ingest[0]:7.2f} s  {messages / t_ingest[0]:9.0f} messages/s"
        f"   baseline row-by-row INSERT {t_naive[0]:7.2f} s   speed ratio {t_naive[0] / t_ingest[0]:.2f}x"
    )
    print(
        f"embed:     {t_embed[0]:7.2f} s  {embedded.texts / t_embed[0]:9.1f} texts/s ({embedded.chunks} chunks,"
        f" {embedded.chunks / t_embed[0]:.1f} chunks/s)   baseline model.encode alone {t_raw[0]:7.2f} s"
        f"   speed ratio {t_raw[0] / t_embed[0]:.2f}x"
    )
    print(
        f"re-ingest: {t_rescan[0]:7.3f} s  {again.checked} slugs parsed, {again.wrote} written"
        f"   baseline scandir+stat walk {t_walk[0]:7.3f} s   time ratio {t_rescan[0] / max(t_walk[0], 1e-9):.1f}x"
    )
    print(f"ingest + embed: {t_ingest[0] + t_embed[0]:.1f} s, ingest reported {report.wrote} slugs written")


if __name__ == "__main__":
    main()
