"""HEAD on the daemon's probe endpoints answers like GET without a body (load balancers and
uptime checkers probe with HEAD; a 501 there reads as a dead service)."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest

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
