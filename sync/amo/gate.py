"""Which access tokens are known dead, ordered against every request that carries one.

A 401 proves the token it answered is dead. From the moment its status line is read (the HTTP
trace `receive_response_headers.complete`), no request may leave with that token: `mark_dead`
and the check at `send_request_headers.started` take the same lock, and the lock is held until
that request's headers are written, so a request whose headers started before the 401 was known
finishes first and any later one sees the token dead and is stopped before a byte leaves
(`DeadTokenError`; the session gets a fresh token and asks the rate limiter again).

A token stays known dead for `REMEMBER_S`: an OAuth token is never handed out again after its
refresh, and a long-lived token that amoCRM refused is tried again at most that often. A daemon
tries it sooner (`probe`, before a scheduled job: `sync.daemon.token_probe`): once
`PROBE_AFTER_S` after the refusal, then after twice as long each time it is refused again, up to
`REMEMBER_S`; a refusal can be amoCRM's passing mistake, and a daemon must recover by itself
once the token is accepted. Every request queued behind the probe's 401 is still stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

REMEMBER_S = 300.0
MAX_REMEMBERED = 32
PROBE_AFTER_S = 10.0  # a refused long-lived token is first tried again this long after


class DeadTokenError(Exception):
    """A request was stopped before sending: its token had been refused meanwhile."""


class TokenGate:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._dead: dict[str, float] = {}  # token -> when it was refused
        self._probes: dict[str, int] = {}  # token -> probes since amoCRM last accepted it
        # token -> (method, url) of the request whose 401 refused it: what a request stopped
        # unsent names (it never reached amoCRM), not itself
        self._refused_by: dict[str, tuple[str, str]] = {}

    def __repr__(self) -> str:
        return f"TokenGate(dead={len(self._dead)})"

    def mark_dead(self, token: str, request: tuple[str, str] | None = None) -> None:
        """`token` got a 401 (to `request`, method and URL): no request sends it from now on
        (waits for headers being sent)."""
        with self._lock:
            self._dead[token] = self._monotonic()
            if request is not None and token not in self._refused_by:
                self._refused_by[token] = request
            if len(self._dead) > MAX_REMEMBERED:
                oldest = min(self._dead, key=self._dead.__getitem__)
                del self._dead[oldest]
            for gone in [t for t in self._refused_by if t not in self._dead]:
                del self._refused_by[gone]

    def refused_by(self, token: str | None) -> tuple[str, str] | None:
        """The request (method, URL as sent) whose 401 refused `token`, if known."""
        if token is None:
            return None
        with self._lock:
            return self._refused_by.get(token)

    def answered(
        self, token: str | None, status: int, request: tuple[str, str] | None = None
    ) -> None:
        """amoCRM answered a request (`request`: method, URL) carrying `token` with `status`:
        a 401 kills the token; any other answer accepted it (its probes' back-off starts
        over)."""
        if token is None:
            return
        if status == 401:
            self.mark_dead(token, request)
        elif token in self._probes:  # rare: read without the lock first (every answer comes here)
            with self._lock:
                self._probes.pop(token, None)

    def probe(self, token: str) -> float | None:
        """Let a refused `token` be sent again if its back-off has passed (`PROBE_AFTER_S`,
        doubled by every probe amoCRM refused, at most `REMEMBER_S`); the seconds since its
        refusal when it is let go, else None (not refused, or too soon)."""
        with self._lock:
            refused = self._dead.get(token)
            if refused is None:
                return None
            probes = self._probes.get(token, 0)
            ago = self._monotonic() - refused
            if ago < min(REMEMBER_S, PROBE_AFTER_S * 2**probes):
                return None
            del self._dead[token]
            self._probes[token] = probes + 1
            if len(self._probes) > MAX_REMEMBERED:
                self._probes.pop(next(iter(self._probes)))
            return ago

    def is_dead(self, token: str | None) -> bool:
        if token is None:
            return False
        with self._lock:
            return self._dead_locked(token)

    def _dead_locked(self, token: str) -> bool:
        refused = self._dead.get(token)
        if refused is None:
            return False
        if self._monotonic() - refused < REMEMBER_S:
            return True
        del self._dead[token]
        return False

    def begin_send(self, token: str | None) -> None:
        """Headers carrying `token` are about to be written: hold the gate until `end_send`,
        or raise `DeadTokenError` (gate not held) when the token is known dead."""
        self._lock.acquire()
        if token is not None and self._dead_locked(token):
            self._lock.release()
            raise DeadTokenError("the access token was refused before this request left")

    def end_send(self) -> None:
        self._lock.release()


class RequestWatch:
    """One request's HTTP trace (httpcore's `trace` extension): `on_left` called as its headers
    start (it may wait there for a later start, on the connection already open), the gate held
    around writing them, `on_written` once they are out, and a 401 marking its token dead the
    instant the status line is read."""

    def __init__(
        self,
        gate: TokenGate,
        token: str | None,
        on_left: Callable[[], None],
        on_written: Callable[[], None] | None = None,
        request: tuple[str, str] | None = None,
    ) -> None:
        self._gate = gate
        self._token = token
        self._request = request
        self._on_left = on_left
        self._on_written = on_written
        self._holding = False

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        if event.endswith("send_request_headers.started"):  # it leaves now
            self._on_left()  # before the gate: a wait for another start must not hold it
            self._gate.begin_send(self._token)  # raises DeadTokenError: nothing is sent
            self._holding = True
        elif event.endswith(("send_request_headers.complete", "send_request_headers.failed")):
            self.release()
            if self._on_written is not None and event.endswith("complete"):
                self._on_written()
        elif event.endswith("receive_response_headers.complete") and self._token is not None:
            answer = info.get("return_value")
            if isinstance(answer, tuple) and len(answer) > 1 and isinstance(answer[1], int):
                self._gate.answered(self._token, answer[1], self._request)

    def release(self) -> None:
        """Let go of the gate if this request still holds it (the send failed half-way)."""
        if self._holding:
            self._holding = False
            self._gate.end_send()
