"""The rate limiter: evenly spaced starts, sends counted when they leave, pause and halt,
AIMD on 429, and the budget shared with other processes through a store."""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from structlog.testing import capture_logs

from sync.amo.limiters import shared_limiter
from sync.amo.ratelimit import RateLimiter
from sync.amo.turns import Turns, Withdrawn
from sync.errors import AmoBlockedError, StoreError


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


# --- AIMD and the budget shared through a store ---------------------------------------------


class MemoryStore:
    """A `BudgetStore` in memory whose clock runs far from the limiters' (as PostgreSQL's does)."""

    name = "memory"

    def __init__(self, skew_s: float = 5000.0) -> None:
        self.value: dict[str, Any] | None = None
        self.skew_s = skew_s
        self.updates = 0
        self._lock = threading.Lock()

    def update(self, change: Any) -> tuple[Any, float, float]:
        with self._lock:
            local = time.monotonic()
            result, self.value = change(self.value, local + self.skew_s)
            self.updates += 1
            return result, local + self.skew_s, local

    def close(self) -> None:
        pass


class DownStore(MemoryStore):
    def update(self, change: Any) -> tuple[Any, float, float]:
        raise StoreError("PostgreSQL failed while sharing the rate budget: connection refused")


def test_a_429_cuts_the_allowed_rate_and_widens_the_spacing() -> None:
    limiter = RateLimiter(70, margin_s=0.08)  # 70 rps: the deep first cut leaves 5, not 0.5
    throttle = limiter.throttled(limiter.acquire(), pause_s=0.0)
    assert throttle.cut
    assert limiter.allowed_rps == pytest.approx(5.0, abs=0.05)
    times = [limiter.acquire().at for _ in range(3)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # 14 times the spacing at max_rps, less what the doubling climb gained meanwhile
    assert min(gaps) >= limiter.step * 70 / 5.3


def test_a_429_holds_back_starts_already_granted() -> None:
    limiter = RateLimiter(1000, margin_s=0.0)
    limiter.throttled(limiter.acquire(), pause_s=0.3)
    started = time.monotonic()
    limiter.acquire()
    assert time.monotonic() - started >= 0.28


def test_two_limiters_sharing_a_store_stay_within_max_rps_together() -> None:
    store = MemoryStore()
    limiters = [RateLimiter(7, store=store), RateLimiter(7, store=store)]
    with ThreadPoolExecutor(8) as pool:
        times = list(pool.map(lambda i: limiters[i % 2].acquire().at, range(24)))
    assert max_in_window(times, 1.0) <= 7
    assert store.updates < 24  # starts are claimed a few at a time


def test_a_429_in_one_process_slows_the_other() -> None:
    store = MemoryStore()
    one, other = RateLimiter(7, store=store), RateLimiter(7, store=store)
    other.acquire()
    one.throttled(one.acquire(), pause_s=0.0)
    other.acquire()
    assert other.allowed_rps == pytest.approx(0.5, abs=0.01)  # a burst's first cut: deep


def test_a_block_stops_the_processes_running_then_but_not_one_started_later() -> None:
    store = MemoryStore()
    blocked, running = RateLimiter(100, store=store), RateLimiter(100, store=store)
    running.acquire()
    blocked.halt(AmoBlockedError("amoCRM blocked this IP (403 page)"))
    with pytest.raises(AmoBlockedError, match="another amosync process"):
        take(10, running)  # its starts claimed before the block run out first
    restarted = RateLimiter(100, store=store)  # e.g. after support lifted the block
    restarted.acquire()
    restarted.acquire()


def test_without_its_store_a_limiter_takes_half_the_rate() -> None:
    limiter = RateLimiter(7, store=DownStore())
    with capture_logs() as logs:
        first, second = limiter.acquire(), limiter.acquire()
    assert second.at - first.at >= 2 * limiter.gap - 0.002
    assert limiter.allowed_rps == 3.5
    assert [e["event"] for e in logs] == ["amo_rate_budget_unshared"]


def take(count: int, limiter: RateLimiter) -> None:
    for _ in range(count):
        limiter.acquire()


def test_a_withdrawn_request_takes_no_start_and_the_next_one_does() -> None:
    limiter = RateLimiter(2, margin_s=0.0)  # a start every 0.5 s
    limiter.acquire()  # the first start: the next one is half a second away
    withdrawn = threading.Event()
    outcome: list[object] = []

    def speculative() -> None:
        with limiter.turns.unless(withdrawn):
            try:
                outcome.append(limiter.acquire())
            except Withdrawn as exc:
                outcome.append(exc)

    waiting = threading.Thread(target=speculative)
    waiting.start()
    while limiter.waiting == 0:  # it waits for its start
        time.sleep(0.005)
    withdrawn.set()
    waiting.join()
    assert len(outcome) == 1
    assert isinstance(outcome[0], Withdrawn)
    limiter.acquire()  # the start it left is taken, not lost
    assert limiter.dropped == 0
    with limiter.turns.unless(threading.Event()):  # not set: an ordinary request
        limiter.acquire()


def test_a_request_behind_lets_one_that_came_later_start_first() -> None:
    limiter = RateLimiter(2, margin_s=0.0)  # a start every 0.5 s
    limiter.acquire()
    order: list[str] = []

    def chats() -> None:
        with limiter.turns.behind():
            limiter.acquire()
        order.append("behind")

    def page() -> None:
        limiter.acquire()
        order.append("ahead")

    threads = [threading.Thread(target=chats), threading.Thread(target=page)]
    for count, thread in enumerate(threads, start=1):
        thread.start()
        while limiter.waiting < count:  # the one behind waits first
            time.sleep(0.005)
    for thread in threads:
        thread.join()
    assert order == ["ahead", "behind"]
    assert limiter.dropped == 0


def test_a_request_is_behind_only_while_its_condition_holds() -> None:
    turns = Turns()
    holds = [True]
    with turns.behind(lambda: holds[0]):
        chats = turns.enter()
    page = turns.enter()
    assert turns.ahead() == 1
    assert turns.yields(chats, 0.0, 0.15) > 0  # a page waits: the start is left to it
    assert turns.yields(page, 0.0, 0.15) == 0
    assert turns.yields(chats, 0.15, 0.15) == 0  # the page had its chance: take it
    holds[0] = False  # e.g. too many pages wait for their chat links
    assert turns.yields(chats, 0.0, 0.15) == 0
    assert turns.ahead() == 2
    holds[0] = True
    turns.leave(page)
    assert turns.yields(chats, 0.0, 0.15) == 0  # nobody ahead
