"""The sliding-window limiter with explicit arrival times (no sleeping)."""

from __future__ import annotations

from sync.emulator.ratelimit import RateLimiter


def test_sliding_window_counts_every_arrival() -> None:
    limiter = RateLimiter(limit=7, window_s=1.0, block_after=None)
    verdicts = [limiter.arrive("a", at=10.0 + i * 0.1) for i in range(8)]
    assert verdicts == ["ok"] * 7 + ["limited"]
    # at 11.0 only the arrival at 10.0 has left the window; refused arrivals count too
    assert limiter.arrive("a", at=11.0) == "limited"
    assert limiter.arrive("a", at=11.25) == "ok"


def test_clients_are_counted_separately() -> None:
    limiter = RateLimiter(limit=1, window_s=1.0, block_after=None)
    assert limiter.arrive("a", at=0.0) == "ok"
    assert limiter.arrive("b", at=0.0) == "ok"
    assert limiter.arrive("a", at=0.5) == "limited"


def test_block_after_violations_until_unblocked() -> None:
    limiter = RateLimiter(limit=1, window_s=1.0, block_after=2)
    assert [limiter.arrive("a", at=0.0) for _ in range(4)] == [
        "ok",
        "limited",
        "limited",
        "blocked",
    ]
    assert limiter.arrive("a", at=100.0) == "blocked"
    assert limiter.state()["blocked"] == ["a"]
    limiter.unblock()
    assert limiter.arrive("a", at=100.0) == "ok"


def test_no_limit() -> None:
    limiter = RateLimiter(limit=None, window_s=1.0, block_after=1)
    assert {limiter.arrive("a", at=0.0) for _ in range(50)} == {"ok"}


def test_the_account_limit_counts_every_client_together() -> None:
    limiter = RateLimiter(limit=7, window_s=1.0, block_after=None, account_limit=3)
    verdicts = [limiter.arrive(client, at=5.0 + i * 0.1) for i, client in enumerate("abab")]
    assert verdicts == ["ok", "ok", "ok", "limited"]  # each client is far below its own 7
    assert limiter.arrive("c", at=6.15) == "ok"  # two left the window (the refused one counts)


def test_block_window_counts_only_recent_429s() -> None:
    limiter = RateLimiter(limit=1, window_s=1.0, block_after=3, block_window_s=60.0)
    for start in (0.0, 100.0, 200.0):  # two 429s a time, far apart: never three in a minute
        assert [limiter.arrive("a", at=start + i * 0.01) for i in range(3)] == [
            "ok",
            "limited",
            "limited",
        ]
    assert limiter.arrive("a", at=200.5) == "limited"  # the third within a minute blocks
    assert limiter.arrive("a", at=200.6) == "blocked"
