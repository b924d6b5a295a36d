"""Which access tokens are known dead, ordered against every request that carries one.

A 401 proves the token it answered is dead. From the moment its status line is read (the HTTP
trace `receive_response_headers.complete`), no request may leave with that token: `mark_dead`
and the check at `send_request_headers.started` take the same lock, and the lock is held until
that request's headers are written, so a request whose headers started before the 401 was known
finishes first and any later one sees the token dead and is stopped before a byte leaves
(`DeadTokenError`; the session gets a fresh token and asks the rate limiter again).

A token stays known dead for `REMEMBER_S`: an OAuth token is never handed out again after its
refresh, and a long-lived token that amoCRM refused is tried again at most that often (a daemon
recovers by itself if the refusal was amoCRM's mistake).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

REMEMBER_S = 300.0
MAX_REMEMBERED = 32


class DeadTokenError(Exception):
    """A request was stopped before sending: its token had been refused meanwhile."""


class TokenGate:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._dead: dict[str, float] = {}  # token -> when it was refused

    def __repr__(self) -> str:
        return f"TokenGate(dead={len(self._dead)})"

    def mark_dead(self, token: str) -> None:
        """`token` got a 401: no request sends it from now on (waits for headers being sent)."""
        with self._lock:
            self._dead[token] = self._monotonic()
            if len(self._dead) > MAX_REMEMBERED:
                oldest = min(self._dead, key=self._dead.__getitem__)
                del self._dead[oldest]

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
