"""The HTTP front: `http.server.ThreadingHTTPServer` in a thread, translating to `Emulator.handle`.

Latency is slept in the connection's own thread (after the rate limiter counted the arrival),
so a slow answer never blocks other clients. A "reset" fault closes the socket with an RST.
A request's arrival is when its request line reached the socket (`sync.emulator.arrival`), not
when its thread parsed it: the rate limit and the request log count that.
"""

from __future__ import annotations

import io
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from sync.emulator.arrival import ArrivalReader, stamp_arrivals
from sync.emulator.core import Emulator
from sync.emulator.wire import Request


class RunningServer:
    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self.httpd = httpd
        self.thread = thread
        host, port = httpd.server_address[:2]
        self.host, self.port = str(host), int(port)
        self.base_url = f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # slow/latency threads must not hold up stop(); they are daemons
    # socketserver's default backlog is 5: a client opening a pool of connections at once
    # would see dropped SYNs and a 1 s retransmit, which a benchmark would blame on the API.
    request_queue_size = 128
    emulator: Emulator

    def server_bind(self) -> None:
        super().server_bind()
        stamp_arrivals(self.socket)  # before any connection is accepted: none misses a stamp

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hung up mid-answer (its timeout, a test's reset) is normal for a
        server: say nothing. Anything else is a bug in the emulator and keeps its traceback."""
        if isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, like the real gateway
    # Headers and body leave in two writes; with Nagle on, the client's delayed ACK would add
    # ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    _arrivals: ArrivalReader
    _arrived_at: float | None = None

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the socket's own file; the socket stays open
        self._arrivals = ArrivalReader(self.connection)
        self.rfile = io.BufferedReader(self._arrivals)

    def parse_request(self) -> bool:
        # the request line was just read: the read that brought it in is its arrival
        self._arrived_at = self._arrivals.last
        return super().parse_request()

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header by the account's clock, which its `updated_at` values follow."""
        moment = self.server.emulator.clock.now() if timestamp is None else timestamp
        return formatdate(moment, usegmt=True)

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            self.command, parts.path, parts.query,
            {k.lower(): v for k, v in self.headers.items()}, body, self.client_address[0],
            self._arrived_at,
        )  # fmt: skip
        response = self.server.emulator.handle(request)
        if response.delay_s > 0:
            time.sleep(response.delay_s)
        if response.reset:
            self._reset_connection()
            return
        self.send_response(response.status)
        for name, value in response.all_headers().items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _reset_connection(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST: the client sees ECONNRESET.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def version_string(self) -> str:
        return "nginx"  # what amoCRM's gateway says; clients sometimes log it

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: object) -> None:
        """Silent: the emulator keeps its own request log."""


def start(emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    httpd = _Server((host, port), _Handler)
    httpd.emulator = emulator
    # A short poll interval makes stop() quick, which keeps a test suite of many servers fast.
    thread = threading.Thread(
        target=httpd.serve_forever, args=(0.05,), name="amocrm-emulator", daemon=True
    )
    thread.start()
    return RunningServer(httpd, thread)


@contextmanager
def serve(emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> Iterator[RunningServer]:
    """Run the emulator on host:port (0 = a free port) until the block exits."""
    server = start(emulator, host, port)
    try:
        yield server
    finally:
        server.stop()
