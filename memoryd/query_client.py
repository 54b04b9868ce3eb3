"""The client of a daemon's query service: HTTP + JSON on a Unix socket.

Light on purpose: the standard library and memoryd's value types only, no
database driver, no numpy, no torch.  A ``memoryd search`` that finds a
daemon answering spends its time in Python's start-up, not in imports.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from memoryd import __version__
from memoryd.errors import DatabaseUnavailable, InvalidRequest, NotFound, ServiceError
from memoryd.results import ConversationInfo, ConversationView, Hit

if TYPE_CHECKING:
    from memoryd.api import SearchRequest
    from memoryd.config import Config

API = "/v1"
# Long enough for a search while the daemon is busy embedding on a 2-core machine.
REQUEST_TIMEOUT_S = 60.0
# A daemon that does not answer its health check this fast is not used.
HEALTH_TIMEOUT_S = 2.0


def socket_path(config: Config) -> Path:
    return config.service.socket_path(config.database.data_dir)


def database_identity(config: Config) -> str:
    """Which database a configuration points at, without revealing its DSN.

    A daemon's socket is only used by clients configured for the same
    database: two configurations can share one runtime folder.
    """
    if config.database.dsn:
        return "dsn:" + hashlib.sha256(config.database.dsn.encode()).hexdigest()[:16]
    return f"embedded:{config.database.data_dir.resolve()}"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("memoryd", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


class ServiceClient:
    """Asks a running daemon; raises the same errors as in-process answers would."""

    via = "service"

    def __init__(self, path: Path, *, timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.path = path
        self.timeout = timeout
        self._conn: _UnixConnection | None = None

    def request(self, method: str, route: str, body: Any = None, *, timeout: float | None = None) -> Any:
        """One call; the connection is kept for the next (HTTP/1.1 keep-alive) and reopened once if it broke."""
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = _UnixConnection(self.path, timeout or self.timeout)
            try:
                self._conn.request(method, API + route, body=payload, headers=headers)
                response = self._conn.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if attempt == 2:
                    raise ServiceError(f"the query service at {self.path} closed the connection: {exc}") from exc
            except OSError as exc:
                self.close()
                raise ServiceError(f"the query service at {self.path} does not answer: {exc}") from exc
        try:
            answer = json.loads(data)
        except ValueError as exc:
            raise ServiceError(f"the query service answered HTTP {response.status} with no JSON") from exc
        if response.status >= 400:
            raise _error(response.status, answer)
        return answer

    def health(self) -> dict[str, Any]:
        answer = self.request("GET", "/health", timeout=HEALTH_TIMEOUT_S)
        return dict(answer)

    def search(self, request: SearchRequest) -> list[Hit]:
        return [Hit.from_dict(h) for h in self.request("POST", "/search", request.to_dict())["hits"]]

    def hit(self, hit_id: str, context: int) -> Hit:
        return Hit.from_dict(self.request("GET", f"/hits/{quote(str(hit_id), safe='')}?context={context}")["hit"])

    def conversation(
        self, slug: str, around: int | None, window: int | None, source: str | None = None
    ) -> ConversationView:
        params = {k: v for k, v in (("around", around), ("window", window), ("source", source)) if v is not None}
        route = f"/conversations/{quote(slug, safe='')}" + (f"?{urlencode(params)}" if params else "")
        return ConversationView.from_dict(self.request("GET", route)["conversation"])

    def recent(self, limit: int, since: date | None) -> list[ConversationInfo]:
        params: dict[str, Any] = {"limit": limit}
        if since is not None:
            params["since"] = since.isoformat()
        answer = self.request("GET", f"/recent?{urlencode(params)}")
        return [ConversationInfo.from_dict(c) for c in answer["conversations"]]

    def status(self) -> dict[str, Any]:
        return dict(self.request("GET", "/status")["status"])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _error(status: int, answer: Any) -> Exception:
    message = str(answer.get("error", {}).get("message", answer)) if isinstance(answer, dict) else str(answer)
    if status == 400:
        return InvalidRequest(message)
    if status == 404:
        return NotFound(message)
    if status == 503:
        return DatabaseUnavailable(message)
    return ServiceError(f"query service error (HTTP {status}): {message}")


def connect_service(config: Config, *, required: bool = False) -> ServiceClient | None:
    """A client of the daemon serving this configuration's database, or None when none answers.

    A socket that nobody listens on (a killed daemon's) or a daemon serving
    another database is not used.  ``required`` turns each of these into a
    :class:`ServiceError` that says which.
    """
    if not config.service.enabled:
        return _absent(required, "the query service is disabled ([service] enabled = false)")
    path = socket_path(config)
    if not os.path.exists(path):
        return _absent(required, f"no query service: {path} does not exist (is `memoryd watch` running?)")
    client = ServiceClient(path)
    try:
        health = client.health()
    except (ServiceError, InvalidRequest, NotFound, DatabaseUnavailable) as exc:
        client.close()
        return _absent(required, f"no query service answers at {path}: {exc}")
    if health.get("database") != database_identity(config):
        client.close()
        return _absent(required, f"the query service at {path} serves another database ({health.get('database')})")
    if health.get("version") != __version__:
        client.close()
        return _absent(required, f"the query service at {path} runs memoryd {health.get('version')}, not {__version__}")
    return client


def _absent(required: bool, reason: str) -> ServiceClient | None:
    """None, or the reason as an error when the service is required."""
    if required:
        raise ServiceError(reason)
    return None
