"""The rate budget shared through PostgreSQL, measured at the emulator (arrival times): two
clients with limiters of their own stay within 7 rps together; a budget below `max_rps`
(other integrations on the account) is met with AIMD, never with a block."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from sync.amo.backoff import Backoff
from sync.amo.client import AmoClient
from sync.amo.ratelimit import RateLimiter
from sync.db.budget import BUDGET_KEY, BudgetRow
from sync.emulator import Emulator, busiest_window
from sync.errors import AmoBlockedError, StoreError
from tests.integration.amo_emulator import FAST_BACKOFF, amo_config, running


def shared_client(emulator: Emulator, url: str, engine: Engine, **kw: Any) -> AmoClient:
    """A client as a separate process builds it: its own limiter, its own store object."""
    config = amo_config(url, emulator.long_lived_token, max_rps=7.0)
    limiter = RateLimiter(config.max_rps, store=BudgetRow(engine), **kw)
    return AmoClient.connect(config, limiter=limiter, backoff=Backoff(**FAST_BACKOFF))


def api_log(emulator: Emulator) -> list[dict[str, Any]]:
    return [r for r in emulator.requests() if r["path"].startswith("/api/v4")]


def test_two_clients_sharing_the_database_never_exceed_7_in_any_second(engine: Engine) -> None:
    with running(rate_limit=7, latency_ms=300, block_after_violations=None) as (emulator, url):
        one, other = shared_client(emulator, url, engine), shared_client(emulator, url, engine)
        assert one.session.limiter is not other.session.limiter
        calls = [one.fetch_account, other.fetch_account] * 15
        with ThreadPoolExecutor(12) as pool:
            accounts = list(pool.map(lambda call: call(), calls))
        one.close()
        other.close()
        log = api_log(emulator)
    assert len(accounts) == 30
    assert [r["status"] for r in log] == [200] * 30  # not one 429
    assert busiest_window(log) <= 7
    with engine.connect() as conn:  # the budget lives in one sync_state row
        keys = conn.scalars(sa.text("SELECT key FROM amocrm.sync_state")).all()
    assert keys == [BUDGET_KEY]


def test_a_process_whose_margin_widened_is_not_undercut_by_a_narrower_one(engine: Engine) -> None:
    """One process's margin is 350 ms (a 429 widened it), the other's none: their starts
    reach amoCRM as one stream, and no 8 of them arrive within 1.35 s (less a late start)."""
    with running(rate_limit=7, latency_ms=50, block_after_violations=None) as (emulator, url):
        wide = shared_client(emulator, url, engine, margin_s=0.35)
        narrow = shared_client(emulator, url, engine, margin_s=0.0)
        calls = [wide.fetch_account, narrow.fetch_account] * 12
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda call: call(), calls))
        wide.close()
        narrow.close()
        log = api_log(emulator)
    assert [r["status"] for r in log] == [200] * 24
    assert busiest_window(log, 1.2) <= 7  # 1.35 s less a late start (7 in 1.0 s without)


def test_a_budget_below_max_rps_is_met_with_aimd_not_a_block(engine: Engine) -> None:
    """The account allows 3 rps (other integrations use the rest) while max_rps is 7; amoCRM
    here blocks at the 8th 429 within a minute."""
    settings = {"rate_limit": 7, "account_rate_limit": 3, "latency_ms": 100,
                "block_after_violations": 8, "block_window_s": 60.0}  # fmt: skip
    with running(**settings) as (emulator, url), capture_logs() as logs:
        client = shared_client(emulator, url, engine)
        with ThreadPoolExecutor(8) as pool:
            accounts = list(pool.map(lambda _: client.fetch_account(), range(30)))
        allowed = client.session.limiter.allowed_rps
        client.close()
        statuses = [r["status"] for r in api_log(emulator)]
    assert len(accounts) == 30
    assert 403 not in statuses
    assert 1 <= statuses.count(429) < 8
    assert allowed < 7
    warned = [e for e in logs if e["event"] == "amo_rate_limited"]
    assert len(warned) == statuses.count(429)
    assert all(e["log_level"] == "warning" and e["allowed_rps"] < 7 for e in warned)


def test_a_429_seen_by_one_process_slows_the_other(engine: Engine) -> None:
    one = RateLimiter(7, store=BudgetRow(engine))
    other = RateLimiter(7, store=BudgetRow(engine))
    try:
        other.acquire()
        assert other.allowed_rps == 7
        one.throttled(one.acquire(), pause_s=0.0)
        for _ in range(5):  # past the starts `other` had already claimed
            other.acquire()
        assert 0.5 <= other.allowed_rps < 3.5  # cut deep (a burst's first 429), climbing
    finally:
        close(one, other)


def test_a_403_block_stops_every_process_that_was_running(engine: Engine) -> None:
    blocked = RateLimiter(100, store=BudgetRow(engine))
    running_then = RateLimiter(100, store=BudgetRow(engine))
    limiters = [blocked, running_then]
    try:
        running_then.acquire()
        blocked.halt(AmoBlockedError("amoCRM blocked this IP (403 page)"))
        with pytest.raises(AmoBlockedError, match="another amosync process"):
            take(10, running_then)  # its starts claimed before the block run out first
        started_later = RateLimiter(100, store=BudgetRow(engine))
        limiters.append(started_later)
        started_later.acquire()  # after support lifted the block, a restart works again
        started_later.acquire()
    finally:
        close(*limiters)


def test_an_unreachable_database_is_a_store_error_and_the_limiter_goes_on_alone() -> None:
    unreachable = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    store = BudgetRow(unreachable)
    with pytest.raises(StoreError, match="sharing the rate budget"):
        store.update(lambda value, now: (None, {}))
    limiter = RateLimiter(7, store=store)
    first, second = limiter.acquire(), limiter.acquire()
    assert second.at - first.at >= 2 * limiter.gap - 0.002  # half the budget, alone
    store.close()


def budget_rows_and_sessions(engine: Engine) -> tuple[list[str], int]:
    """The keys in sync_state, and how many budget connections this database has open."""
    with engine.connect() as conn:
        keys = list(conn.scalars(sa.text("SELECT key FROM amocrm.sync_state")))
        sessions = conn.scalar(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'amosync-budget' "
            "AND datname = current_database()"
        ))  # fmt: skip
    return keys, int(sessions or 0)


def test_warming_opens_the_connection_and_the_row_before_the_first_claim(engine: Engine) -> None:
    store = BudgetRow(engine)
    store.warm()
    keys, budget_sessions = budget_rows_and_sessions(engine)
    store.close()
    assert keys == [BUDGET_KEY]
    assert budget_sessions == 1


def test_warming_an_unreachable_database_leaves_the_error_to_the_first_claim() -> None:
    store = BudgetRow(sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere"))
    store.warm()  # says nothing
    with pytest.raises(StoreError, match="sharing the rate budget"):
        store.update(lambda value, now: (None, {}))
    store.close()


def test_a_budget_row_lost_with_its_connection_is_made_again(engine: Engine) -> None:
    """The row's INSERT can be lost with the connection that made it (or the row deleted by
    hand): after the connection drops, the next claim makes sure of the row again instead of
    failing for the rest of the process (and leaving it at half the budget)."""
    store = BudgetRow(engine)
    store.update(lambda value, now: (None, {"n": 1}))
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM amocrm.sync_state"))
        conn.execute(sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'amosync-budget' AND datname = current_database()"
        ))  # fmt: skip
    with pytest.raises(StoreError, match="sharing the rate budget"):
        store.update(lambda value, now: (None, {"n": 2}))  # its connection is gone
    store.update(lambda value, now: (None, {"n": 3}))
    store.close()
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT key, value FROM amocrm.sync_state")).all()
    assert [(key, value) for key, value in rows] == [(BUDGET_KEY, {"n": 3})]


def test_warming_a_closed_store_opens_nothing(engine: Engine) -> None:
    """A command that failed at once closes the store before its warm-up thread ran: the
    warm-up must not open a connection (or write the row) behind the close."""
    store = BudgetRow(engine)
    store.close()
    store.warm()
    keys, budget_sessions = budget_rows_and_sessions(engine)
    assert keys == []
    assert budget_sessions == 0
    store.update(lambda value, now: (None, {}))  # closed is not dead: a claim reopens it
    store.close()


def close(*limiters: RateLimiter) -> None:
    """Their budget connections, closed now rather than whenever the collector finds them."""
    for limiter in limiters:
        limiter.close()


def take(count: int, limiter: RateLimiter) -> None:
    for _ in range(count):
        limiter.acquire()
