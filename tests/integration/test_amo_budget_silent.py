"""The shared rate budget's own connection, and a run lock's, are bounded like every other
when PostgreSQL stops answering mid-run (`sync.db.silence`). Every request thread waits on the
budget's one row, and no other connection of the run is waiting then, so without its own bound
a pull hung for good on a server that went silent (review: still running 114 s after the
freeze, `statement_timeout_s` 2); with it, the failed run then hung releasing its lock."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from sync.db import budget, locks, silence
from sync.db.budget import BudgetRow
from sync.db.locks import SessionLock
from sync.errors import StoreError
from tests.pg_proxy import FreezeProxy


@pytest.fixture
def proxy(engine: Engine) -> Iterator[FreezeProxy]:
    url = engine.url
    frozen = FreezeProxy((url.host or "127.0.0.1", url.port or 5432))
    yield frozen
    frozen.thaw()
    frozen.close()


def test_a_silent_server_fails_the_budget_claim_within_its_bound(
    engine: Engine, proxy: FreezeProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget, "STATEMENT_TIMEOUT_S", 0.5)  # the bound: 0.5 + 1 s, not 15 s
    monkeypatch.setattr(silence, "GRACE_S", 1.0)
    through = create_engine(proxy.url(engine.url), execution_options=engine.get_execution_options())
    row = BudgetRow(through)
    try:
        row.update(lambda value, now: (None, value or {}))  # connected, the row made
        proxy.freeze()
        started = time.monotonic()
        with pytest.raises(StoreError, match="no answer"):
            row.update(lambda value, now: (None, value or {}))
        assert time.monotonic() - started < 30  # cut by the bound, not by the test's timeout
    finally:
        proxy.thaw()
        row.close()
        through.dispose()


def test_a_silent_server_does_not_hang_the_release_of_a_run_lock(
    engine: Engine, proxy: FreezeProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that failed on a silent server then hung releasing its lock (keepalives and
    `tcp_user_timeout` see a path that acknowledges as alive)."""
    monkeypatch.setattr(locks, "ANSWER_S", 0.5)
    monkeypatch.setattr(silence, "GRACE_S", 1.0)
    through = create_engine(proxy.url(engine.url))
    lock = SessionLock(through, 424242, name="silent-test", consequence="none")
    try:
        assert lock.try_acquire()
        proxy.freeze()
        started = time.monotonic()
        lock.release()  # quiet: the session is gone, and with it the lock
        assert time.monotonic() - started < 30
    finally:
        proxy.thaw()
        lock.dispose()
        through.dispose()
