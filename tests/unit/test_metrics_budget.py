"""/metrics tells the rate budget: the rate the client allows itself now, its pause and the
rate window's safety margin."""

from __future__ import annotations

from sync.amo.ratelimit import RateLimiter
from sync.daemon.metrics import Metrics


def _line(text: str, name: str) -> float:
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name))


def test_allowed_rate_and_pause_are_read_at_each_scrape() -> None:
    metrics, limiter = Metrics(), RateLimiter(7)
    metrics.watch_budget(limiter)
    before = metrics.exposition()[0].decode()
    assert _line(before, "amosync_amocrm_allowed_rps ") == 7
    assert _line(before, "amosync_amocrm_paused_seconds ") == 0
    assert _line(before, "amosync_amocrm_rate_margin_seconds ") == 0.08
    limiter.throttled(limiter.acquire(), pause_s=30.0)
    after = metrics.exposition()[0].decode()
    assert 0.5 <= _line(after, "amosync_amocrm_allowed_rps ") < 0.6  # a burst's first cut
    assert _line(after, "amosync_amocrm_paused_seconds ") > 25
    assert _line(after, "amosync_amocrm_rate_margin_seconds ") == 0.16  # a 429 at full rate
