"""amoCRM's rate limits as sliding windows, with the IP block.

Two windows, both counted at arrival (rejected requests too), before any injected latency,
against real monotonic time rather than the emulator clock (the limit is about what clients
really send per second). The arrival is when the request's bytes came in (`sync.emulator.
arrival`), and threads may count arrivals out of that order (one parsed its request later than
another): each is put in its place, and any 1 s holding it that it takes over the limit makes
it the refused one, so an emulator thread held up never hides a burst nor invents one.
- `limit` per client IP (amoCRM's 7 requests/s per integration);
- `account_limit` across every client (the account-wide budget every integration on the account
  shares, 50 requests/s on amoCRM): set it below a client's own `max_rps` to reproduce 429s that
  come while that client stays under its own limit.

After `block_after` violations (within the last `block_window_s` seconds; None = ever) the IP is
blocked (403) until `unblock`.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left, bisect_right
from collections import deque
from typing import Literal

Verdict = Literal["ok", "limited", "blocked"]
ACCOUNT = "*"  # the window every client shares
LATE_S = 10.0  # arrivals kept this long beyond the window, for one counted late


class RateLimiter:
    def __init__(
        self,
        limit: float | None,
        window_s: float,
        block_after: int | None,
        *,
        account_limit: float | None = None,
        block_window_s: float | None = None,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.block_after = block_after
        self.account_limit = account_limit
        self.block_window_s = block_window_s
        self._arrivals: dict[str, list[float]] = {}  # arrival times, in order
        self._violations: dict[str, deque[float]] = {}
        self._blocked: set[str] = set()
        self._lock = threading.Lock()

    def arrive(self, client: str, at: float | None = None) -> Verdict:
        """Count one request from `client` and say whether it may be served."""
        now = time.monotonic() if at is None else at
        with self._lock:
            if client in self._blocked:
                return "blocked"
            own = self._count(client, now)
            everyone = self._count(ACCOUNT, now)
            if _within(own, self.limit) and _within(everyone, self.account_limit):
                return "ok"
            return self._violation(client, now)

    def _count(self, key: str, now: float) -> int:
        """Record an arrival at `now`: the most arrivals within any `window_s` that holds it."""
        times = self._arrivals.setdefault(key, [])
        newest = max(now, times[-1]) if times else now
        del times[: bisect_right(times, newest - self.window_s - LATE_S)]
        place = bisect_right(times, now)
        times.insert(place, now)
        first = bisect_right(times, now - self.window_s)  # the oldest a window with `now` holds
        if place == len(times) - 1:  # counted in order (the usual case): the window ending now
            return place + 1 - first
        return max(
            bisect_left(times, times[j] + self.window_s) - j for j in range(first, place + 1)
        )

    def _violation(self, client: str, now: float) -> Verdict:
        seen = self._violations.setdefault(client, deque())
        seen.append(now)
        if self.block_window_s is not None:
            while seen and seen[0] <= now - self.block_window_s:
                seen.popleft()
        if self.block_after is not None and len(seen) >= self.block_after:
            self._blocked.add(client)
        return "limited"

    def unblock(self) -> None:
        with self._lock:
            self._blocked.clear()
            self._violations.clear()
            self._arrivals.clear()

    def state(self) -> dict[str, object]:
        with self._lock:
            violations = {client: len(times) for client, times in self._violations.items()}
            return {"blocked": sorted(self._blocked), "violations": violations}


def _within(count: int, limit: float | None) -> bool:
    return limit is None or count <= limit
