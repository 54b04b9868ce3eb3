"""The daemon's query service: HTTP + JSON on a Unix socket, answered by the daemon's warm model.

Routes (all under ``/v1``; errors are ``{"error": {"type", "message"}}``):

- ``GET  /health``                     who answers: version, pid, database, whether the model is loaded
- ``POST /search``                     body: ``{"query", "k", "mode", "slugs", "slug_prefix", "roles",
                                        "levels", "kinds", "since", "until", "context",
                                        "sources"}`` → ``{"hits": [...]}``
- ``GET  /hits/<id>?context=N``        → ``{"hit": ...}``
- ``GET  /conversations/<slug>?around=&window=&source=`` → ``{"conversation": ...}``
- ``GET  /recent?limit=&since=``       → ``{"conversations": [...]}``
- ``GET  /status``                     → ``{"status": ...}``

Every answer comes from :class:`memoryd.api.LocalMemory`, the code an
in-process :class:`memoryd.Memory` runs, so both give the same results.  A
bad request is a 400 that names the field; nothing a client sends can stop
the daemon.  The socket is the access control: mode 0600, in a 0700 folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import stat
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import structlog

from memoryd import __version__
from memoryd.api import LocalMemory, SearchRequest, as_date
from memoryd.errors import DatabaseUnavailable, InvalidRequest, MemorydError, NotFound
from memoryd.query_client import API, database_identity

log = structlog.get_logger(__name__)

# A search request is a few hundred bytes; this bounds what one client can make the daemon read.
MAX_BODY_BYTES = 2 * 1024 * 1024
# A client that sends nothing for this long is dropped (a thread each while it waits).
IDLE_TIMEOUT_S = 30.0


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False


class QueryService:
    """Serves ``memory`` on ``path`` from a thread of its own until :meth:`stop`."""

    def __init__(self, memory: LocalMemory, path: Path, *, model_ready: threading.Event | None = None) -> None:
        self.memory = memory
        self.path = path
        self.model_ready = model_ready
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._inode: int | None = None

    def start(self) -> bool:
        """Bind and serve; False (with a warning) when the socket cannot be used: the daemon goes on without it."""
        try:
            self._prepare_path()
            handler = type("Handler", (_Handler,), {"service": self})
            old_umask = os.umask(0o177)  # the socket is created 0600: no window where others may connect
            try:
                self._server = _Server(str(self.path), handler)
            finally:
                os.umask(old_umask)
            os.chmod(self.path, 0o600)
            self._inode = os.stat(self.path).st_ino
        except (OSError, _InUse) as exc:
            log.warning("query_service_unavailable", socket=str(self.path), error=str(exc))
            return False
        self._thread = threading.Thread(target=self._server.serve_forever, name="memoryd-query", daemon=True)
        self._thread.start()
        log.info("query_service_started", socket=str(self.path))
        return True

    def _prepare_path(self) -> None:
        """Create the folder (0700), and remove a socket left by a daemon that was killed."""
        folder = self.path.parent
        if not folder.exists():
            folder.mkdir(mode=0o700, parents=True)
        elif folder.name == "memoryd" and stat.S_IMODE(folder.stat().st_mode) & 0o077:
            os.chmod(folder, 0o700)  # our own runtime folder; a folder the user named is left as it is
        if not os.path.lexists(self.path):
            return
        if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
            raise _InUse(f"{self.path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(self.path))
        except OSError:  # nobody listens: a killed daemon's socket
            os.unlink(self.path)
            log.info("query_service_stale_socket_removed", socket=str(self.path))
            return
        finally:
            probe.close()
        raise _InUse(f"another process already serves {self.path}")

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:  # still ours, not a successor's
                os.unlink(self.path)
        self._server = None
        log.info("query_service_stopped", socket=str(self.path))

    def health(self) -> dict[str, Any]:
        return {
            "ok": True,
            "version": __version__,
            "pid": os.getpid(),
            "database": database_identity(self.memory.config),
            "model_ready": self.model_ready.is_set() if self.model_ready is not None else None,
        }


class _InUse(Exception):
    """The socket path is taken by something that is not a stale socket."""


class _Handler(BaseHTTPRequestHandler):
    service: QueryService
    protocol_version = "HTTP/1.1"
    server_version = f"memoryd/{__version__}"
    timeout = IDLE_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        pass  # each request is logged once, as a structured event, in _answer

    def address_string(self) -> str:
        return "unix"

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def _answer(self, method: str) -> None:
        url = urlsplit(self.path)
        try:
            status, body = 200, self._route(method, url.path, parse_qs(url.query, keep_blank_values=True))
        except _HttpError as exc:
            status, body = exc.status, _error_body(exc.kind, str(exc))
        except InvalidRequest as exc:
            status, body = 400, _error_body("invalid_request", str(exc))
        except NotFound as exc:
            status, body = 404, _error_body("not_found", str(exc))
        except DatabaseUnavailable as exc:
            status, body = 503, _error_body("database_unavailable", str(exc))
        except MemorydError as exc:
            status, body = 500, _error_body("error", str(exc))
        except Exception as exc:  # a bug must not take the daemon down; it is logged with its traceback
            log.exception("query_failed", path=url.path)
            status, body = 500, _error_body("internal_error", f"{type(exc).__name__}: {exc}")
        payload = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        log.debug("query_answered", method=method, path=url.path, status=status)

    def _route(self, method: str, path: str, params: dict[str, list[str]]) -> Any:
        memory = self.service.memory
        if not path.startswith(API + "/"):
            raise _HttpError(404, "not_found", f"no endpoint {path!r}; the API lives under {API}/")
        parts = [unquote(p) for p in path[len(API) + 1 :].split("/")]
        route, rest = parts[0], parts[1:]
        expected = "POST" if route == "search" else "GET"
        known = {"health", "search", "hits", "conversations", "recent", "status"}
        if route not in known or (rest and route not in ("hits", "conversations")) or len(rest) > 1:
            raise _HttpError(404, "not_found", f"no endpoint {path!r}")
        body = self._read_body() if method == "POST" else None
        if method != expected:
            raise _HttpError(405, "method_not_allowed", f"{path} takes {expected}, not {method}")
        if route == "health":
            return self.service.health()
        if route == "search":
            if not isinstance(body, dict):
                raise InvalidRequest("body: expected a JSON object with at least a 'query'")
            options = dict(body)
            request = SearchRequest.build(options.pop("query", None), **options)
            return {"hits": [h.to_dict() for h in memory.search(request)]}
        if route == "hits":
            if not rest:
                raise _HttpError(404, "not_found", "GET /v1/hits/<id>")
            return {"hit": memory.hit(rest[0], _int_param(params, "context", 2) or 0).to_dict()}
        if route == "conversations":
            if not rest:
                raise _HttpError(404, "not_found", "GET /v1/conversations/<slug>")
            view = memory.conversation(
                rest[0], _int_param(params, "around", None), _int_param(params, "window", None), _one(params, "source")
            )
            return {"conversation": view.to_dict()}
        if route == "recent":
            since = _one(params, "since")
            infos = memory.recent(_int_param(params, "limit", 20) or 20, as_date("since", since) if since else None)
            return {"conversations": [i.to_dict() for i in infos]}
        return {"status": memory.status()}

    def _read_body(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise _HttpError(411, "length_required", "a POST needs a Content-Length header")
        try:
            size = int(length)
        except ValueError:
            self.close_connection = True
            raise _HttpError(400, "invalid_request", f"Content-Length: not a number: {length!r}") from None
        if size > MAX_BODY_BYTES:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            raise _HttpError(413, "too_large", f"request body of {size:,} bytes; at most {MAX_BODY_BYTES:,}")
        raw = self.rfile.read(size)
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"body: not valid JSON: {exc}") from exc


class _HttpError(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def _error_body(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[-1] if values else None


def _int_param(params: dict[str, list[str]], name: str, default: int | None) -> int | None:
    value = _one(params, name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidRequest(f"{name}: expected an integer, got {value!r}") from None
