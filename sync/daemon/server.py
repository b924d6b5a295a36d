"""The daemon's HTTP server: /healthz, /livez, /metrics, and amoCRM's webhook.

GET /healthz and /livez answer what `sync.daemon.health` concludes, /metrics is the Prometheus
exposition (`sync.daemon.metrics`); each is a callable of `Endpoints`, so the server knows
nothing of the daemon. An endpoint that raises answers 500 and the server thread lives on.
HEAD answers like GET (status and headers, Content-Length included) without the body. A client
that goes away mid-answer (a reset) is one debug line, never a traceback on stderr.

POST /webhooks/amocrm/<secret> (with `webhooks.enabled`) is amoCRM's webhook: the secret is
compared in constant time (wrong: 404, body unread, nothing else happens). With the right one
every post is answered 200 at once, after handing its hint (`sync.daemon.webhooks.hints`) to
`HookRoute.receive` — the pull happens on the scheduler's thread, never here. A body that cannot
be read or understood (another content type, no usable Content-Length, over 1 MiB, not a form) is
answered 200 all the same and taken as a hint to pull (`unreadable_hint`): amoCRM counts any
other answer as a failed delivery and disables a hook after 100 of them in 2 hours. At most
`MAX_BODY_BYTES` are kept in memory: a larger body is read and dropped up to `DISCARD_LIMIT`
(so its sender reads the answer) and the connection closed; over that, it is closed unread.
"""

from __future__ import annotations

import hmac
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sync.daemon.webhooks.hints import (
    MAX_BODY_BYTES,
    Hint,
    Unreadable,
    declared_size,
    media_type,
    read_hook,
    unreadable_hint,
)
from sync.lines import bound_line
from sync.logs import get_logger

log = get_logger("sync.health")  # the name its events have always been logged under

HOOK_PREFIX = "/webhooks/amocrm/"
READ_TIMEOUT_S = 10.0  # a client that sends its body slower than this is cut off


@dataclass(frozen=True)
class HookRoute:
    """amoCRM's webhook: its secret path segment, and where accepted and refused posts go."""

    secret: str = field(repr=False)
    receive: Callable[[Hint], None]
    rejected: Callable[[str], None] = lambda reason: None  # a refused post, by reason

    def matches(self, path: str) -> bool:
        """Is `path` the hook's? The secret is compared in constant time."""
        if not path.startswith(HOOK_PREFIX) or not self.secret:
            return False
        candidate = path[len(HOOK_PREFIX) :].rstrip("/")  # a destination registered with a /
        return hmac.compare_digest(candidate.encode(), self.secret.encode())


@dataclass(frozen=True)
class Endpoints:
    """What the HTTP server serves: three callables returning (status, content type, body), and
    the webhook when it is enabled."""

    health: Callable[[], tuple[int, dict[str, Any]]]
    alive: Callable[[], bool]
    metrics: Callable[[], tuple[bytes, str]]
    hook: HookRoute | None = None


DISCARD_LIMIT = 8 << 20  # a body not kept, up to this size, is read and dropped before the answer
MAX_CHUNK_LINE = 64  # a chunk-size line (hex size and extensions) of a chunked body, at most
MAX_TRAILERS = 32


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = READ_TIMEOUT_S  # no slow client holds a thread for long

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        route = self.server.endpoints.hook
        if route is None or not route.matches(path):
            if route is not None and path.startswith(HOOK_PREFIX):
                route.rejected("secret")
            self._refuse(404, "not found", unread=True)  # the same answer as any unknown path
            return
        try:
            hint = read_hook(self.headers.get("Content-Type"), self._read_body())
        except Unreadable as exc:
            hint = self._unreadable(route, exc.reason)
        try:
            route.receive(hint)
        except Exception:  # a bug must not make amoCRM count failures: the polls cover
            log.exception("webhook_receive_failed")
        try:
            self._send(200, "text/plain", b"ok\n")
        except OSError:  # the client went away meanwhile: its hint is taken all the same
            self.close_connection = True

    def _read_body(self) -> bytes:
        """The body, if it can be read whole and is at most `MAX_BODY_BYTES`; else `Unreadable`."""
        length = self.headers.get("Content-Length")
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        try:
            if length is None and chunked:
                return self._read_chunked()
            size = declared_size(length)
            if size > MAX_BODY_BYTES:
                self._discard_body()
                raise Unreadable("too_large")
            body = self.rfile.read(size)
        except OSError:  # the client went away or was too slow
            raise Unreadable("read") from None
        if len(body) < size:
            raise Unreadable("read")
        return body

    def _read_chunked(self) -> bytes:
        """A `Transfer-Encoding: chunked` body of at most `MAX_BODY_BYTES` (no Content-Length)."""
        body = bytearray()
        while True:
            line = self.rfile.readline(MAX_CHUNK_LINE)
            size_text = line.split(b";", 1)[0].strip()
            if not line.endswith(b"\n") or not size_text.isalnum():
                raise Unreadable("length")
            try:
                size = int(size_text, 16)
            except ValueError:
                raise Unreadable("length") from None
            if size == 0:
                self._skip_trailers()
                return bytes(body)
            if len(body) + size > MAX_BODY_BYTES:
                raise Unreadable("too_large")
            chunk = self.rfile.read(size + 2)  # the data and its CRLF
            if len(chunk) < size + 2:
                raise Unreadable("read")
            body += chunk[:size]

    def _skip_trailers(self) -> None:
        for _ in range(MAX_TRAILERS):
            if self.rfile.readline(1024).strip() == b"":
                return
        raise Unreadable("length")

    def _unreadable(self, route: HookRoute, reason: str) -> Hint:
        """A post with the right secret that could not be read or understood: count it, say so
        once per reason (never its body or path), pull all the same, and end the connection
        (the body may be partly unread: never parse it as the next request)."""
        route.rejected(reason)
        self.close_connection = True
        warned = self.server.warned_unreadable
        if reason not in warned:
            warned.add(reason)
            log.warning(
                "webhook_unreadable",
                reason=reason,
                content_type=media_type(self.headers.get("Content-Type"))[:80],
                length=(self.headers.get("Content-Length") or "")[:20],
                note="answered 200 and pulled; later ones of this reason at debug level",
            )
        else:
            log.debug("webhook_unreadable", reason=reason)
        return unreadable_hint()

    def _refuse(self, status: int, reason: str, *, unread: bool = False) -> None:
        if unread:
            self._discard_body()
        self.close_connection = True  # the body may be unread: never parse it as a request
        try:
            self._send(status, "text/plain", f"{reason}\n".encode())
        except OSError:  # the client went away
            return

    def _discard_body(self) -> None:
        """Read and drop a declared body of up to `DISCARD_LIMIT` bytes (never parsed), so a
        client still sending it reads our refusal instead of a reset connection; a larger one
        is cut off by closing. The read timeout bounds how long a slow sender holds the thread."""
        try:
            left = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return
        if not 0 < left <= DISCARD_LIMIT:
            return
        try:
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    return
                left -= len(chunk)
        except OSError:
            return

    def do_GET(self) -> None:
        self._get(with_body=True)

    def do_HEAD(self) -> None:
        self._get(with_body=False)

    def _get(self, *, with_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        try:
            status, content_type, body = self._answer(path)
        except Exception as exc:  # an endpoint bug must not kill the server thread
            log.exception("http_endpoint_failed", path=path)
            status, content_type = 500, "text/plain"
            body = f"internal error: {type(exc).__name__}\n".encode()
        self._send(status, content_type, body, with_body=with_body)

    def _answer(self, path: str) -> tuple[int, str, bytes]:
        endpoints = self.server.endpoints
        if path == "/healthz":
            status, answer = endpoints.health()
            return status, "application/json", json.dumps(answer).encode()
        if path == "/livez":
            ok = endpoints.alive()
            return (200, "text/plain", b"ok\n") if ok else (503, "text/plain", b"stalled\n")
        if path == "/metrics":
            payload, content_type = endpoints.metrics()
            return 200, content_type, payload
        return 404, "text/plain", b"not found: try /healthz, /livez or /metrics\n"

    def _send(self, status: int, content_type: str, body: bytes, *, with_body: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if with_body:  # HEAD: the GET answer's headers only
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the log; stay quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a burst of hook posts must not meet a full listen backlog (5)
    endpoints: Endpoints
    warned_unreadable: set[str]  # reasons of unreadable hooks already logged at warning

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One log line instead of socketserver's traceback on stderr (outside the log's
        format): a client that went away (a reset, a closed socket, too slow) at debug level,
        anything else at warning."""
        error = sys.exc_info()[1]
        text = bound_line(f"{type(error).__name__}: {error}", 200)
        if isinstance(error, OSError):
            log.debug("http_client_gone", error=text)
        else:
            log.warning("http_request_failed", error=text)


class HttpServer:
    """The health and metrics endpoints on a background thread."""

    def __init__(self, host: str, port: int, endpoints: Endpoints) -> None:
        self._server = _Server((host, port), _Handler)
        self._server.endpoints = endpoints
        self._server.warned_unreadable = set()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="amosync-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
