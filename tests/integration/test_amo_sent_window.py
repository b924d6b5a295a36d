"""The rate window counts a request from when its headers left, through the real session: the
HTTP trace of `AmoSession` moves the slot's `at` to the write, over real HTTP to a local server.

No durations are compared: only the order of moments on the one monotonic clock that the
limiter and the server thread both read. The client gets one connection, so a second request
that took its start while the first holds it can only write once the first is answered; the
server takes its "body read" moment after the whole body arrived, which the client sends only
after the headers (so after `at` was set), and holds the first answer until the second request
has its start.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from sync.amo.ratelimit import RateLimiter, Slot
from sync.amo.session import AmoSession
from tests.integration.amo_emulator import amo_config

WAIT_S = 10.0  # only a bound for a broken run; nothing is timed against it


@dataclass
class Moments:
    """What the server saw, on `time.monotonic()`, by request path."""

    body_read: dict[str, float] = field(default_factory=dict)
    answered: dict[str, float] = field(default_factory=dict)
    first_read: threading.Event = field(default_factory=threading.Event)
    hold_first: threading.Event = field(default_factory=threading.Event)


class RecordingLimiter(RateLimiter):
    """The real limiter, keeping every slot it hands out; the second one lets the server
    answer the first request."""

    def __init__(self, moments: Moments) -> None:
        super().__init__(200.0, margin_s=0.0)
        self.slots: list[Slot] = []
        self._moments = moments

    def acquire(self, stopping: threading.Event | None = None) -> Slot:
        slot = super().acquire(stopping)
        self.slots.append(slot)
        if len(self.slots) == 2:
            self._moments.hold_first.set()
        return slot


@contextmanager
def serving(moments: Moments) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            moments.body_read[self.path] = time.monotonic()
            if self.path.endswith("/first"):
                moments.first_read.set()
                moments.hold_first.wait(WAIT_S)
            moments.answered[self.path] = time.monotonic()
            body = json.dumps({"ok": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT_S)


def test_a_request_counts_in_the_window_from_when_its_headers_left() -> None:
    moments = Moments()
    limiter = RecordingLimiter(moments)
    with serving(moments) as url:
        one_connection = httpx.HTTPTransport(limits=httpx.Limits(max_connections=1))
        session = AmoSession(
            amo_config(url, timeout_s=WAIT_S), None, limiter, transport=one_connection
        )
        first = threading.Thread(
            target=session.send, args=("POST", "/api/v4/first"), kwargs={"json": [{"n": 1}]}
        )
        try:
            first.start()
            # the first request holds the one connection (and took the first start)
            assert moments.first_read.wait(WAIT_S)
            reply = session.send("POST", "/api/v4/second", json=[{"n": 2}])
        finally:
            moments.hold_first.set()  # a failed run must not leave the first one waiting
            first.join(WAIT_S)
            session.close()
    assert not first.is_alive()
    assert reply.data == {"ok": True}
    one, two = limiter.slots  # no retry took a third start
    # the first: counted from its write, which the server's read of the body followed
    assert one.started <= one.at <= moments.body_read["/api/v4/first"]
    # the second took its start while the first held the connection and wrote once that was
    # answered: `at` moved past its start, to before the server read it and answered
    assert two.started <= moments.answered["/api/v4/first"] <= two.at
    assert two.started < two.at
    assert two.at <= moments.body_read["/api/v4/second"] <= moments.answered["/api/v4/second"]
