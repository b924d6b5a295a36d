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


def test_an_arrival_counted_late_takes_its_place_in_the_window() -> None:
    """Threads count arrivals out of order when one parsed its request late: 8 that came 0.1 s
    apart are 8 in a second whatever order they are counted in, and the one that makes them 8
    is refused."""
    limiter = RateLimiter(limit=7, window_s=1.0, block_after=None)
    times = [10.0 + i * 0.1 for i in range(8)]
    order = [times[0], *times[2:], times[1]]  # the second arrival's thread got to it last
    assert [limiter.arrive("a", at=t) for t in order] == ["ok"] * 7 + ["limited"]


def test_an_arrival_counted_late_outside_a_full_window_is_served() -> None:
    limiter = RateLimiter(limit=7, window_s=1.0, block_after=None)
    assert [limiter.arrive("a", at=11.0 + i * 0.1) for i in range(7)] == ["ok"] * 7
    # it arrived before them, but no 1 s holds it and 7 of them: 10.3 + 1 s ends before 11.6
    assert limiter.arrive("a", at=10.3) == "ok"
    assert limiter.arrive("a", at=10.95) == "limited"  # with 11.0-11.6: 8 within 0.65 s
