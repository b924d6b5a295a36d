"""A TCP proxy in front of the shared PostgreSQL that can freeze its traffic: connections stay
open, nothing reaches either side (PostgreSQL "stops answering": a frozen network path), until
`thaw`; or, with `hold_queries`, let every connection start and authenticate and then hold its
first query for good (a server that accepts a session and never answers it). Never stop the
shared server to test a hanging database; put this in front of it."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from functools import partial

from sqlalchemy.engine import URL


class FreezeProxy:
    """127.0.0.1:<port> → `target`; `freeze()` holds every byte (both ways, new connections
    too: accepted, their startup never forwarded), `thaw()` lets them through again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._flowing = threading.Event()
        self._flowing.set()
        self._holding = threading.Event()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="pg-proxy", daemon=True).start()

    def url(self, url: URL) -> URL:
        """`url` (of the shared server) through this proxy."""
        return url.set(host="127.0.0.1", port=self.port)

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def hold_queries(self) -> None:
        """From now on a connection's startup and authentication pass, and its first query
        (a simple `Query` or an extended `Parse`; use sslmode=disable to keep them readable)
        and everything after it never reach the server: the session is made, no answer comes."""
        self._holding.set()

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in [self._listener, *sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            ends = threading.Barrier(2, action=partial(self._forget, client, upstream))
            for source, sink, holds in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pump, args=(source, sink, ends, holds), daemon=True
                ).start()

    def _forget(self, *sockets: socket.socket) -> None:
        """Both directions ended: close the connection's sockets."""
        with self._lock:
            self._sockets = [sock for sock in self._sockets if sock not in sockets]
        for sock in sockets:
            sock.close()

    def _pump(
        self, source: socket.socket, sink: socket.socket, ends: threading.Barrier, holds: bool
    ) -> None:
        """Bytes from `source` to `sink`; `holds`: the client's side, whose queries
        `hold_queries` keeps."""
        try:
            while not self._closed.is_set():
                self._flowing.wait()
                readable, _, _ = select.select([source], [], [], 0.1)
                if not readable or not self._flowing.is_set():
                    continue  # frozen meanwhile: leave the bytes where they are
                data = source.recv(65536)
                if not data:
                    break
                if holds and self._holding.is_set() and data[:1] in (b"Q", b"P"):
                    self._closed.wait()  # the session stays open; nothing more reaches it
                    break
                self._flowing.wait()
                sink.sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(threading.BrokenBarrierError):
                ends.wait(5)
