"""Token refresh without waste: once a 401 has refused a token, no request carries it again, and
the requests queued meanwhile go out with the refreshed one. Against the emulator's "an access
token dies after N requests" (a token amoCRM kills before its stated expiry), many threads."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from sync.amo.backoff import Backoff
from sync.amo.client import AmoClient
from sync.amo.ratelimit import RateLimiter
from sync.db.tokens import TokenStore
from tests.integration.amo_emulator import FAST_BACKOFF, amo_config, oauth_config, running
from tests.integration.test_amo_auth import TOKEN_PATH, seed


class SendRecorder(httpx.BaseTransport):
    """Real HTTP underneath; records, in one order, when a request's headers start to go out
    (with its token) and when a 401 for a token has been read (after the client's own trace
    hook saw it). A request recorded as sent after its token's 401 went out with a token the
    client already knew was dead."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.events: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        hook = request.extensions.get("trace")

        def trace(event: str, info: dict[str, Any]) -> None:
            if hook is not None:
                hook(event, info)  # the client's own hook first: it may stop the request
            if event.endswith("send_request_headers.started"):
                self._record("sent", token)
            answer = info.get("return_value")
            if event.endswith("receive_response_headers.complete") and answer[1] == 401:
                self._record("refused", token)

        request.extensions["trace"] = trace
        return self.inner.handle_request(request)

    def _record(self, kind: str, token: str) -> None:
        if token:
            with self._lock:
                self.events.append((kind, token))

    def sent_after_refusal(self) -> list[str]:
        refused: set[str] = set()
        late = []
        for kind, token in self.events:
            if kind == "refused":
                refused.add(token)
            elif token in refused:
                late.append(f"…{token[-6:]}")
        return late

    def close(self) -> None:
        self.inner.close()


def test_after_a_401_no_request_carries_the_dead_token(engine: Engine) -> None:
    # a token lives for 25 requests: several expiries, but each new token outlives the retries
    # of the requests its predecessor refused (6 threads), as a day-long token always does
    with running(auth_mode="oauth", latency_ms=40, token_max_requests=25) as (emulator, url):
        seed(engine, emulator.issue_tokens())
        recorder = SendRecorder()
        config = amo_config(url, oauth=oauth_config(emulator), max_rps=40.0)
        client = AmoClient.connect(
            config,
            token_storage=TokenStore(engine),
            limiter=RateLimiter(config.max_rps),
            backoff=Backoff(**FAST_BACKOFF),
            transport=recorder,
        )
        with client, ThreadPoolExecutor(6) as pool:
            accounts = list(pool.map(lambda _: client.fetch_account(), range(90)))
        log = emulator.requests()
    assert len(accounts) == 90
    assert recorder.sent_after_refusal() == []
    refused = {token for kind, token in recorder.events if kind == "refused"}
    assert len(refused) >= 3  # the knob really bit
    # one refresh per dead token, however many threads were waiting for it
    assert len([r for r in log if r["path"] == TOKEN_PATH]) == len(refused)
    # the server saw each token die once, and only requests already under way hit it after
    per_token = Counter(r["token"] for r in log if r["status"] == 401)
    assert all(count <= 6 for count in per_token.values())


class DiesOnTheWayOut(httpx.BaseTransport):
    """Marks the first request's token dead the instant the request reaches the transport, as
    if another thread's 401 were read right then: after every check the session makes before
    handing the request over, before a byte of it is written."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.client: AmoClient | None = None
        self.killed: str | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.killed is None and token and self.client is not None:
            self.killed = token
            self.client.session.gate.mark_dead(token)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_a_token_refused_while_its_request_is_being_written_never_leaves(engine: Engine) -> None:
    with running(auth_mode="oauth") as (emulator, url):
        first = emulator.issue_tokens()
        seed(engine, first)
        transport = DiesOnTheWayOut()
        config = amo_config(url, oauth=oauth_config(emulator))
        client = AmoClient.connect(config, token_storage=TokenStore(engine),
                                   limiter=RateLimiter(100), transport=transport)  # fmt: skip
        transport.client = client
        with client:
            client.fetch_account()  # stopped before sending, refreshed, sent with the new token
            client.fetch_account()  # the connection pool is none the worse for it
        log = emulator.requests()
    assert transport.killed == first["access_token"]
    assert [(r["path"], r["status"]) for r in log] == [
        (TOKEN_PATH, 200),
        ("/api/v4/account", 200),
        ("/api/v4/account", 200),
    ]
