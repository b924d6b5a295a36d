"""A daemon's pull is fresh in /healthz while it stores pages, not while amoCRM merely answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.daemon.health import Health
from sync.daemon.run import build_jobs
from tests.integration.amo_emulator import client_for
from tests.integration.pull_helpers import emulated, make_config


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.t)

    def monotonic(self) -> float:
        return self.t


def test_a_long_full_resync_storing_pages_keeps_the_pull_fresh(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    clock = FakeClock()
    health = Health(poll_interval_s=10, unhealthy_after_polls=3, clock=clock)
    health.set_role("leader")
    health.job_succeeded("pull")
    clock.t += 600  # the resync has run for ten minutes: stale unless it stores pages
    with emulated(contacts=120) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=40)
        with client_for(emulator, url, page_size=40) as client:
            jobs = build_jobs(config, engine, client, health=health)
            health.job_started("full")
            jobs.full()  # still "running" for health: job_succeeded is not called
    code, body = health.report()
    assert (code, body["reasons"], body["running_jobs"]) == (200, [], ["full"])
