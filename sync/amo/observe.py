"""Watching the client's traffic from above without HTTP leaving `sync/amo`: the daemon's
metrics and health learn of every answer (method, status) and every failure to reach amoCRM
(method, one line naming `host:port` and what happened) through a `TrafficObserver`, and never
see an httpx type.
"""

from __future__ import annotations

from typing import Protocol, TypeAlias

import httpx

from sync.amo.query import host_port
from sync.amo.responses import network_reason
from sync.amo.tls import tls_context

# What `AmoClient.connect` accepts as its transport (tests pass the emulator's in-process one).
Transport: TypeAlias = httpx.BaseTransport


class TrafficObserver(Protocol):
    def answered(self, method: str, status: int) -> None: ...

    def unreachable(self, method: str, reason: str) -> None: ...


class ObservedTransport(httpx.BaseTransport):
    """Wraps the real transport of the amoCRM client and reports each request's fate."""

    def __init__(self, inner: httpx.BaseTransport, observer: TrafficObserver) -> None:
        self._inner = inner
        self._observer = observer

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self._inner.handle_request(request)
        except httpx.TransportError as exc:
            where = host_port(str(request.url))
            self._observer.unreachable(request.method, f"{network_reason(exc)} ({where})")
            raise
        self._observer.answered(request.method, response.status_code)
        return response

    def close(self) -> None:
        self._inner.close()


def observed_transport(observer: TrafficObserver) -> Transport:
    """A pooled HTTP transport (the client's own limits) that reports to `observer`."""
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
    return ObservedTransport(httpx.HTTPTransport(verify=tls_context(), limits=limits), observer)
