"""`status` while a run retries amoCRM: the first failing pull of an outage shows as retrying,
with the reason, as it happens (before, nothing showed until the run ended ~20 s later); the
record goes when the run ends, and a healthy run writes none."""

from __future__ import annotations

import threading
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.amo.backoff import Backoff
from sync.amo.client import AmoClient
from sync.amo.ratelimit import RateLimiter
from sync.config import Config, DatabaseConfig
from sync.emulator import FaultRule
from sync.pull import run_pull
from sync.status import gather, render
from tests.integration.amo_emulator import amo_config
from tests.integration.pull_helpers import emulated, make_config

RETRYING = "SELECT count(*) FROM amocrm.sync_state WHERE key LIKE 'retrying.%'"


def _status(engine: Engine, config: Config) -> dict[str, Any]:
    with engine.begin() as conn:
        return gather(conn, config)


def _client(config: Config) -> AmoClient:
    amo = config.amocrm
    return AmoClient.connect(
        amo_config(amo.base_url, amo.access_token.reveal(), max_retries=5),
        limiter=RateLimiter(amo.max_rps, margin_s=0.0),
        backoff=Backoff(base_s=1.0, cap_s=2.0),  # ~1 s between retries: status can look
    )


def test_a_pull_retrying_an_outage_shows_so_in_status_as_it_retries(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=30) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        emulator.add_fault(FaultRule(kind="error", status=503, path="/api/v4/contacts*", times=3))
        outcome: list[Any] = []
        with _client(config) as client:
            puller = threading.Thread(target=lambda: outcome.append(
                run_pull(config, engine, client, full=True)))  # fmt: skip
            puller.start()
            deadline = time.monotonic() + 30
            seen = None
            while seen is None and puller.is_alive() and time.monotonic() < deadline:
                seen = _status(engine, config)
                if seen["last_runs"].get("full", {}).get("retrying") is None:
                    seen = None
                    time.sleep(0.05)
            puller.join(60)
        assert seen is not None, "status never showed the run retrying"
        run = seen["last_runs"]["full"]
        assert run["status"] == "running"
        retrying = run["retrying"]
        assert retrying["retries"] >= 1
        assert retrying["reason"].startswith("amoCRM gateway error (503) (GET /api/v4/contacts?")
        assert retrying["since"]
        assert retrying["last_at"]
        lines = [line for line in render(seen).splitlines() if "retrying amoCRM" in line]
        assert len(lines) == 1
        since = f"full  retrying amoCRM requests since {retrying['since']} ("
        assert lines[0].startswith(" " * 13 + since)
        assert [report.kind for report in outcome] == ["full"]  # the outage passed: succeeded
        after = _status(engine, config)["last_runs"]["full"]
        assert (after["status"], after["retrying"]) == ("succeeded", None)
        with engine.connect() as conn:
            assert conn.scalar(sa.text(RETRYING)) == 0  # cleared with the run


def test_a_healthy_pull_notes_no_retry(db_config: DatabaseConfig, engine: Engine) -> None:
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        if "retrying." in f"{statement} {params}":
            statements.append(statement)

    with emulated(contacts=30) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        with _client(config) as client:
            client.session.retry_notes.append(lambda reason: None)  # ours is removed, not this
            sa.event.listen(engine, "before_cursor_execute", seen)
            try:
                run_pull(config, engine, client, full=True)
            finally:
                sa.event.remove(engine, "before_cursor_execute", seen)
            assert len(client.session.retry_notes) == 1
    assert statements == []  # not one write (nor a delete) for a run that retried nothing
    assert _status(engine, config)["last_runs"]["full"]["retrying"] is None
