"""``memoryd mcp``: the memory as read-only MCP tools, on stdin/stdout.

A thin shell on :class:`memoryd.Memory`, built with the official ``mcp``
package (``MCPServer``, the 2.x name of FastMCP).  One :class:`Memory` is
opened when the server starts and answers every call, so an in-process
model is loaded once and stays warm; when a daemon's query service answers,
the calls go there instead.  Which one answers is ``answered_by`` in every
result.

Stdout carries the protocol and nothing else: memoryd logs to stderr, and
the memory is opened inside the server's lifespan, after the ``mcp``
transport has claimed file descriptor 1 (it points fd 1 at stderr while it
serves), so an embedded PostgreSQL started by this process cannot inherit
the protocol pipe.

Domain errors come back as MCP tool errors (``isError``) whose text says
what was wrong; the server keeps answering.  A database that cannot be
reached when the server starts is not fatal either: the next call tries to
open the memory again.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar

import structlog
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from memoryd import __version__
from memoryd.api import MAX_CONTEXT, MAX_K, MAX_LIMIT, MAX_QUERY_CHARS, MAX_WINDOW, Memory
from memoryd.config import Config
from memoryd.errors import DatabaseUnavailable, InvalidRequest, MemorydError, NotFound, ServiceError

log = structlog.get_logger(__name__)
T = TypeVar("T")

# Every tool only reads the memory: clients may call them without asking the user.
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
# A close() waits this long for a call (or the opening) in flight, then leaves the rest to process exit.
CLOSE_WAIT_S = 10.0

INSTRUCTIONS = """\
memoryd holds past conversations (chat transcripts) and their summaries.
Use `search` to find messages or summaries about something (each hit comes with
the turns around it and the summaries covering it); `fetch` to see one hit again
with more context; `conversation` to read a conversation or a window of it;
`recent` to list the latest conversations; `status` for counts and health.
Every tool is read-only."""

Role = Literal["user", "assistant", "system", "tool"]
Kind = Literal["message", "summary"]


class MemoryHandle:
    """The one :class:`Memory` the tools answer from: opened at start, reopened after a failure.

    Calls are serialised by one lock: the query service's client keeps one
    HTTP connection, and an MCP client over stdio sends one call at a time
    anyway.  Opening happens in a background thread at start so that the
    handshake does not wait for the database (or the model); the first call
    waits for it instead.
    """

    def __init__(self, config: Config, *, service: bool | None, warm: bool = True) -> None:
        self.config = config
        self.service = service
        self.warm = warm
        self._memory: Memory | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Open the memory (and load the model when in-process) without blocking the caller."""
        threading.Thread(target=self._open_at_start, name="memoryd-mcp-open", daemon=True).start()

    def _open_at_start(self) -> None:
        with self._lock:
            try:
                memory = self._open()
            except MemorydError as exc:
                log.warning("mcp_memory_unavailable", error=str(exc), retry="at the next call")
                return
            except Exception:  # a bug: logged in full; the next call tries again and reports it
                log.exception("mcp_memory_open_failed")
                return
            if memory.via != "in-process" or not self.warm:
                return
            try:
                # Loads the model now rather than at the first search; text mode would load nothing.
                memory.search("warm up", k=1, mode="vector", context=0)
            except Exception as exc:  # the first real search will say what is wrong
                log.warning("mcp_warm_up_failed", error=str(exc), error_type=type(exc).__name__)

    def _open(self) -> Memory:
        if self._memory is None:
            self._memory = Memory.open(self.config, service=self.service)
            log.info("mcp_memory_opened", answered_by=self._memory.via)
        return self._memory

    def call(self, tool: str, fn: Callable[[Memory], T]) -> T:
        """``fn(memory)``, with memoryd's errors turned into tool errors that say what went wrong."""
        with self._lock:
            try:
                return fn(self._open())
            except InvalidRequest as exc:
                raise self._tool_error(tool, "invalid request", exc) from exc
            except NotFound as exc:
                raise self._tool_error(tool, "not found", exc) from exc
            except DatabaseUnavailable as exc:
                raise self._tool_error(tool, "database unavailable", exc) from exc
            except ServiceError as exc:
                if self.service is None:
                    # The daemon went away: the next call opens again, in-process if none answers.
                    self._drop()
                raise self._tool_error(tool, "query service error", exc) from exc
            except MemorydError as exc:
                raise self._tool_error(tool, "error", exc) from exc
            except Exception as exc:
                # A bug, not bad input: the details (and the traceback) stay in the log on stderr.
                log.exception("mcp_tool_failed", tool=tool, error_type=type(exc).__name__)
                raise ToolError(
                    f"internal error in memoryd ({type(exc).__name__}); the server's log on stderr has the details"
                ) from exc

    def _tool_error(self, tool: str, kind: str, exc: Exception) -> ToolError:
        log.info("mcp_tool_error", tool=tool, kind=kind, error=str(exc))
        message = str(exc)
        # The SDK prefixes "Error executing tool <name>: "; the kind follows, once.
        return ToolError(message if message.startswith(f"{kind}: ") else f"{kind}: {message}")

    def _drop(self) -> None:
        memory, self._memory = self._memory, None
        if memory is not None:
            try:
                memory.close()
            except Exception as exc:  # closing a broken connection may fail; the memory is dropped anyway
                log.debug("mcp_memory_close_failed", error=str(exc))

    def close(self) -> None:
        if not self._lock.acquire(timeout=CLOSE_WAIT_S):
            log.warning("mcp_close_timeout", waited_s=CLOSE_WAIT_S)
            return
        try:
            self._drop()
        finally:
            self._lock.release()


def build_server(handle: MemoryHandle) -> MCPServer[None]:
    """The MCP server and its five read-only tools, each one call on ``handle``."""

    @asynccontextmanager
    async def lifespan(_: MCPServer[None]) -> AsyncIterator[None]:
        handle.start()
        log.info("mcp_serving", version=__version__, service=handle.service)
        try:
            yield
        finally:
            handle.close()
            log.info("mcp_stopped")

    server: MCPServer[None] = MCPServer(
        "memoryd",
        title="memoryd: past conversations and their summaries",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
    )

    @server.tool(title="Search the memory", annotations=READ_ONLY)
    def search(
        query: Annotated[
            str, Field(description=f"What to look for, in plain words (at most {MAX_QUERY_CHARS:,} characters).")
        ],
        k: Annotated[int, Field(description=f"How many hits to return, 1 to {MAX_K}.")] = 10,
        mode: Annotated[
            Literal["hybrid", "vector", "text"],
            Field(description="hybrid: meaning and words fused (best); vector: meaning only; text: words only."),
        ] = "hybrid",
        slugs: Annotated[list[str] | None, Field(description="Only these conversations (their slugs).")] = None,
        slug_prefix: Annotated[
            str | None, Field(description="Only conversations whose slug starts with this (e.g. '2025-06').")
        ] = None,
        roles: Annotated[list[Role] | None, Field(description="Only messages by these roles.")] = None,
        levels: Annotated[
            list[int] | None, Field(description="Only summaries of these levels (1 = closest to the messages).")
        ] = None,
        kinds: Annotated[list[Kind] | None, Field(description="Only messages, or only summaries.")] = None,
        since: Annotated[
            str | None,
            Field(
                description="From this day on (YYYY-MM-DD, inclusive): message timestamps, else the conversation date."
            ),
        ] = None,
        until: Annotated[str | None, Field(description="Up to this day (YYYY-MM-DD, inclusive).")] = None,
        context: Annotated[
            int, Field(description=f"Turns shown before and after each message hit, 0 to {MAX_CONTEXT}.")
        ] = 2,
        sources: Annotated[
            list[str] | None,
            Field(description="Only conversations of these sources (machines, as a hit's `source`); all by default."),
        ] = None,
    ) -> dict[str, Any]:
        """Find the messages and summaries that best match a query, each with the turns around it.

        Each hit has an `id` for `fetch`, its conversation's `slug` and `source` for `conversation`, its `seq`
        (position) or summary `level`, and `context`: the turns before and after a message and the
        summaries that cover it, or the first messages a summary covers.
        """

        def run(memory: Memory) -> dict[str, Any]:
            hits = memory.search(
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
            return {"hits": [hit.to_dict() for hit in hits], "answered_by": memory.via}

        return handle.call("search", run)

    @server.tool(title="Fetch one hit", annotations=READ_ONLY)
    def fetch(
        id: Annotated[str, Field(description="A hit's id from `search`, such as 'message:123' or 'summary:45'.")],
        context: Annotated[int, Field(description=f"Turns shown before and after a message, 0 to {MAX_CONTEXT}.")] = 5,
    ) -> dict[str, Any]:
        """One message or summary again by its id, with the turns around it and the summaries covering it."""

        def run(memory: Memory) -> dict[str, Any]:
            return {"hit": memory.hit(id, context=context).to_dict(), "answered_by": memory.via}

        return handle.call("fetch", run)

    @server.tool(title="Read a conversation", annotations=READ_ONLY)
    def conversation(
        slug: Annotated[str, Field(description="The conversation's slug, as in a hit's `slug`.")],
        around: Annotated[
            int | None, Field(description="Show a window around this message position (a hit's `seq`).")
        ] = None,
        window: Annotated[
            int | None, Field(description=f"Turns each side of `around` (5 by default), at most {MAX_WINDOW}.")
        ] = None,
        source: Annotated[
            str | None,
            Field(description="The conversation's source (a hit's `source`): needed when two sources share a slug."),
        ] = None,
    ) -> dict[str, Any]:
        """A whole conversation, or a window of it around one message, with the summaries covering what is shown."""

        def run(memory: Memory) -> dict[str, Any]:
            view = memory.conversation(slug, around=around, window=window, source=source)
            return {"conversation": view.to_dict(), "answered_by": memory.via}

        return handle.call("conversation", run)

    @server.tool(title="Recent conversations", annotations=READ_ONLY)
    def recent(
        limit: Annotated[int, Field(description=f"How many conversations, 1 to {MAX_LIMIT:,}.")] = 20,
        since: Annotated[
            str | None, Field(description="Only conversations dated this day or later (YYYY-MM-DD).")
        ] = None,
    ) -> dict[str, Any]:
        """The latest conversations by date: slug, title, date, and how many messages and summaries each holds."""

        def run(memory: Memory) -> dict[str, Any]:
            found = memory.recent(limit, since)
            return {"conversations": [info.to_dict() for info in found], "answered_by": memory.via}

        return handle.call("recent", run)

    @server.tool(title="Memory status", annotations=READ_ONLY)
    def status() -> dict[str, Any]:
        """Counts of conversations, messages, summaries and embeddings, pending work, recorded problems."""
        return handle.call("status", lambda memory: memory.status())

    return server


def serve(config: Config, *, service: bool | None) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin.

    ``service``: None uses a running daemon's query service when one answers
    (else works in-process), True requires it, False never asks it.
    """
    handle = MemoryHandle(config, service=service)
    build_server(handle).run("stdio")
