"""amoCRM's 7 requests/second limit as a sliding window per client IP, with the IP block.

Every request is counted at arrival (rejected ones too), before any injected latency, against
real monotonic time rather than the emulator clock: the limit is about what the client really
sends per second. After `block_after` violations the IP is blocked (403) until `unblock`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Literal

Verdict = Literal["ok", "limited", "blocked"]


class RateLimiter:
    def __init__(self, limit: float | None, window_s: float, block_after: int | None) -> None:
        self.limit = limit
        self.window_s = window_s
        self.block_after = block_after
        self._arrivals: dict[str, deque[float]] = {}
        self._violations: dict[str, int] = {}
        self._blocked: set[str] = set()
        self._lock = threading.Lock()

    def arrive(self, client: str, at: float | None = None) -> Verdict:
        """Count one request from `client` and say whether it may be served."""
        now = time.monotonic() if at is None else at
        with self._lock:
            if client in self._blocked:
                return "blocked"
            window = self._arrivals.setdefault(client, deque())
            while window and window[0] <= now - self.window_s:
                window.popleft()
            window.append(now)
            if self.limit is None or len(window) <= self.limit:
                return "ok"
            return self._violation(client)

    def _violation(self, client: str) -> Verdict:
        count = self._violations.get(client, 0) + 1
        self._violations[client] = count
        if self.block_after is not None and count >= self.block_after:
            self._blocked.add(client)
        return "limited"

    def unblock(self) -> None:
        with self._lock:
            self._blocked.clear()
            self._violations.clear()
            self._arrivals.clear()

    def state(self) -> dict[str, object]:
        with self._lock:
            return {"blocked": sorted(self._blocked), "violations": dict(self._violations)}
