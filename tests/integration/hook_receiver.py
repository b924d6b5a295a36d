"""A tiny real HTTP server that receives hooks, for tests: it records every POST, answers with
the status a test sets, and can hold its answer until the test releases it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sync.emulator.params import parse_query


@dataclass(frozen=True)
class Hook:
    path: str
    content_type: str
    body: str

    @property
    def form(self) -> dict[str, Any]:
        """The body nested the way PHP reads `$_POST` (`form["contacts"]["update"]["0"]["id"]`)."""
        return parse_query(self.body)

    def entities(self, event: str) -> list[dict[str, Any]]:
        contacts = self.form.get("contacts", {})
        found = contacts.get(event, {}) if isinstance(contacts, dict) else {}
        return [found[key] for key in sorted(found, key=int)]


class Receiver:
    """Records hooks; `status` is what it answers; with `hold` set, answers wait for `release`."""

    def __init__(self) -> None:
        self.hooks: list[Hook] = []
        self.status = 200
        self.hold = False
        self.arrived = 0  # requests that came in, answered or not
        self._released = threading.Event()
        self._cond = threading.Condition()
        self.port = 0

    def url(self, path: str = "/webhooks/amocrm/s3cret-s3cret-s3cret") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def release(self) -> None:
        self._released.set()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Hook]:
        """At least `count` hooks received (fails the test after `timeout` seconds)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.hooks) >= count, timeout):
                raise AssertionError(f"{len(self.hooks)} hooks arrived, expected {count}")
            return list(self.hooks)

    def _arrive(self) -> None:
        with self._cond:
            self.arrived += 1
            self._cond.notify_all()

    def _received(self, hook: Hook) -> int:
        with self._cond:
            self.hooks.append(hook)
            self._cond.notify_all()
        if self.hold:
            self._released.wait(30)
        return self.status


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            receiver._arrive()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("ascii")
            hook = Hook(self.path, self.headers.get("Content-Type") or "", body)
            status = receiver._received(hook)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except (BrokenPipeError, ConnectionResetError):  # the sender gave up (its timeout)
                pass

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


@contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    server = _Server(("127.0.0.1", 0), _handler(receiver))
    receiver.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
