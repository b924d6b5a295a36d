"""The served emulator counts a request when its bytes arrive, as amoCRM's gateway does, not when
one of its threads gets round to parsing it: on a loaded host a handler thread waited up to
165 ms for the GIL or the CPU, and requests that came 1.06 s apart were counted 1.00 s apart
(a 429 the client had not earned)."""

from __future__ import annotations

import http.client
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest

from sync.emulator import Emulator, serve
from sync.emulator.arrival import stamps_supported

pytestmark = pytest.mark.skipif(
    not stamps_supported(), reason="the kernel stamps a socket's arrivals on Linux only"
)
CONTACTS = "/api/v4/contacts?limit=1"


@contextmanager
def threads_held() -> Iterator[Callable[[float], None]]:
    """`hold(s)`: keep every other thread of this process off the interpreter for `s` seconds,
    as a busy process does to the emulator's handler threads (they wait for the GIL)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(60.0)  # no other thread is let in while we spin

    def hold(seconds: float) -> None:
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            pass

    try:
        yield hold
    finally:
        sys.setswitchinterval(before)


def _connections(port: int, count: int, stack: ExitStack) -> list[http.client.HTTPConnection]:
    conns = []
    for _ in range(count):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stack.callback(conn.close)
        conns.append(conn)
    time.sleep(0.2)  # the server accepts them and each handler thread waits for its request
    return conns


def test_a_request_is_logged_when_its_bytes_arrived_not_when_a_thread_parsed_it(
    make_settings,
) -> None:
    emulator = Emulator(make_settings())
    headers = {"Authorization": f"Bearer {emulator.long_lived_token}"}
    with serve(emulator) as server, ExitStack() as stack:
        (conn,) = _connections(server.port, 1, stack)
        with threads_held() as hold:
            conn.request("GET", CONTACTS, headers=headers)
            sent = time.time()
            hold(0.3)  # the handler thread cannot parse it meanwhile
        assert conn.getresponse().status == 200
    (entry,) = emulator.requests()
    assert entry["arrived_at"] <= sent  # not 0.3 s later, when its thread parsed it


def test_requests_more_than_a_second_apart_are_never_a_429_however_late_one_is_parsed(
    make_settings,
) -> None:
    """8 requests within 1.05 s: the first one's thread is held 0.15 s before it parses it, so
    counted at parsing they were 8 within 0.9 s; counted at arrival, 7 in any second."""
    emulator = Emulator(make_settings(rate_limit=7.0, block_after_violations=None))
    headers = {"Authorization": f"Bearer {emulator.long_lived_token}"}
    with serve(emulator) as server, ExitStack() as stack:
        conns = _connections(server.port, 8, stack)
        with threads_held() as hold:
            conns[0].request("GET", CONTACTS, headers=headers)
            first = time.monotonic()
            hold(0.15)
        for conn in conns[1:7]:
            conn.request("GET", CONTACTS, headers=headers)
            time.sleep(0.05)
        time.sleep(max(0.0, first + 1.05 - time.monotonic()))
        conns[7].request("GET", CONTACTS, headers=headers)
        statuses = [conn.getresponse().status for conn in conns]
    assert statuses == [200] * 8
    times = sorted(entry["arrived_at"] for entry in emulator.requests())
    assert times[-1] - times[0] >= 1.0
