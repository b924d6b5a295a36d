"""The request log tests assert on ("never more than 7 requests in any second", "the PATCH
carried these fields"). Admin calls are not logged."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LoggedRequest:
    seq: int
    arrived_at: float  # wall-clock unix seconds at arrival (before latency)
    clock: float  # the emulator clock at arrival
    client: str
    method: str
    path: str
    query: str
    status: int  # 0 when the connection was reset instead of answered
    fault: str | None
    body: Any  # parsed JSON of a write, else None
    token: str | None = None  # `token_fingerprint` of the bearer token it carried


class RequestLog:
    def __init__(self, max_entries: int = 100_000) -> None:
        self._entries: list[LoggedRequest] = []
        self._max = max_entries
        self._seq = 0
        self._lock = threading.Lock()

    def next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def add(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._entries.append(entry)
            if len(self._entries) > self._max:
                del self._entries[: len(self._entries) - self._max]

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(entry) for entry in sorted(self._entries, key=lambda e: e.seq)]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def busiest_window(entries: Iterable[Mapping[str, Any]], window_s: float = 1.0) -> int:
    """The most requests that arrived within any `window_s` (by `arrived_at`): the number to
    hold against amoCRM's "never more than 7 in a second"."""
    times = sorted(float(entry["arrived_at"]) for entry in entries)
    best, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def token_fingerprint(authorization: str | None) -> str | None:
    """Which bearer token a request carried, without the token: 12 hex digits of its SHA-256
    (tests tell requests with an expired token from those with its successor)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return hashlib.sha256(token.encode()).hexdigest()[:12]
