"""``memoryd.Memory``: the one way to ask the memory.

The CLI, the daemon's query service and the MCP server are thin shells on
it.  A :class:`Memory` answers either through a running daemon's query
service (its model is already loaded: a search takes milliseconds) or
in-process (it opens the database, and loads the model on the first search
by meaning).  Both go through :class:`LocalMemory`, so they return the same
hits; which one is in use is ``Memory.via``.

    import memoryd

    with memoryd.Memory.open() as mem:
        for hit in mem.search("what did we decide about the schema?", k=5):
            print(hit.slug, hit.seq, hit.text)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from memoryd.config import Config, load_config
from memoryd.errors import InvalidRequest, NotFound
from memoryd.filters import KINDS, SearchFilters
from memoryd.records import ROLES
from memoryd.results import ConversationInfo, ConversationView, Hit

if TYPE_CHECKING:
    from memoryd.db import Database, RetryPolicy
    from memoryd.embed import Embedder, EmbedReport
    from memoryd.sync import ReconcileReport

T = TypeVar("T")

Mode = Literal["vector", "text", "hybrid"]
MODES: tuple[str, ...] = ("vector", "text", "hybrid")
# Bounds on one request: beyond them an answer would be slow or useless, and
# the query service must not be made to build it.  k: far past what anyone
# reads; a query: the model reads 256 tokens (about 1,000 characters) and
# full-text ranking slows with every word.
MAX_K = 200
MAX_QUERY_CHARS = 4_000
MAX_CONTEXT = 20
MAX_LIMIT = 1_000
MAX_WINDOW = 500


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """One search, checked: every channel (Python, socket, MCP, CLI) builds one and gets the same errors."""

    query: str
    k: int = 10
    mode: str = "hybrid"
    slugs: tuple[str, ...] = ()
    slug_prefix: str | None = None
    roles: tuple[str, ...] = ()
    levels: tuple[int, ...] = ()
    kinds: tuple[str, ...] = ()
    since: date | None = None
    until: date | None = None
    context: int = 2
    sources: tuple[str, ...] = ()  # empty: every source

    def __post_init__(self) -> None:
        if not isinstance(self.query, str) or not self.query.strip():
            raise InvalidRequest("query: expected a non-empty string")
        if len(self.query) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"query: {len(self.query):,} characters; at most {MAX_QUERY_CHARS:,} are searched")
        _check_int("k", self.k, 1, MAX_K)
        _check_int("context", self.context, 0, MAX_CONTEXT)
        if self.mode not in MODES:
            raise InvalidRequest(f"mode: expected one of {', '.join(MODES)}, got {self.mode!r}")
        for role in self.roles:
            if role not in ROLES:
                raise InvalidRequest(f"roles: expected some of {', '.join(ROLES)}, got {role!r}")
        for level in self.levels:
            _check_int("levels", level, 1, 1_000)
        for kind in self.kinds:
            if kind not in KINDS:
                raise InvalidRequest(f"kinds: expected some of {', '.join(KINDS)}, got {kind!r}")
        for slug in self.slugs:
            if not isinstance(slug, str) or not slug:
                raise InvalidRequest(f"slugs: expected non-empty strings, got {slug!r}")
        for source in self.sources:
            if not isinstance(source, str) or not source:
                raise InvalidRequest(f"sources: expected non-empty strings, got {source!r}")
        if self.slug_prefix is not None and (not isinstance(self.slug_prefix, str) or not self.slug_prefix):
            raise InvalidRequest(f"slug_prefix: expected a non-empty string, got {self.slug_prefix!r}")
        self.filters()  # contradictions (since after until, roles with kinds=summary) are errors too

    @classmethod
    def build(cls, query: Any, **options: Any) -> SearchRequest:
        """From loosely typed values (JSON, MCP arguments, keyword arguments): lists, ISO dates, one string."""
        unknown = set(options) - {f for f in cls.__dataclass_fields__ if f != "query"}
        if unknown:
            raise InvalidRequest(f"unknown search option(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
        for name in ("slugs", "roles", "levels", "kinds", "sources"):
            if name in values:
                values[name] = _as_tuple(name, values[name])
        for name in ("since", "until"):
            if name in values:
                values[name] = as_date(name, values[name])
        return cls(query=query, **values)

    def filters(self) -> SearchFilters:
        try:
            return SearchFilters(
                slugs=self.slugs,
                slug_prefix=self.slug_prefix,
                roles=self.roles,
                levels=self.levels,
                since=self.since,
                until=self.until,
                kinds=self.kinds,
                sources=self.sources,
            )
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "k": self.k,
            "mode": self.mode,
            "slugs": list(self.slugs),
            "slug_prefix": self.slug_prefix,
            "roles": list(self.roles),
            "levels": list(self.levels),
            "kinds": list(self.kinds),
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "context": self.context,
            "sources": list(self.sources),
        }


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name}: expected an integer, got {value!r}")
    if not low <= value <= high:
        raise InvalidRequest(f"{name}: expected {low} to {high:,}, got {value:,}")


def _as_tuple(name: str, value: Any) -> tuple[Any, ...]:
    if isinstance(value, str | int):
        return (value,)
    if isinstance(value, Iterable) and not isinstance(value, dict | bytes):
        return tuple(value)
    raise InvalidRequest(f"{name}: expected a list, got {value!r}")


def as_date(name: str, value: Any) -> date:
    """A date from a date, a datetime or an ISO 8601 string (``2024-05-01``, ``2024-05-01T10:00:00Z``)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            pass
    raise InvalidRequest(f"{name}: expected a date as YYYY-MM-DD, got {value!r}")


class Backend(Protocol):
    """What answers a :class:`Memory`: :class:`LocalMemory`, or the client of a daemon's query service."""

    via: str

    def search(self, request: SearchRequest) -> list[Hit]: ...
    def hit(self, hit_id: str, context: int) -> Hit: ...
    def conversation(
        self, slug: str, around: int | None, window: int | None, source: str | None = None
    ) -> ConversationView: ...
    def recent(self, limit: int, since: date | None) -> list[ConversationInfo]: ...
    def status(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


@dataclass
class LocalMemory:
    """Answers from a database this process opened, with a model this process loads.

    In-process :class:`Memory` objects use one; so does the daemon's query
    service, with the daemon's database and model (``embedder`` then waits
    for the daemon's model instead of loading a second copy).
    """

    config: Config
    db: Database
    embedder: Callable[[], Embedder] | None = None
    via: str = "in-process"
    retry: RetryPolicy | None = None  # instead of the database's own (the daemon's waits forever)
    _loaded: Embedder | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.retry is None:
            return self.db.run(fn, *args, **kwargs)

        def attempt() -> T:
            with self.db.connection() as conn:
                return fn(conn, *args, **kwargs)

        return self.retry.call(attempt)

    def _embedder(self) -> Embedder:
        if self.embedder is not None:
            return self.embedder()
        with self._lock:
            if self._loaded is None:
                from memoryd.embed import Embedder

                self._loaded = Embedder(self.config.embedding, verify_cached=False)
            return self._loaded

    def search(self, request: SearchRequest) -> list[Hit]:
        from memoryd.browse import with_context
        from memoryd.search import SearchQuery, search_query

        query = SearchQuery(request.query)
        if request.mode != "text":
            embedder = self._embedder()
            query = SearchQuery(request.query, embedder.encode_queries([request.query])[0], embedder.name, embedder.dim)
        filters = request.filters()

        def run(conn: Any) -> list[Hit]:
            found = search_query(conn, query, k=request.k, filters=filters, mode=request.mode)  # type: ignore[arg-type]
            return with_context(conn, found, request.context)

        return self._run(run)

    def hit(self, hit_id: str, context: int) -> Hit:
        from memoryd.browse import hits_by_ref, parse_hit_id

        _check_int("context", context, 0, MAX_CONTEXT)
        try:
            ref = parse_hit_id(hit_id) if isinstance(hit_id, str) else parse_hit_id(repr(hit_id))
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        hits = self._run(hits_by_ref, [ref], context)
        if not hits:
            raise NotFound(f"no {ref[0]} with id {ref[1]} (deleted, or from another database)")
        return hits[0]

    def conversation(
        self, slug: str, around: int | None, window: int | None, source: str | None = None
    ) -> ConversationView:
        from memoryd.browse import AmbiguousSlug, conversation_view

        if not isinstance(slug, str) or not slug:
            raise InvalidRequest(f"slug: expected a non-empty string, got {slug!r}")
        if source is not None and (not isinstance(source, str) or not source):
            raise InvalidRequest(f"source: expected a non-empty string, got {source!r}")
        if around is not None:
            _check_int("around", around, 0, 10**9)
        if window is not None:
            _check_int("window", window, 0 if around is not None else 1, MAX_WINDOW)
        try:
            view = self._run(conversation_view, slug, around=around, window=window, source=source)
        except AmbiguousSlug as exc:
            raise InvalidRequest(str(exc)) from exc
        if view is None:
            raise NotFound(f"no conversation {slug!r}" + (f" in source {source!r}" if source is not None else ""))
        return view

    def recent(self, limit: int, since: date | None) -> list[ConversationInfo]:
        from memoryd.browse import recent_conversations

        _check_int("limit", limit, 1, MAX_LIMIT)
        return self._run(recent_conversations, limit, since)

    def status(self) -> dict[str, Any]:
        from memoryd import store
        from memoryd.pending import connected_workers

        data = self._run(store.stats, self.config.embedding.model)
        data["database"] = self.db.display_dsn
        data["model"] = self.config.embedding.model
        data["conversations_dir"] = str(self.config.paths.conversations)
        data["summaries_dir"] = str(self.config.paths.summaries)
        data["answered_by"] = self.via
        data["embedding_local"] = self.config.embedding.local
        data["workers"] = self._run(connected_workers)
        data["source"] = self.config.source.name
        return data

    def close(self) -> None:
        self.db.close()


class Memory:
    """The memory: search, read conversations, list recent ones, status, sync and embed.

    Open it with :meth:`open` (a context manager).  Results are the typed
    values of :mod:`memoryd.results`; each has ``to_dict()``.  Bad arguments
    raise :class:`memoryd.InvalidRequest`, missing conversations and hits
    :class:`memoryd.NotFound`, an unreachable database
    :class:`memoryd.DatabaseUnavailable`.
    """

    def __init__(self, config: Config, backend: Backend) -> None:
        self.config = config
        self._backend = backend
        self._local: LocalMemory | None = backend if isinstance(backend, LocalMemory) else None

    @classmethod
    def open(
        cls,
        config: Config | str | Path | None = None,
        *,
        dsn: str | None = None,
        service: bool | None = None,
    ) -> Memory:
        """Find the configuration as the CLI does (or take ``config``), then connect.

        ``service=None`` uses the daemon's query service when one answers for
        this database, else works in-process; True requires the service,
        False never asks it.  ``dsn`` overrides ``[database] dsn``.
        """
        if not isinstance(config, Config):
            config = load_config(Path(config) if config is not None else None)
        if dsn is not None:
            config = replace(config, database=replace(config.database, dsn=dsn))
        if service is not False:
            from memoryd.query_client import connect_service

            client = connect_service(config, required=bool(service))
            if client is not None:
                return cls(config, client)
        return cls(config, open_local(config))

    @property
    def via(self) -> str:
        """``"service"`` (a daemon's query service answers) or ``"in-process"``."""
        return self._backend.via

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._backend.close()
        if self._local is not None and self._local is not self._backend:
            self._local.close()

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        mode: Mode = "hybrid",
        slugs: Sequence[str] | None = None,
        slug_prefix: str | None = None,
        roles: Sequence[str] | None = None,
        levels: Sequence[int] | None = None,
        kinds: Sequence[str] | None = None,
        since: date | str | None = None,
        until: date | str | None = None,
        context: int = 2,
        sources: Sequence[str] | None = None,
    ) -> list[Hit]:
        """The k messages or summaries that best match ``query``, each with ``context`` turns around it.

        ``mode``: "hybrid" (meaning and words fused), "vector" (meaning), "text" (words; loads no model).
        ``slugs``/``slug_prefix`` select conversations (either matches); ``since``/``until`` (inclusive)
        apply to message timestamps where present, else to the conversation date.  ``sources``: only
        conversations of these sources (``[source] name``); all of them by default.
        """
        request = SearchRequest.build(
            query,
            k=k,
            mode=mode,
            slugs=slugs,
            slug_prefix=slug_prefix,
            roles=roles,
            levels=levels,
            kinds=kinds,
            since=since,
            until=until,
            context=context,
            sources=sources,
        )
        return self._backend.search(request)

    def hit(self, hit_id: str, *, context: int = 2) -> Hit:
        """One hit again by its ``id`` ("message:123"), with its context."""
        return self._backend.hit(hit_id, context)

    def conversation(
        self, slug: str, *, around: int | None = None, window: int | None = None, source: str | None = None
    ) -> ConversationView:
        """A whole conversation, or ``window`` turns each side of seq ``around`` (5 by default).

        A slug is unique per source: without ``source``, a slug that several
        sources hold raises InvalidRequest naming them.
        """
        return self._backend.conversation(slug, around, window, source)

    def recent(self, limit: int = 20, since: date | str | None = None) -> list[ConversationInfo]:
        """The latest conversations by date."""
        return self._backend.recent(limit, as_date("since", since) if since is not None else None)

    def status(self) -> dict[str, Any]:
        """Counts, pending embeddings, recorded problems, and ``answered_by`` ("service" or "in-process")."""
        return self._backend.status()

    def sync(self, paths: Sequence[str | Path] | None = None, *, force: bool = False) -> ReconcileReport:
        """Store the folders (or the given conversation/summary folders) now, in this process."""
        from memoryd.sync import Syncer

        local = self._in_process()
        syncer = Syncer(local.db, self.config)
        slugs = syncer.slugs_for_paths([Path(p) for p in paths]) if paths else None
        return syncer.reconcile(force=force, slugs=slugs)

    def embed_pending(self) -> EmbedReport:
        """Embed, in this process, every text that has no vector for the configured model yet."""
        from memoryd.embed import Embedder, embed_pending

        local = self._in_process()
        return embed_pending(local.db, Embedder(self.config.embedding))

    def _in_process(self) -> LocalMemory:
        """Writes always run here, even when a daemon answers searches."""
        if self._local is None:
            self._local = open_local(self.config)
        return self._local


def open_local(config: Config) -> LocalMemory:
    """A :class:`LocalMemory` on its own database pool, with a one-shot retry policy."""
    from memoryd.db import Database, RetryPolicy

    db = Database(
        config.database, retry=RetryPolicy(deadline_s=config.database.retry_deadline_s), source=config.source.name
    )
    db.open()
    return LocalMemory(config, db)
