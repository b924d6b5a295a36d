"""Coalescing and rate-bounding of hook-triggered pulls, on an injected clock: the pure parts
(`Pending`, `Pace`, the debounce's `Burst`) and how they add up over a burst of hooks; `PullSoon`
and `Inbox` with their threads where the behaviour needs them."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

from sync.daemon.debounce import Burst
from sync.daemon.webhooks.hints import Hint
from sync.daemon.webhooks.pull import (
    HOOK_MAX_S,
    HOOK_QUIET_S,
    MAX_TRIES,
    Inbox,
    Pace,
    Pending,
    PullSoon,
)
from sync.daemon.webhooks.watch import DEGRADED, HEALTHY, QUIET, HookWatch


def _hint(*versions: tuple[int, int | None], events: bool = False) -> Hint:
    hint = Hint(events=events, posts=1)
    for contact, version in versions:
        hint.note_version(contact, version)
    return hint


def test_a_hint_already_stored_makes_no_pull() -> None:
    pending = Pending()
    pending.add(_hint((1, 100), (2, 100)))
    pending.settle({1: 100, 2: 101}, succeeded=True)  # our own push's echo, or a newer version
    assert not pending.wanted()


def test_a_hint_newer_than_what_is_stored_or_unknown_stays_until_a_pull_stores_it() -> None:
    pending = Pending()
    pending.add(_hint((1, 100), (2, None), (3, 100)))
    pending.settle({1: 99, 2: 500}, succeeded=True)
    assert pending.wanted()
    assert set(pending.versions) == {1, 2, 3}
    pending.start()
    pending.settle({1: 100, 3: 100}, succeeded=True)
    assert set(pending.versions) == {2}  # no version announced: one more try


def test_a_hint_no_pull_can_confirm_is_given_up_after_its_tries() -> None:
    pending = Pending()
    pending.add(_hint((1, 2_000_000_000)))  # a version amoCRM never lists (or a forged hook)
    given_up: list[int] = []
    pulls = 0
    while pending.wanted():
        pending.start()
        pulls += 1
        given_up += pending.settle({1: 100}, succeeded=True)
        assert pulls <= MAX_TRIES
    assert given_up == [1]
    assert pulls == MAX_TRIES


def test_a_hint_that_arrives_during_a_pull_is_dropped_if_that_pull_stored_it() -> None:
    pending = Pending()
    pending.add(_hint((1, 100)))
    pending.start()  # pull 1 starts
    pending.add(_hint((2, 101)))  # arrives while pull 1 runs
    pending.settle({1: 100, 2: 101}, succeeded=True)  # pull 1 stored both
    assert not pending.wanted()


def test_deletions_ask_for_the_events_once_a_pull_succeeded() -> None:
    pending = Pending()
    pending.add(_hint(events=True))
    assert pending.start()  # this pull reads the events
    pending.settle({}, succeeded=False)
    assert pending.wanted()  # it failed: the next one reads them again
    assert pending.start()
    pending.settle({}, succeeded=True)
    assert not pending.wanted()


def test_too_many_contacts_make_one_blind_pull() -> None:
    pending = Pending(max_contacts=100)
    pending.add(_hint(*((n, 1) for n in range(1, 102))))
    assert pending.blind
    assert pending.versions == {}
    pending.start()
    pending.settle({}, succeeded=True)
    assert not pending.wanted()


def test_pace_keeps_hook_pulls_apart_and_backs_off_after_failures() -> None:
    pace = Pace(gap_s=2.0, max_gap_s=60.0)
    assert pace.next_start(100.0) == 100.0
    pace.started(100.0)
    assert pace.next_start(100.5) == 102.0
    assert pace.next_start(105.0) == 105.0
    for gap in (4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0):  # doubling, capped at a poll interval
        pace.ended(False)
        assert pace.next_start(100.0) == 100.0 + gap
    pace.ended(True)
    assert pace.next_start(100.0) == 102.0


def _simulate(hook_times: list[float], pull_s: float, gap_s: float) -> list[float]:
    """When pulls start for hooks arriving at `hook_times`, each pull taking `pull_s`: the
    debounce, the pace, one pull at a time, and one more pull after a pull that hooks arrived
    during (what `Inbox` and `PullSoon` do with threads)."""
    burst = Burst(HOOK_QUIET_S, HOOK_MAX_S)
    pace = Pace(gap_s, max_gap_s=60.0)
    starts: list[float] = []
    wanted_at: float | None = None
    busy_until = 0.0
    hooks = iter(sorted(hook_times))
    upcoming = next(hooks, None)
    now = 0.0
    while upcoming is not None or burst.due is not None or wanted_at is not None:
        candidates = [t for t in (upcoming, burst.due, wanted_at) if t is not None]
        now = max(now, min(candidates))
        if upcoming is not None and upcoming <= now:
            burst.note(now)
            upcoming = next(hooks, None)
            continue
        if burst.take(now):  # the debounce fires: the leader wants a pull
            wanted_at = pace.next_start(max(now, busy_until))
            continue
        if wanted_at is not None and now >= wanted_at:
            if now < busy_until:  # a pull runs: one more after it
                wanted_at = pace.next_start(busy_until)
                continue
            pace.started(now)
            starts.append(now)
            busy_until = now + pull_s
            wanted_at = None
    return starts


def test_a_burst_of_2000_hooks_over_ten_seconds_makes_a_handful_of_pulls() -> None:
    hooks = [i * 0.005 for i in range(2000)]  # 2,000 posts in 10 s
    starts = _simulate(hooks, pull_s=1.5, gap_s=2.0)
    assert 3 <= len(starts) <= 7
    assert all(b - a >= 2.0 for a, b in itertools.pairwise(starts))
    assert starts[0] <= HOOK_MAX_S  # the first pull does not wait for the burst to end
    assert starts[-1] >= hooks[-1]  # and one comes after the last hook


def test_one_hook_pulls_after_the_quiet_period() -> None:
    assert _simulate([5.0], pull_s=1.0, gap_s=2.0) == [5.0 + HOOK_QUIET_S]


def test_a_hook_during_a_pull_makes_exactly_one_more_pull_after_it() -> None:
    starts = _simulate([0.0, 1.0, 1.1, 1.2], pull_s=3.0, gap_s=2.0)
    assert starts == [HOOK_QUIET_S, HOOK_QUIET_S + 3.0]


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class _Report:
    new_versions: int  # what the watch reads: versions new to the store
    upserted: int = 0


def _pull_soon(clock: _Clock) -> tuple[PullSoon, HookWatch]:
    watch = HookWatch(poll_interval_s=60, hooks_poll_interval_s=600, stale_after_s=3600,
                      announce_grace_s=30, clock=clock)  # fmt: skip
    pull_soon = PullSoon(watch, Pace(2.0, 60.0), lambda ids: {}, running=set, clock=clock)
    return pull_soon, watch


def _run(pull_soon: PullSoon, pull: Callable[[], object]) -> None:
    """One run of the scheduled pull job: the gate, then the pull as the runner would call it."""
    observed = pull_soon.observe(pull)

    def job() -> None:
        with contextlib.suppress(RuntimeError):
            observed()

    pull_soon.gate(job)()


def _fails() -> object:
    raise RuntimeError("amoCRM answered 502")


def test_a_poll_storing_unannounced_changes_is_evidence_but_not_the_first_one() -> None:
    clock = _Clock()
    pull_soon, watch = _pull_soon(clock)
    _run(pull_soon, lambda: _Report(new_versions=40))  # the leader's first pull catches up
    clock.t += 60
    assert watch.verdict().state == QUIET
    _run(pull_soon, lambda: _Report(new_versions=2))
    clock.t += 31
    assert watch.verdict().state == DEGRADED


def test_changes_a_failed_hook_pull_left_to_the_poll_are_not_evidence() -> None:
    clock = _Clock()
    pull_soon, watch = _pull_soon(clock)
    _run(pull_soon, lambda: _Report(new_versions=40))  # first
    watch.hook()
    pull_soon.offer(_hint((7, 100)))  # not stored: a hook-triggered run is due
    _run(pull_soon, _fails)
    clock.t += 600
    _run(pull_soon, lambda: _Report(new_versions=1))  # the scheduled poll stores contact 7
    clock.t += 31
    assert watch.verdict().state == HEALTHY
    clock.t += 600
    _run(pull_soon, lambda: _Report(new_versions=1))  # the next poll has no such excuse
    clock.t += 31
    assert watch.verdict().state == DEGRADED


def test_a_poll_that_only_refreshes_versions_already_stored_is_no_evidence() -> None:
    """After our own PATCH the next poll reads the contact at the version the push stored, with
    amoCRM's `updated_by` (the API user): a row written, but no change a hook missed."""
    clock = _Clock()
    pull_soon, watch = _pull_soon(clock)
    _run(pull_soon, lambda: _Report(new_versions=40))  # first
    clock.t += 60
    _run(pull_soon, lambda: _Report(new_versions=0, upserted=30))
    clock.t += 31
    assert watch.verdict().state == QUIET


def _wait(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_standby_keeps_a_hint_it_could_not_forward_and_sends_it_later() -> None:
    watch = HookWatch(poll_interval_s=60, hooks_poll_interval_s=600, stale_after_s=3600,
                      announce_grace_s=30)  # fmt: skip
    sent: list[Hint] = []
    recorded: list[float] = []

    def forward(hint: Hint) -> None:
        if not sent and not getattr(forward, "failed", False):
            forward.failed = True  # type: ignore[attr-defined]
            raise ConnectionError("PostgreSQL at db:5432 failed: connection refused")
        sent.append(hint)

    inbox = Inbox(watch, forward=forward, record_last_hook=recorded.append)
    inbox.start()
    try:
        inbox.receive(_hint((5, 100)))
        inbox.receive(_hint((6, 101), events=True))
        _wait(lambda: bool(sent))
    finally:
        inbox.close()
    merged = Hint()
    for hint in sent:
        merged.merge(hint)
    assert merged.versions == {5: 100, 6: 101}
    assert merged.events
    assert watch.received == 2
    assert recorded  # webhooks.last_hook was written


def test_a_nudge_pulls_but_is_no_hook() -> None:
    watch = HookWatch(poll_interval_s=60, hooks_poll_interval_s=600, stale_after_s=3600,
                      announce_grace_s=30)  # fmt: skip
    delivered: list[Hint] = []
    recorded: list[float] = []
    inbox = Inbox(watch, forward=delivered.append, record_last_hook=recorded.append)
    inbox.lead(delivered.append)
    inbox.start()
    try:
        inbox.nudge(Hint(blind=True))
        _wait(lambda: bool(delivered))
    finally:
        inbox.close()
    assert delivered[0].blind
    assert watch.received == 0
    assert watch.verdict().state == QUIET
    assert recorded == []


class _Scheduler:
    """What `PullSoon` uses of the scheduler: its listener, the `pull` job and moving it."""

    def __init__(self) -> None:
        self.listener: Callable[[object], None] | None = None
        self.moved: list[object] = []
        self.next_run_time = None

    def add_listener(self, listener: Callable[[object], None], mask: int) -> None:
        self.listener = listener

    def get_job(self, job_id: str) -> _Scheduler:
        return self

    def modify_job(self, job_id: str, next_run_time: object) -> None:
        self.moved.append(next_run_time)


@dataclass
class _Ended:
    job_id: str


def test_the_hook_of_our_own_push_is_decided_when_that_push_ends() -> None:
    # amoCRM posts the hook of the push's PATCH before the push stores amoCRM's answer; a pull
    # moved then would run right after the push (one worker) and delay the next local edit
    stored: dict[int, int] = {}
    running = {"push"}
    watch = HookWatch(poll_interval_s=60, hooks_poll_interval_s=0, stale_after_s=3600,
                      announce_grace_s=30)  # fmt: skip
    pull_soon = PullSoon(watch, Pace(2.0, 60.0), lambda ids: {i: stored[i] for i in ids if i in
                         stored}, running=lambda: set(running))  # fmt: skip
    scheduler = _Scheduler()
    pull_soon.attach(scheduler)  # type: ignore[arg-type]
    assert scheduler.listener is not None
    pull_soon.offer(_hint((7, 500)))  # the echo of the PATCH the running push sent
    pull_soon.offer(_hint((8, 600)))  # a remote edit, announced at the same moment
    assert scheduler.moved == []  # nothing decided while the push runs
    stored[7] = 500  # the push stores amoCRM's answer for contact 7, and ends
    running.clear()
    scheduler.listener(_Ended("push"))
    assert len(scheduler.moved) == 1  # contact 8 still needs a pull
    stored[8] = 600  # that pull stored it
    scheduler.listener(_Ended("pull"))
    running.add("push")
    pull_soon.offer(_hint((7, 501)))  # the next push's echo alone
    stored[7] = 501
    running.clear()
    scheduler.listener(_Ended("push"))
    assert len(scheduler.moved) == 1  # no pull for an echo
