"""The rate budget: sliding window of send times, shared by threads, pause and halt."""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sync.amo.ratelimit import RateLimiter, shared_limiter
from sync.errors import AmoBlockedError


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best = 0
    start = 0
    for end, moment in enumerate(times):
        while moment - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_window_holds_under_many_threads() -> None:
    limiter = RateLimiter(20, margin_s=0.02)  # 20 starts per 1.02 s
    with ThreadPoolExecutor(12) as pool:
        times = list(pool.map(lambda _: limiter.acquire().at, range(50)))
    assert max_in_window(times, 1.0) <= 20
    elapsed = max(times) - min(times)
    assert 2.0 <= elapsed < 3.5  # 50 starts: 2 windows and a bit; no idle time beyond that


def test_fractional_rate_uses_a_longer_window() -> None:
    limiter = RateLimiter(2.5, margin_s=0.0)
    assert (limiter.limit, limiter.window) == (2, pytest.approx(0.8))


def test_starts_are_paced_not_bursty() -> None:
    limiter = RateLimiter(7, margin_s=0.07)  # 7 per 1.07 s: one start every ~153 ms
    times = [limiter.acquire().at for _ in range(4)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= limiter.gap - 0.002 for gap in gaps)
    assert max(gaps) < limiter.gap + 0.2  # generous: a loaded machine wakes threads late


def test_a_late_send_moves_its_slot_and_delays_the_next() -> None:
    limiter = RateLimiter(2, margin_s=0.0)  # 2 starts per 1 s
    started = time.monotonic()
    first = limiter.acquire()
    time.sleep(0.5)  # e.g. a slow connect between "go" and the bytes leaving
    limiter.sent(first)
    limiter.acquire()
    limiter.acquire()  # counted from when the first really left, not from its "go"
    assert time.monotonic() - started >= 1.45


def test_pause_holds_every_thread_and_never_shortens() -> None:
    limiter = RateLimiter(100)
    limiter.pause(0.3)
    limiter.pause(0.1)  # a shorter pause does not cut the longer one
    assert limiter.paused_for() > 0.2
    started = time.monotonic()
    limiter.acquire()
    assert time.monotonic() - started >= 0.28


def test_halt_wakes_waiters_and_refuses_everything() -> None:
    limiter = RateLimiter(1, margin_s=5.0)
    limiter.acquire()
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            limiter.acquire()
        except AmoBlockedError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.05)
    limiter.halt(AmoBlockedError("blocked"))
    waiter.join(2)
    assert not waiter.is_alive()
    assert len(errors) == 1
    with pytest.raises(AmoBlockedError):
        limiter.acquire()


def test_shared_limiter_is_one_per_origin() -> None:
    a = shared_limiter("http://127.0.0.1:8001", 7)
    assert shared_limiter("HTTP://127.0.0.1:8001/", 7) is a
    assert shared_limiter("http://127.0.0.1:8002", 7) is not a
