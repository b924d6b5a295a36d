"""`amosync run` as an operator runs it: subprocesses, the emulator on 127.0.0.1, PostgreSQL.

Bounds asserted are the issue's: SIGTERM exits 0 within 15 s; a standby takes over within one
poll interval after the leader is killed; changes flow within an interval plus a few seconds.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.db.schema import contacts, sync_runs
from tests.e2e.cli import amosync
from tests.e2e.daemon_procs import DaemonProcess, EmulatorProcess, env_for, wait_for

pytestmark = pytest.mark.slow
FLOW_SLACK_S = 10  # "within the interval plus a few seconds", generously for a loaded CI box


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[EmulatorProcess]:
    process = EmulatorProcess(tmp_path)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def daemons(
    tmp_path: Path, db_config: DatabaseConfig, emulator: EmulatorProcess
) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(**settings: str) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path, db_config, emulator.base_url, **settings).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


def test_sigterm_stops_cleanly_with_exit_0(daemons: Callable[..., DaemonProcess]) -> None:
    daemon = daemons()
    daemon.wait_health(200)
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0, daemon.output()
    assert time.monotonic() - started < 15
    names = [event["event"] for event in daemon.events()]
    assert "shutdown_requested" in names
    assert "leadership_released" in names
    assert names[-1] == "daemon_stopped"
    assert not [e for e in daemon.events() if e["level"] == "error"], daemon.output()


def test_sigint_during_a_pull_exits_0(daemons: Callable[..., DaemonProcess]) -> None:
    daemon = daemons(AMOSYNC_SYNC__PUSH_INTERVAL_S="0.2")
    daemon.wait_health(200)
    daemon.signal(signal.SIGINT)
    assert daemon.wait(timeout=15) == 0, daemon.output()


def test_killed_leader_hands_over_to_the_standby_within_a_poll_interval(
    daemons: Callable[..., DaemonProcess],
) -> None:
    poll = 4.0
    first = daemons(AMOSYNC_SYNC__POLL_INTERVAL_S=str(poll))
    first.wait_health(200)
    second = daemons(AMOSYNC_SYNC__POLL_INTERVAL_S=str(poll))
    standby = second.wait_health(200, role="standby")
    assert standby["reasons"] == []
    assert _role(first) == "leader"
    assert "amosync_leader 0.0" in second.metrics()
    assert "amosync_leader 1.0" in first.metrics()

    first.kill()  # SIGKILL: no clean-up, PostgreSQL ends its session and frees the lock
    killed = time.monotonic()
    wait_for("the standby to lead", lambda: _role(second) == "leader", timeout=poll)
    took_over = time.monotonic() - killed
    assert took_over <= poll
    second.wait_health(200, timeout=FLOW_SLACK_S)  # and its own first pull succeeded
    assert "amosync_leader 1.0" in second.metrics()


def _role(daemon: DaemonProcess) -> str | None:
    got = daemon.health()
    return None if got is None else str(got[1]["role"])


def test_healthz_is_503_while_amocrm_is_down_and_200_after(
    daemons: Callable[..., DaemonProcess], emulator: EmulatorProcess
) -> None:
    daemon = daemons()
    daemon.wait_health(200)
    emulator.stop()
    body = daemon.wait_health(503, timeout=20)
    host = emulator.base_url.removeprefix("http://")
    unreachable = f"amocrm_unreachable: connection refused ({host}) for "
    assert any(reason.startswith(unreachable) for reason in body["reasons"]), body
    assert 'status="error"' in daemon.metrics()
    emulator.start()  # same port, same token, same seeded account
    daemon.wait_health(200, timeout=20)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0


def test_changes_flow_both_ways(
    daemons: Callable[..., DaemonProcess], emulator: EmulatorProcess, engine: Engine
) -> None:
    daemon = daemons()
    daemon.wait_health(200)
    remote_id, local_id = _two_contact_ids(engine)

    emulator.admin("PATCH", f"contacts/{remote_id}", {"name": "Edited in amoCRM"})
    wait_for(
        "the remote edit in PostgreSQL",
        lambda: _name(engine, remote_id) == "Edited in amoCRM",
        timeout=1 + FLOW_SLACK_S,
    )

    with engine.begin() as conn:
        conn.execute(
            contacts.update().where(contacts.c.id == local_id).values(name="Edited in SQL")
        )
    wait_for("the local edit in amoCRM",
             lambda: emulator.admin("GET", f"contacts/{local_id}")["name"] == "Edited in SQL",
             timeout=1 + FLOW_SLACK_S)  # fmt: skip
    wait_for("the row to be synced", lambda: _status(engine, local_id) == "synced", timeout=10)
    # the job runner counts a run once run_push has returned, a moment after the row's commit
    wait_for("the push counted in /metrics",
             lambda: "amosync_rows_pushed_total 1.0" in daemon.metrics(), timeout=10)  # fmt: skip
    # read from PostgreSQL and cached for SCRAPE_CACHE_S (5 s): a scrape between the row's
    # commit and the run's close (a loaded machine) keeps showing no push until the cache ages
    succeeded = 'amosync_last_success_timestamp_seconds{kind="push"}'
    wait_for("the push's success in /metrics", lambda: succeeded in daemon.metrics(), timeout=15)
    metrics = daemon.metrics()
    assert "_created" not in metrics  # no creation-time series beside every counter
    assert "amosync_amocrm_allowed_rps " in metrics


def test_a_remote_deletion_is_marked_within_a_few_short_polls_by_default(
    daemons: Callable[..., DaemonProcess], emulator: EmulatorProcess, engine: Engine
) -> None:
    # sync.events_interval_s unset: idle polls read the events every third poll (6 s here);
    # with the old fixed 300 s a deletion stayed unmarked for minutes
    daemon = daemons(AMOSYNC_SYNC__POLL_INTERVAL_S="2")
    daemon.wait_health(200)
    victim, _other = _two_contact_ids(engine)
    wait_for("an idle poll after the first", lambda: _pull_runs(engine) >= 2, timeout=30)

    emulator.admin("DELETE", f"contacts/{victim}")
    wait_for("the remote deletion marked is_deleted", lambda: _deleted(engine, victim),
             timeout=60)  # fmt: skip


def _pull_runs(engine: Engine) -> int:
    query = sa.select(sa.func.count()).select_from(sync_runs).where(sync_runs.c.kind == "pull")
    with engine.connect() as conn:
        return int(conn.scalar(query) or 0)


def _deleted(engine: Engine, contact_id: int) -> bool:
    with engine.connect() as conn:
        query = sa.select(contacts.c.is_deleted).where(contacts.c.id == contact_id)
        return bool(conn.scalar(query))


def _two_contact_ids(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        query = sa.select(contacts.c.id).where(~contacts.c.is_deleted).order_by(contacts.c.id)
        first, second = conn.scalars(query.limit(2)).all()
    return int(first), int(second)


def _name(engine: Engine, contact_id: int) -> str | None:
    with engine.connect() as conn:
        return conn.scalar(sa.select(contacts.c.name).where(contacts.c.id == contact_id))


def _status(engine: Engine, contact_id: int) -> str | None:
    with engine.connect() as conn:
        query = sa.select(contacts.c.sync_status).where(contacts.c.id == contact_id)
        return conn.scalar(query)


def test_resync_and_status_beside_a_running_daemon(
    daemons: Callable[..., DaemonProcess], engine: Engine
) -> None:
    daemon = daemons()
    daemon.wait_health(200)
    done = amosync("resync", "--wait", "30", env=env_for(daemon))
    assert done.returncode == 0, done.stderr
    assert "done by amosync-leader" in done.stdout
    status = amosync("status", "--json", env=env_for(daemon))
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["daemon"]["running"] is True
    assert data["last_success"]["full"]["status"] == "succeeded"
    assert data["pending_requests"] == 0
    human = amosync("status", env=env_for(daemon))
    assert human.returncode == 0, human.stderr
    assert "running: amosync-leader" in human.stdout


def test_status_on_an_empty_schema_migrates_it_first(blank_db_config: DatabaseConfig) -> None:
    env = {"AMOSYNC_DATABASE__URL": blank_db_config.url.reveal()}
    done = amosync("status", env=env)
    assert done.returncode == 0, done.stderr
    assert '"event": "database_migrated"' in done.stderr
    assert "no successful pull yet" in done.stdout
    assert "Traceback" not in done.stderr


def test_sigterm_with_a_stuck_job_still_exits_0_within_15_s(
    daemons: Callable[..., DaemonProcess], emulator: EmulatorProcess
) -> None:
    daemon = daemons(AMOSYNC_AMOCRM__TIMEOUT_S="60", AMOSYNC_DAEMON__SHUTDOWN_TIMEOUT_S="3")
    daemon.wait_health(200)
    # every contacts request now hangs 40 s: the next pull is stuck inside an HTTP read
    emulator.admin("POST", "faults", {"kind": "slow", "delay_ms": 40000,
                                      "path": "/api/v4/contacts*", "times": None})  # fmt: skip
    wait_for("a stuck pull", lambda: "pull" in (daemon.health() or (0, {}))[1].get(
        "running_jobs", []), timeout=10)  # fmt: skip
    time.sleep(0.5)
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0, daemon.output()
    assert time.monotonic() - started < 15
    abandoned = [e for e in daemon.events() if e["event"] == "job_abandoned"]
    assert len(abandoned) == 1
    assert abandoned[0]["jobs"] == ["pull"]


def test_sigterm_during_a_429_pause_stops_cleanly_at_once(
    daemons: Callable[..., DaemonProcess], emulator: EmulatorProcess
) -> None:
    """amoCRM's documented 429 body asks for `retry_after: 300`: the pause it buys ends the
    moment the daemon is asked to stop; the job ends, it is not abandoned."""
    daemon = daemons(AMOSYNC_AMOCRM__MAX_RETRIES="6")
    daemon.wait_health(200)
    emulator.admin("POST", "faults", {"kind": "rate_limit", "retry_after_s": 300,
                                      "path": "/api/v4/*", "times": None})  # fmt: skip
    wait_for("a 429 pause", lambda: any(
        e["event"] == "amo_rate_limited" for e in daemon.events()), timeout=15)  # fmt: skip
    time.sleep(0.5)
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0, daemon.output()
    assert time.monotonic() - started < 5, daemon.output()
    events = daemon.events()
    (limited, *_) = [e for e in events if e["event"] == "amo_rate_limited"]
    assert limited["retry_after"] == 300
    assert limited["pause_s"] >= 300  # the daemon waits amoCRM's retry_after out
    assert not [e for e in events if e["event"] == "job_abandoned"]
    assert [e["clean"] for e in events if e["event"] == "daemon_stopped"] == [True]


def test_a_requested_resync_a_killed_leader_left_running_is_served_by_the_next_leader(
    daemons: Callable[..., DaemonProcess], engine: Engine
) -> None:
    """What kill -9 of a leader mid-way through a requested full resync leaves: the request
    `running` with no run id, its run row `running`. The next leader puts the request back in
    the queue (it holds the pull lock, so that run is over) and serves it."""
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO amocrm.sync_requests (kind, status, started_at) "
                             "VALUES ('full', 'running', now())"))  # fmt: skip
        conn.execute(sa.text("INSERT INTO amocrm.sync_runs (kind, status, started_at) "
                             "VALUES ('full', 'running', now())"))  # fmt: skip
    daemon = daemons()
    daemon.wait_health(200)
    query = sa.text("SELECT status, run_id FROM amocrm.sync_requests")

    def served() -> tuple[str, int] | None:
        with engine.connect() as conn:
            row = conn.execute(query).one()
        # not `pending` either: the leader's first pull puts it back there before it is served
        return (row.status, row.run_id) if row.status in ("done", "failed") else None

    status, run_id = wait_for("the request to be served", served, timeout=FLOW_SLACK_S)
    assert status == "done"
    with engine.connect() as conn:
        run = conn.execute(sa.text("SELECT kind, status FROM amocrm.sync_runs WHERE id = :i"),
                           {"i": run_id}).one()  # fmt: skip
        stale = conn.scalar(sa.text("SELECT status FROM amocrm.sync_runs ORDER BY id LIMIT 1"))
    assert tuple(run) == ("full", "succeeded")
    assert stale == "failed"  # the killed run, closed by the new leader
