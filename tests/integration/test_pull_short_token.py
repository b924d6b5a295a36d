"""A token amoCRM kills after a few requests, many threads: the refresh works every time, but
each new token dies again at once. When the run gives up, its line says that, not amoCRM's
"Invalid user name or password" (which reads as wrong credentials)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.engine import Engine

from sync.amo.backoff import Backoff
from sync.amo.client import AmoClient
from sync.amo.ratelimit import RateLimiter
from sync.config import Config, DatabaseConfig, SyncConfig
from sync.db.tokens import TokenStore
from sync.errors import AMO_MESSAGE_LIMIT, AmoAuthError
from sync.pull import run_pull
from tests.integration.amo_emulator import FAST_BACKOFF, amo_config, oauth_config
from tests.integration.pull_helpers import emulated
from tests.integration.test_amo_auth import TOKEN_PATH, seed

BEHIND = {"clock_start": time.time() - 600}


@pytest.mark.parametrize("lifetime", [0, 3], ids=["dead-at-once", "three-requests"])
def test_a_token_that_keeps_dying_right_after_its_refresh_is_named_so(
    db_config: DatabaseConfig, engine: Engine, lifetime: int
) -> None:
    with emulated(
        contacts=1500, auth_mode="oauth", token_max_requests=lifetime, latency_ms=20, **BEHIND
    ) as (emulator, url):
        seed(engine, emulator.issue_tokens())
        amo = amo_config(url, oauth=oauth_config(emulator), page_size=40)
        config = Config(amocrm=amo, database=db_config, sync=SyncConfig(pull_workers=8))
        client = AmoClient.connect(
            config.amocrm,
            token_storage=TokenStore(engine),
            limiter=RateLimiter(config.amocrm.max_rps, margin_s=0.0),
            backoff=Backoff(**FAST_BACKOFF),
            workers=8,
        )
        with client, pytest.raises(AmoAuthError) as failed:
            run_pull(config, engine, client, full=True)
        refreshes = [r for r in emulator.requests() if r["path"] == TOKEN_PATH]
    line = str(failed.value)
    assert line.startswith(
        "amoCRM refused the new access token too, just after a refresh that worked: its tokens "
        "expire within a few requests "
    ), line
    assert "Invalid user name or password" not in line
    assert len(line) <= AMO_MESSAGE_LIMIT
    assert all(r["status"] == 200 for r in refreshes)  # the refresh itself always worked
    assert refreshes
