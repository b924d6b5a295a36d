"""One rate limiter per amoCRM origin and budget store for the whole process (`shared_limiter`):
the budget is amoCRM's per integration, not per client object."""

from __future__ import annotations

import threading

from sync.amo.budget import BudgetStore
from sync.amo.ratelimit import DEFAULT_MARGIN_S, RateLimiter

_SHARED: dict[tuple[str, float, float, str], RateLimiter] = {}
_SHARED_LOCK = threading.Lock()


def shared_limiter(
    origin: str,
    max_rps: float,
    margin_s: float = DEFAULT_MARGIN_S,
    store: BudgetStore | None = None,
) -> RateLimiter:
    """The process-wide limiter for one amoCRM origin (`https://host:port`) and budget store.

    Every client built for the same origin, settings and store gets the same limiter, so the
    budget is counted across all threads and jobs of the process, whichever client object they
    use; the store (when given) extends it to every process of the account. Its safety margin
    adapts (`sync.amo.margin`), from `margin_s` up.
    """
    key = (origin.lower().rstrip("/"), float(max_rps), float(margin_s), store.name if store else "")
    with _SHARED_LOCK:
        limiter = _SHARED.get(key)
        if limiter is None:
            limiter = _SHARED[key] = RateLimiter(
                max_rps, margin_s=margin_s, store=store, adaptive_margin=True
            )
        elif store is not None and store is not limiter.store:
            store.close()  # the limiter keeps the store it was built with
        return limiter
