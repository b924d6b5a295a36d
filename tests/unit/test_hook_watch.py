"""The rule that says whether webhooks arrive (`HookWatch`), on a clock the test moves."""

from __future__ import annotations

from sync.daemon.webhooks.watch import DEGRADED, HEALTHY, QUIET, HookWatch


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _watch(clock: _Clock) -> HookWatch:
    return HookWatch(poll_interval_s=60, hooks_poll_interval_s=600, stale_after_s=3600,
                     announce_grace_s=30, clock=clock)  # fmt: skip


def test_no_hook_yet_is_quiet_and_polls_at_the_short_interval() -> None:
    clock = _Clock()
    watch = _watch(clock)
    verdict = watch.verdict()
    assert (verdict.state, verdict.interval_s) == (QUIET, 60)
    assert not watch.skip_poll()


def test_a_hook_makes_it_healthy_and_polls_rare_until_hooks_go_stale() -> None:
    clock = _Clock()
    watch = _watch(clock)
    watch.hook()
    watch.pull_started()
    assert watch.verdict() == watch.verdict()  # stable
    assert (watch.verdict().state, watch.verdict().interval_s) == (HEALTHY, 600)
    clock.t += 60
    assert watch.skip_poll()  # a poll tick a minute later is skipped
    clock.t += 520
    assert not watch.skip_poll()  # ~600 s after the last pull: poll (ticks come every 60 s)
    clock.t = 1000 + 3601
    verdict = watch.verdict()
    assert (verdict.state, verdict.interval_s) == (QUIET, 60)
    assert not watch.skip_poll()


def test_an_idle_account_is_never_degraded() -> None:
    clock = _Clock()
    watch = _watch(clock)
    for _ in range(100):  # polls that find nothing, for hours
        watch.poll_stored(watch.pull_started(), 0)
        clock.t += 600
    assert watch.verdict().state == QUIET


def test_a_poll_finding_changes_no_hook_announced_degrades_after_the_grace() -> None:
    clock = _Clock()
    watch = _watch(clock)
    watch.hook()
    clock.t += 600
    started = watch.pull_started()
    clock.t += 2
    watch.poll_stored(started, 3)
    assert watch.verdict().state == HEALTHY  # its hooks may still be on their way
    clock.t += 30
    verdict = watch.verdict()
    assert (verdict.state, verdict.interval_s) == (DEGRADED, 60)
    assert "3 changed contact(s) that no hook announced" in (verdict.reason or "")
    watch.hook()  # hooks arrive again
    assert watch.verdict().state == HEALTHY


def test_changes_found_by_a_poll_right_after_a_hook_are_not_evidence() -> None:
    clock = _Clock()
    watch = _watch(clock)
    clock.t += 100
    watch.hook()
    clock.t += 10
    watch.poll_stored(watch.pull_started(), 5)
    clock.t += 100
    assert watch.verdict().state == HEALTHY


def test_a_hook_within_the_grace_after_the_poll_clears_the_suspicion() -> None:
    clock = _Clock()
    watch = _watch(clock)
    watch.poll_stored(watch.pull_started(), 1)
    clock.t += 20
    watch.hook()
    clock.t += 60
    assert watch.verdict().state == HEALTHY


def test_a_subscription_reported_disabled_or_missing_degrades_at_once() -> None:
    clock = _Clock()
    watch = _watch(clock)
    watch.hook()
    watch.subscription("disabled")
    assert watch.verdict().state == DEGRADED
    assert "disabled" in (watch.verdict().reason or "")
    watch.hook()
    assert watch.verdict().state == DEGRADED  # a hook in flight does not re-enable it
    watch.subscription("missing")
    assert "amosync webhooks register" in (watch.verdict().reason or "")
    watch.subscription("enabled")
    assert watch.verdict().state == HEALTHY


def test_each_transition_is_reported_once() -> None:
    clock = _Clock()
    watch = _watch(clock)
    assert watch.changed() is not None  # the first verdict (quiet)
    assert watch.changed() is None
    watch.hook()
    changed = watch.changed()
    assert changed is not None
    assert changed.state == HEALTHY
    assert watch.changed() is None
    watch.subscription("disabled")
    assert watch.changed() is not None
    assert watch.changed() is None
    watch.forget_reported()
    assert watch.changed() is not None  # a new leadership reports the state it finds


def test_by_default_healthy_hooks_keep_the_short_poll_so_a_silent_loss_costs_one_interval() -> None:
    # webhooks.poll_interval_s = 0 (the default): healthy hooks only add speed
    clock = _Clock()
    watch = HookWatch(poll_interval_s=60, hooks_poll_interval_s=0, stale_after_s=3600,
                      announce_grace_s=30, clock=clock)  # fmt: skip
    watch.hook()
    watch.pull_started()  # the pull that hook made
    assert (watch.verdict().state, watch.verdict().interval_s) == (HEALTHY, 60)
    clock.t += 20
    assert watch.skip_poll()  # a tick right after a hooked pull adds nothing
    clock.t += 40
    assert not watch.skip_poll()  # a minute after the last pull the poll runs, hooks or not
