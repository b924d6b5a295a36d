"""HEAD on the daemon's probe endpoints answers like GET without a body (load balancers and
uptime checkers probe with HEAD; a 501 there reads as a dead service)."""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from sync.daemon.server import Endpoints, HttpServer

METRICS = b"# TYPE amosync_up gauge\namosync_up 1\n"


@pytest.fixture
def server() -> Iterator[HttpServer]:
    endpoints = Endpoints(
        health=lambda: (503, {"status": "unhealthy", "reasons": ["no_successful_pull"]}),
        alive=lambda: True,
        metrics=lambda: (METRICS, "text/plain; version=0.0.4"),
    )
    http_server = HttpServer("127.0.0.1", 0, endpoints)
    http_server.start()
    try:
        yield http_server
    finally:
        http_server.stop()


@pytest.mark.parametrize("path", ["/healthz", "/livez", "/metrics", "/nowhere"])
def test_head_answers_like_get_without_the_body(server: HttpServer, path: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", path)
        got = conn.getresponse()
        body = got.read()
        conn.request("HEAD", path)  # the same keep-alive connection
        head = conn.getresponse()
        assert head.read() == b""
        assert head.status == got.status
        assert head.getheader("Content-Type") == got.getheader("Content-Type")
        assert head.getheader("Content-Length") == str(len(body))
        conn.request("GET", path)  # no stray body bytes were left on the connection
        again = conn.getresponse()
        assert (again.status, again.read()) == (got.status, body)
    finally:
        conn.close()


def test_a_client_that_resets_the_connection_leaves_no_traceback(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """GET /metrics, then close with SO_LINGER 0 (a reset) before the answer: the server said
    so in a multi-line traceback on stderr, outside the JSON log."""
    answering = threading.Event()

    def slow_metrics() -> tuple[bytes, str]:
        answering.set()
        time.sleep(0.3)  # the reset arrives meanwhile
        return METRICS * 20000, "text/plain; version=0.0.4"

    endpoints = Endpoints(health=lambda: (200, {}), alive=lambda: True, metrics=slow_metrics)
    http_server = HttpServer("127.0.0.1", 0, endpoints)
    http_server.start()
    try:
        with capture_logs() as logs:
            sock = socket.create_connection(("127.0.0.1", http_server.port), timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert answering.wait(5)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            deadline = time.monotonic() + 5
            while not logs and time.monotonic() < deadline:
                time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=5)
        conn.request("GET", "/livez")
        assert conn.getresponse().status == 200  # the server lives on
        conn.close()
    finally:
        http_server.stop()
    assert "Traceback" not in capfd.readouterr().err
    assert [e["event"] for e in logs] == ["http_client_gone"]
