"""OAuth against the emulator with tokens in real PostgreSQL: rotation committed before use,
single-flight refresh across threads and processes, refresh ahead of expiry, stored tokens win."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from sync.amo.auth import TokenPair, store_authorization_code
from sync.amo.backoff import Backoff
from sync.amo.client import AmoClient
from sync.amo.ratelimit import RateLimiter
from sync.config import DatabaseConfig, Secret
from sync.db.tokens import TokenStore
from sync.emulator import Emulator
from sync.errors import AmoAuthError
from tests.integration.amo_emulator import FAST_BACKOFF, amo_config, oauth_config, running

TOKEN_PATH = "/oauth2/access_token"


def seed(engine: Engine, answer: dict[str, Any], *, age_s: int = 0, ttl_s: int = 86_400) -> None:
    now = int(time.time()) - age_s
    pair = TokenPair(
        Secret(answer["access_token"]), Secret(answer["refresh_token"]), now, now + ttl_s
    )
    with TokenStore(engine).locked() as row:
        row.save(pair.to_value())


def stored(engine: Engine) -> dict[str, Any]:
    value = TokenStore(engine).load()
    assert value is not None
    return dict(value)


def oauth_client(
    emulator: Emulator,
    url: str,
    engine: Engine,
    *,
    refresh_token: str = "",
    transport: httpx.BaseTransport | None = None,
) -> AmoClient:
    config = amo_config(url, oauth=oauth_config(emulator, refresh_token))
    return AmoClient.connect(
        config,
        token_storage=TokenStore(engine),
        limiter=RateLimiter(200, margin_s=0.0),
        backoff=Backoff(**FAST_BACKOFF),
        transport=transport,
    )


def token_calls(emulator: Emulator) -> list[dict[str, Any]]:
    return [r for r in emulator.requests() if r["path"] == TOKEN_PATH]


class Witness(httpx.BaseTransport):
    """Forwards to real HTTP; when a request carries a token never seen before, checks that
    the token is already committed in the database (read over a separate connection)."""

    def __init__(self, engine: Engine) -> None:
        self.inner = httpx.HTTPTransport()
        self.engine = engine
        self.seen: set[str] = set()
        self.checked: list[bool] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token and token not in self.seen:
            self.seen.add(token)
            with self.engine.connect() as conn:
                value = conn.execute(
                    sa.text(
                        "SELECT value->>'access_token' FROM amocrm.sync_state "
                        "WHERE key = 'amocrm_oauth_tokens'"
                    )
                ).scalar()
            self.checked.append(value == token)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_401_refreshes_once_and_the_new_pair_is_committed_before_use(engine: Engine) -> None:
    with running(auth_mode="oauth") as (emulator, url):
        first = emulator.issue_tokens()
        seed(engine, first)
        witness = Witness(engine)
        with oauth_client(emulator, url, engine, transport=witness) as client:
            client.fetch_account()
            emulator.expire_access_tokens()
            with capture_logs() as logs:
                client.fetch_account()
        statuses = [(r["path"], r["status"]) for r in emulator.requests()]
        assert statuses == [
            ("/api/v4/account", 200),
            ("/api/v4/account", 401),
            (TOKEN_PATH, 200),
            ("/api/v4/account", 200),
        ]
        now = stored(engine)
        assert now["access_token"] != first["access_token"]
        assert now["refresh_token"] != first["refresh_token"]
        assert witness.checked == [True, True]  # each token was in the database before its use
        text = json.dumps(logs, default=str)
        for secret in (
            first["access_token"],
            first["refresh_token"],
            now["access_token"],
            now["refresh_token"],
            emulator.settings.client_secret,
        ):
            assert secret not in text


def test_stored_tokens_win_over_the_configured_refresh_token(engine: Engine) -> None:
    with running(auth_mode="oauth") as (emulator, url):
        pair = emulator.issue_tokens()
        seed(engine, pair)
        with oauth_client(emulator, url, engine, refresh_token="stale-initial-token") as client:
            client.fetch_account()
        assert token_calls(emulator) == []
        assert stored(engine)["access_token"] == pair["access_token"]


def test_a_new_configured_refresh_token_replaces_the_stored_pair_committed_first(
    engine: Engine,
) -> None:
    with running(auth_mode="oauth") as (emulator, url):
        first = emulator.issue_tokens()["refresh_token"]
        with oauth_client(emulator, url, engine, refresh_token=first) as client:
            client.fetch_account()  # seeds the store from the configured token
        emulator.revoke_all_tokens()
        fresh = emulator.issue_tokens()["refresh_token"]
        emulator.clear_requests()
        witness = Witness(engine)
        with (
            capture_logs() as logs,
            oauth_client(emulator, url, engine, refresh_token=fresh, transport=witness) as client,
        ):
            client.fetch_account()
        assert [(r["path"], r["status"]) for r in emulator.requests()] == [
            (TOKEN_PATH, 200),
            ("/api/v4/account", 200),
        ]
        assert witness.checked == [True]  # the replacing pair was committed before its use
        assert [e["event"] for e in logs].count("amo_refresh_token_replaced") == 1
        assert fresh not in json.dumps(logs, default=str) + json.dumps(stored(engine))

        # a process still configured with the first token, whose stored pair was revoked under
        # it, takes the replacing pair after its 401 instead of exchanging its spent token
        emulator.clear_requests()
        with oauth_client(emulator, url, engine, refresh_token=first) as client:
            client.fetch_account()
        assert token_calls(emulator) == []


def test_the_token_configured_when_auth_code_stored_the_pair_does_not_replace_it(
    engine: Engine,
) -> None:
    with running(auth_mode="oauth") as (emulator, url):
        configured = "initial-token-already-spent"
        oauth = oauth_config(emulator, configured)
        with AmoClient(amo_config(url, oauth=oauth), None) as bare:
            store_authorization_code(
                oauth,
                TokenStore(engine),
                bare.session.exchange_token,
                emulator.issue_auth_code(),
            )
        emulator.clear_requests()
        with oauth_client(emulator, url, engine, refresh_token=configured) as client:
            client.fetch_account()
        assert token_calls(emulator) == []


def test_configured_refresh_token_seeds_an_empty_store(engine: Engine) -> None:
    with running(auth_mode="oauth") as (emulator, url):
        initial = emulator.issue_tokens()["refresh_token"]
        with oauth_client(emulator, url, engine, refresh_token=initial) as client:
            client.fetch_account()
        assert [r["status"] for r in token_calls(emulator)] == [200]
        assert stored(engine)["refresh_token"] != initial


def test_refresh_ahead_of_expiry_without_waiting_for_a_401(engine: Engine) -> None:
    with running(auth_mode="oauth") as (emulator, url):
        old = emulator.issue_tokens()
        seed(engine, old, age_s=900, ttl_s=1000)  # 90 % of its life gone: due for refresh
        with oauth_client(emulator, url, engine) as client:
            client.fetch_account()
        assert [(r["path"], r["status"]) for r in emulator.requests()] == [
            (TOKEN_PATH, 200),
            ("/api/v4/account", 200),
        ]
        assert stored(engine)["access_token"] != old["access_token"]


def test_revoked_integration_is_a_clear_auth_error_without_secrets(engine: Engine) -> None:
    with running(auth_mode="oauth") as (emulator, url):
        pair = emulator.issue_tokens()
        seed(engine, pair)
        emulator.revoke_all_tokens()
        with oauth_client(emulator, url, engine) as client, pytest.raises(AmoAuthError) as info:
            client.fetch_account()
        message = str(info.value) + repr(info.value) + info.value.body_excerpt
        assert "revoked" in message.lower()
        for secret in (
            pair["access_token"],
            pair["refresh_token"],
            emulator.settings.client_secret,
        ):
            assert secret not in message


def test_a_refused_refresh_token_is_posted_once_whatever_the_threads_and_retries(
    engine: Engine,
) -> None:
    """amoCRM's 401 "Token has been revoked" from the token endpoint is final: an audit saw the
    same dead refresh token POSTed 4 times by one command (once per thread and retry)."""
    with running(auth_mode="oauth", latency_ms=20) as (emulator, url):
        seed(engine, emulator.issue_tokens())
        with oauth_client(emulator, url, engine) as client:
            client.fetch_account()
            emulator.revoke_all_tokens()

            def fetch(_: int) -> str:
                with pytest.raises(AmoAuthError) as info:
                    client.fetch_account()
                return str(info.value)

            with ThreadPoolExecutor(4) as pool:
                lines = list(pool.map(fetch, range(8)))
            lines.append(fetch(0))
        assert [r["status"] for r in token_calls(emulator)] == [401]
        assert all("refused the refresh token" in line for line in lines), lines
        assert all("revoked" in line.lower() for line in lines), lines


def test_a_configured_token_amocrm_refuses_is_no_replacement_and_is_posted_once(
    engine: Engine,
) -> None:
    """The hostile audit's s04: a new refresh token in the config that amoCRM refuses logged
    `amo_refresh_token_replaced` once per call (3 in one run) though nothing was replaced: the
    line now says a replacement that happened, once, and the refused token is POSTed once."""
    with running(auth_mode="oauth") as (emulator, url):
        first = emulator.issue_tokens()["refresh_token"]
        with oauth_client(emulator, url, engine, refresh_token=first) as client:
            client.fetch_account()  # seeds the store from the configured token
        stored_before = stored(engine)
        emulator.clear_requests()
        with (
            capture_logs() as logs,
            oauth_client(emulator, url, engine, refresh_token="never-issued") as client,
        ):
            for _ in range(3):
                with pytest.raises(AmoAuthError, match="refused the refresh token"):
                    client.fetch_account()
        assert len(token_calls(emulator)) == 1  # refused (400 here, 401 on the audit's)
        assert [e["event"] for e in logs].count("amo_refresh_token_replaced") == 0
        after = stored(engine)
        # the refusal is remembered beside the pair (sync/amo/refused_refresh.py), the pair kept
        assert after.pop("refused_refresh_token")["fingerprint"]
        assert after == stored_before  # the working pair is kept


def test_the_token_endpoints_401_is_logged_as_a_refused_refresh_token(engine: Engine) -> None:
    """The soak audit: the token endpoint's 401 was logged as "amoCRM refused the access token
    (401)", though that request carried no access token: the refresh token was refused."""
    with running(auth_mode="oauth") as (emulator, url):
        seed(engine, emulator.issue_tokens())
        emulator.revoke_all_tokens()
        with (
            capture_logs() as logs,
            oauth_client(emulator, url, engine) as client,
            pytest.raises(AmoAuthError),
        ):
            client.fetch_account()
    failed = [e for e in logs if e["event"] == "amo_request_failed"]
    refresh = [e for e in failed if e["url"] == TOKEN_PATH]
    assert refresh, failed
    for entry in refresh:
        assert entry["error"].startswith("amoCRM's token endpoint refused the refresh token (401)")


def test_missing_tokens_tell_the_user_to_run_auth(engine: Engine) -> None:
    with (
        running(auth_mode="oauth") as (emulator, url),
        oauth_client(emulator, url, engine) as client,
        pytest.raises(AmoAuthError, match="amosync auth --code"),
    ):
        client.fetch_account()


def test_threads_refresh_once(engine: Engine) -> None:
    with running(auth_mode="oauth", latency_ms=50) as (emulator, url):
        seed(engine, emulator.issue_tokens())
        with oauth_client(emulator, url, engine) as client:
            client.fetch_account()
            emulator.expire_access_tokens()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda _: client.fetch_account(), range(16)))
        assert len(token_calls(emulator)) == 1


WORKER = """
import hashlib, json, sys, time
from sync.amo.client import AmoClient
from sync.amo.ratelimit import RateLimiter
from sync.config import AmoCrmConfig, DatabaseConfig, OAuthConfig, Secret
from sync.db.engine import create_engine
from sync.db.tokens import TokenStore

args = json.loads(sys.argv[1])
engine = create_engine(DatabaseConfig(url=Secret(args["db"]), schema="amocrm"))
oauth = OAuthConfig(client_id=args["client_id"], client_secret=Secret(args["secret"]),
                    redirect_uri=args["redirect"])
config = AmoCrmConfig(base_url=args["url"], max_rps=200.0, timeout_s=5.0, oauth=oauth)
client = AmoClient.connect(config, token_storage=TokenStore(engine),
                           limiter=RateLimiter(200, margin_s=0.0))
while time.time() < args["start_at"]:
    time.sleep(0.001)
client.fetch_account()
token = client.session.tokens.access_token()
print(hashlib.sha256(token.encode()).hexdigest())
client.close()
engine.dispose()
"""


def test_two_processes_refreshing_at_once_rotate_once(
    engine: Engine, db_config: DatabaseConfig
) -> None:
    with running(auth_mode="oauth", latency_ms=200) as (emulator, url):
        old = emulator.issue_tokens()
        seed(engine, old, age_s=900, ttl_s=1000)  # both processes find it due at start
        s = emulator.settings
        args = json.dumps(
            {
                "db": db_config.url.reveal(),
                "url": url,
                "client_id": s.client_id,
                "secret": s.client_secret,
                "redirect": s.redirect_uri,
                "start_at": time.time() + 2.0,
            }
        )
        env = {**os.environ, "PYTHONWARNINGS": "error"}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
        used = [out.strip().splitlines()[-1] for out, _ in outputs]
        calls = token_calls(emulator)
        assert [r["status"] for r in calls] == [200]  # one refresh between two processes
        final = stored(engine)["access_token"]
        assert used == [hashlib.sha256(final.encode()).hexdigest()] * 2
        assert [r["status"] for r in emulator.requests() if r["path"] != TOKEN_PATH] == [200, 200]


def test_lock_waiter_uses_the_pair_another_holder_saved(engine: Engine) -> None:
    """Direct check of the store's lock: a second locker blocks, then sees the first's save."""
    store = TokenStore(engine)
    entered = threading.Event()
    seen: list[Any] = []

    def second() -> None:
        entered.wait(5)
        with store.locked() as row:
            seen.append(row.value)

    thread = threading.Thread(target=second)
    with store.locked() as row:
        thread.start()
        entered.set()
        time.sleep(0.3)
        assert seen == []  # still waiting for our lock
        row.save({"access_token": "a", "refresh_token": "r", "obtained_at": 1, "expires_at": 2})
    thread.join(5)
    assert seen == [{"access_token": "a", "refresh_token": "r", "obtained_at": 1, "expires_at": 2}]
