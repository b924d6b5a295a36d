"""A refresh token amoCRM's token endpoint refused is remembered across processes (each test's
second client is a new `OAuthTokens`, as a new command has): the next command says one line,
what and since when, and sends nothing; a new token is tried as usual. The record holds a keyed
fingerprint, never the token or a plain hash of it."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from sync.amo.auth import seed_digest
from sync.amo.backoff import Backoff
from sync.amo.client import AmoClient
from sync.amo.ratelimit import RateLimiter
from sync.amo.refused_refresh import REFUSED_KEY
from sync.config import Secret
from sync.db.tokens import TokenStore
from sync.emulator.faults import FaultRule
from sync.errors import AmoAuthError, AmoError
from tests.integration.amo_emulator import FAST_BACKOFF, amo_config, oauth_config, running
from tests.integration.test_amo_auth import oauth_client, seed, token_calls

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"


def _stored_raw(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(
            conn.scalar(
                sa.text(
                    "SELECT value::text FROM amocrm.sync_state WHERE key = 'amocrm_oauth_tokens'"
                )
            )
        )


def _no_trace_of(token: str, *texts: str) -> None:
    for text in texts:
        assert token not in text
        assert hashlib.sha256(token.encode()).hexdigest() not in text
        assert str(seed_digest(Secret(token))) not in text


def test_a_refused_stored_refresh_token_is_not_sent_by_the_next_command(engine: Engine) -> None:
    with running(auth_mode="oauth") as (emulator, url):
        pair = emulator.issue_tokens()
        seed(engine, pair)
        emulator.revoke_all_tokens()
        with oauth_client(emulator, url, engine) as first, pytest.raises(AmoAuthError):
            first.fetch_account()
        assert [r["status"] for r in token_calls(emulator)] == [401]
        with (
            capture_logs() as logs,
            oauth_client(emulator, url, engine) as second,
            pytest.raises(AmoAuthError) as info,
        ):
            second.fetch_account()
        assert [r["status"] for r in token_calls(emulator)] == [401]  # not sent again
        line = str(info.value)
        assert "\n" not in line
        assert re.search(f"refused this refresh token at {STAMP} \\(HTTP 401: ", line), line
        assert "revoked" in line.lower()
        assert "amosync auth --code" in line
        record = json.loads(_stored_raw(engine))[REFUSED_KEY]
        assert record["status"] == 401
        _no_trace_of(pair["refresh_token"], line, repr(info.value), json.dumps(record),
                     json.dumps(logs, default=str))  # fmt: skip


def test_a_refused_configured_seed_is_remembered_and_a_new_one_is_tried(engine: Engine) -> None:
    """No pair stored: the configured refresh token seeds it. Refused once, the same token
    configured is not sent again; another one configured is, and its pair is stored (the
    record of the refusal goes with the old value)."""
    with running(auth_mode="oauth") as (emulator, url):
        dead = emulator.issue_tokens()["refresh_token"]
        emulator.revoke_all_tokens()
        for _ in range(2):  # two commands configured with the dead token
            with (
                oauth_client(emulator, url, engine, refresh_token=dead) as client,
                pytest.raises(AmoAuthError, match="refused"),
            ):
                client.fetch_account()
        assert [r["status"] for r in token_calls(emulator)] == [401]
        assert TokenStore(engine).load() is not None  # the record, with no pair
        fresh = emulator.issue_tokens()["refresh_token"]
        with oauth_client(emulator, url, engine, refresh_token=fresh) as client:
            client.fetch_account()
        assert [r["status"] for r in token_calls(emulator)] == [401, 200]
        stored = TokenStore(engine).load()
        assert stored is not None
        assert REFUSED_KEY not in stored
        assert "access_token" in stored
        _no_trace_of(dead, _stored_raw(engine))


def test_a_402_from_the_token_endpoint_is_not_remembered(engine: Engine) -> None:
    """Only a 400/401 is for good: a 402 (unpaid) is lifted by a payment, so the next command
    sends the token again."""
    with running(auth_mode="oauth") as (emulator, url):
        seed(engine, emulator.issue_tokens())
        emulator.expire_access_tokens()
        emulator.add_fault(FaultRule(kind="error", path="/oauth2/access_token", status=402))
        with oauth_client(emulator, url, engine) as first, pytest.raises(AmoError):
            first.fetch_account()
        with oauth_client(emulator, url, engine) as second:
            second.fetch_account()
        assert [r["status"] for r in token_calls(emulator)] == [402, 200]
        stored = TokenStore(engine).load()
        assert stored is not None
        assert REFUSED_KEY not in stored


def test_a_refusal_of_a_misconfigured_client_does_not_condemn_the_token(engine: Engine) -> None:
    """A wrong `redirect_uri` (400) or `client_id` (401) makes the token endpoint refuse a valid
    refresh token: once the operator corrects it, the token is sent again (it was remembered as
    refused for good, so only `amosync auth --code` could bring the sync back)."""
    with running(auth_mode="oauth") as (emulator, url):
        seed(engine, emulator.issue_tokens())
        emulator.expire_access_tokens()
        right = oauth_config(emulator, "")
        for wrong in (replace(right, redirect_uri="https://wrong.example/cb"),
                      replace(right, client_id="not-this-integration")):  # fmt: skip
            config = amo_config(url, oauth=wrong)
            limiter = RateLimiter(200, margin_s=0.0)
            with (
                AmoClient.connect(
                    config,
                    token_storage=TokenStore(engine),
                    limiter=limiter,
                    backoff=Backoff(**FAST_BACKOFF),
                ) as client,  # fmt: skip
                pytest.raises(AmoAuthError),
            ):
                client.fetch_account()
        with oauth_client(emulator, url, engine) as fixed:
            fixed.fetch_account()
        assert [r["status"] for r in token_calls(emulator)] == [400, 401, 200]
