"""The /healthz verdict from the daemon's and the transport's signals, on a controlled clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sync.daemon.health import Health
from sync.daemon.metrics import jwt_expiry
from sync.errors import AmoAuthError, AmoTransientError, LockWaitError, StoreError


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.t)

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def leader(poll: float = 10) -> tuple[Health, FakeClock]:
    clock = FakeClock()
    health = Health(poll_interval_s=poll, unhealthy_after_polls=3, clock=clock)
    health.set_role("leader")
    return health, clock


def reasons(health: Health) -> list[str]:
    return list(health.report()[1]["reasons"])


def test_leader_is_unhealthy_until_its_first_pull_then_healthy() -> None:
    health, _ = leader()
    assert health.report()[0] == 503
    assert reasons(health)[0].startswith("no_successful_pull")
    health.job_started("pull")
    health.amocrm_answered(200)  # a first pull in progress is not enough
    assert health.report()[0] == 503
    health.job_succeeded("pull")
    code, body = health.report()
    assert (code, body["status"], body["reasons"]) == (200, "ok", [])


def test_pull_goes_stale_after_a_few_poll_intervals() -> None:
    health, clock = leader(poll=10)
    health.job_succeeded("pull")
    clock.t += 30
    assert health.report()[0] == 200
    clock.t += 1
    assert reasons(health) == ["pull_stale: no successful pull for 31s (limit 30s)"]


def test_a_long_full_resync_that_stores_pages_stays_healthy() -> None:
    health, clock = leader(poll=10)
    health.job_succeeded("pull")
    health.job_started("full")
    clock.t += 600
    health.pull_stored()
    assert health.report()[0] == 200


def test_a_running_pull_that_gets_answers_but_stores_nothing_goes_stale() -> None:
    health, clock = leader(poll=10)
    health.job_succeeded("pull")
    health.job_started("pull")  # every page fails to be stored (a full disk, say)
    clock.t += 31
    health.amocrm_answered(200)
    assert reasons(health) == ["pull_stale: no successful pull for 31s (limit 30s)"]


def test_amocrm_unreachable_after_a_grace_then_healthy_on_the_next_answer() -> None:
    health, clock = leader(poll=10)
    health.job_succeeded("pull")
    health.amocrm_unreachable("ConnectError")
    assert health.report()[0] == 200  # one failed request is not an outage
    clock.t += 10
    assert reasons(health) == ["amocrm_unreachable: ConnectError for 10s"]
    health.amocrm_answered(502)
    assert reasons(health) == ["amocrm_unreachable: HTTP 502 for 10s"]
    health.amocrm_answered(204)
    assert health.report()[0] == 200


def test_auth_failure_until_amocrm_accepts_again() -> None:
    health, _ = leader()
    health.job_succeeded("pull")
    health.job_failed("pull", AmoAuthError("token revoked"))
    assert reasons(health) == ["amocrm_auth_failed: token revoked"]
    health.amocrm_answered(200)
    assert health.report()[0] == 200


def test_a_push_with_nothing_to_send_does_not_clear_an_auth_failure() -> None:
    health, _ = leader()
    health.job_succeeded("pull")
    health.job_failed("pull", AmoAuthError("token revoked"))
    health.job_succeeded("push")  # no request was made
    assert reasons(health) == ["amocrm_auth_failed: token revoked"]


def test_transient_job_failures_are_left_to_the_transport_and_staleness() -> None:
    health, _ = leader()
    health.job_succeeded("pull")
    health.job_failed("pull", AmoTransientError("HTTP 503"))
    assert health.report()[0] == 200


def test_standby_is_healthy_while_the_database_answers() -> None:
    health = Health(poll_interval_s=10, clock=FakeClock())
    health.set_role("standby")
    assert health.report()[0] == 200
    health.database_failed("connection refused")
    assert reasons(health) == ["database_unavailable: connection refused"]
    health.database_ok()
    assert health.report()[0] == 200


def test_database_failure_of_a_job_is_reported_until_a_job_succeeds() -> None:
    health, _ = leader()
    health.job_succeeded("pull")
    health.job_failed("push", StoreError("PostgreSQL at db failed: timeout", transient=True))
    assert reasons(health) == ["database_unavailable: PostgreSQL at db failed: timeout"]
    health.job_succeeded("push")
    assert health.report()[0] == 200


def test_a_database_that_keeps_the_lock_check_waiting_is_unavailable_while_it_does() -> None:
    """No answer and no error (a hung server, a frozen network path): /healthz said ok."""
    health, clock = leader()
    health.job_succeeded("pull")
    with health.awaiting_database("the leader lock's check"):
        clock.sleep(2)
        assert health.report()[0] == 200  # an answer may take a moment
        clock.sleep(2)
        code, body = health.report()
        assert code == 503
        assert body["reasons"] == [
            "database_unavailable: no answer from PostgreSQL to the leader lock's check for 4s"
        ]
        with health.awaiting_database("a probe"):  # the longest wait is the one reported
            clock.sleep(1)
            assert "check for 5s" in reasons(health)[0]
    assert health.report()[0] == 200


def test_livez_follows_the_main_loop_heartbeat() -> None:
    health, clock = leader()
    assert not health.alive(30)
    health.beat()
    clock.t += 30
    assert health.alive(30)
    clock.t += 1
    assert not health.alive(30)


def test_jwt_expiry_reads_exp_without_verifying() -> None:
    # header {"alg":"none"}, payload {"exp": 1893456000}
    token = "eyJhbGciOiJub25lIn0.eyJleHAiOiAxODkzNDU2MDAwfQ.sig"
    assert jwt_expiry(token) == 1893456000.0
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry("a.%%%.c") is None


def test_a_lock_wait_names_the_holder_until_that_job_succeeds() -> None:
    health, _ = leader()
    health.job_succeeded("pull")
    wait = "waiting for a lock on amocrm.contacts held by pid 42 (psql, idle in transaction for 9s)"
    health.job_failed("push", LockWaitError(wait, pid=42))
    assert reasons(health) == [f"database_lock_wait: push {wait}"]
    health.job_succeeded("pull")
    assert reasons(health) == [f"database_lock_wait: push {wait}"]
    health.job_succeeded("push")
    assert health.report()[0] == 200
