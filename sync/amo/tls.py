"""The TLS context of every amoCRM client in the process: the one httpx builds by default
(certifi's CA bundle, or `SSL_CERT_FILE` / `SSL_CERT_DIR`), built once.

Building it parses some 150 CA certificates, ~30 ms of CPU that each `httpx.Client` paid at its
construction, on the way to a command's first request. `warm_tls()` starts the build in a
thread as a command begins (OpenSSL reads the bundle without holding the GIL, so it runs beside
the command's imports); `tls_context()` waits for it, or builds it when nothing started it. A
failed build is not kept: it raises where the client is built, and the next call tries again.
The context is shared read-only: every client speaks HTTP/1.1 (httpcore sets the same ALPN
protocols on it for each connection).
"""

from __future__ import annotations

import ssl
import threading
from concurrent.futures import Future

import httpx


class TlsContext:
    """One context built on first use: built, being built, or not (yet, or since a build failed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._future: Future[ssl.SSLContext] | None = None

    def warm(self) -> None:
        """Start the build in a background thread, unless it is built or under way."""
        future, mine = self._current()
        if mine:
            threading.Thread(target=_build, args=(future,), name="amosync-tls", daemon=True).start()

    def get(self) -> ssl.SSLContext:
        """The context: waits for a build under way, or builds it here."""
        future, mine = self._current()
        if mine:
            _build(future)
        try:
            return future.result()
        except BaseException:
            self._forget(future)
            raise

    def _current(self) -> tuple[Future[ssl.SSLContext], bool]:
        """The kept or pending build, and whether the caller just took it on (and must run it)."""
        with self._lock:
            if self._future is not None:
                return self._future, False
            self._future = Future()
            return self._future, True

    def _forget(self, future: Future[ssl.SSLContext]) -> None:
        with self._lock:
            if self._future is future:
                self._future = None


def _build(future: Future[ssl.SSLContext]) -> None:
    try:
        future.set_result(httpx.create_ssl_context())
    except BaseException as exc:  # noqa: BLE001 - whoever waits must wake up, whatever happened
        future.set_exception(exc)


_process = TlsContext()


def warm_tls() -> None:
    """Start building the shared context in a background thread (once per process)."""
    _process.warm()


def tls_context() -> ssl.SSLContext:
    """The shared context (see `TlsContext.get`)."""
    return _process.get()
