"""`status` while a run retries amoCRM: the first failing pull of an outage shows as retrying,
with the reason, as it happens (before, nothing showed until the run ended ~20 s later); the
record goes when the run ends, and a healthy run writes none."""

from __future__ import annotations

import threading
import time
from datetime import UTC
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.amo.backoff import Backoff
from sync.amo.client import AmoClient
from sync.amo.ratelimit import RateLimiter
from sync.config import Config, DatabaseConfig
from sync.db import retries
from sync.db.retries import RetryNote, note_retries
from sync.db.runs import RunStore
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


def _noted(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        value = conn.scalar(
            sa.text("SELECT value FROM amocrm.sync_state WHERE key = 'retrying.pull'")
        )
    assert isinstance(value, dict)
    return value


def test_a_retry_note_is_stamped_by_the_database_and_never_counts_down(
    db_config: DatabaseConfig, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`since` is the database's clock, as the runs' times are (it was the host's), and two
    threads' notes landing out of order (the lower count last) leave the higher count."""
    monkeypatch.setattr(retries, "NOTE_EVERY_S", 0.0)  # every retry written
    with engine.begin() as conn:
        run_id = RunStore("amocrm").start_run(conn, "pull")
    note = RetryNote(engine, RunStore("amocrm"), run_id, "pull")
    with engine.begin() as conn:  # the database's clock reads "now" as this transaction's start
        note_retries(conn, "retrying.pull", run_id, 1, "first", schema="amocrm")
        database_now = conn.scalar(sa.text("SELECT now()"))
    first = _noted(engine)
    assert first["since"] == database_now.astimezone(UTC).isoformat(timespec="seconds")
    note("second")  # the note's own count: 1, not more than the stored one
    note("third")  # 2
    assert (_noted(engine)["retries"], _noted(engine)["reason"]) == (2, "third")
    with engine.begin() as conn:  # a thread's note of an earlier retry, landing late
        note_retries(conn, "retrying.pull", run_id, 1, "late", schema="amocrm")
    late = _noted(engine)
    assert (late["retries"], late["reason"], late["since"]) == (2, "third", first["since"])
    with engine.begin() as conn:  # another run's first note starts its own record
        note_retries(conn, "retrying.pull", run_id + 1, 1, "next run", schema="amocrm")
    assert (_noted(engine)["run_id"], _noted(engine)["retries"]) == (run_id + 1, 1)
