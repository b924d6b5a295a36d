"""AmoSession on an httpx.MockTransport: retry decisions, refresh on 401, halting, logging."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from sync.amo.query import absolute_url, encode_query
from sync.amo.ratelimit import RateLimiter
from sync.errors import (
    AmoAuthError,
    AmoBlockedError,
    AmoPaymentError,
    AmoTransientError,
    AmoWriteUnknownError,
)
from tests.unit.amo_helpers import TOKEN, FakeClock, Script, reply, session

OK = reply(200, {"_page": 1})
REQ = httpx.Request("GET", "http://127.0.0.1:9/")
HTML_429 = reply(429, b"<html>429 Too Many Requests</html>", {"content-type": "text/html"})


@pytest.mark.parametrize(
    "failure",
    [
        reply(500, {"status": 500, "detail": "x", "trace_id": "t"}),
        reply(502, b"<html>bad gateway</html>", {"content-type": "text/html"}),
        reply(504, b"<html>gateway timeout</html>", {"content-type": "text/html"}),
        reply(200, b'{"_page": 1, "_emb', {"content-type": "application/hal+json"}),
        HTML_429,
        httpx.ReadTimeout("slow", request=REQ),
        httpx.ConnectError("refused", request=REQ),
        httpx.RemoteProtocolError("peer closed connection", request=REQ),
    ],
)
def test_read_retries_transient_failures_then_succeeds(failure: object) -> None:
    script = Script(failure, failure, OK)  # type: ignore[arg-type]
    clock = FakeClock()
    result = session(script, clock=clock).send("GET", "/api/v4/contacts")
    assert result.data == {"_page": 1}
    assert len(script.requests) == 3
    assert len(clock.sleeps) == 2
    assert clock.sleeps[1] > clock.sleeps[0] * 0.9 or clock.sleeps[1] >= 0.5  # grows, jittered


def test_retries_are_bounded() -> None:
    script = Script(reply(500, {"detail": "down"}))
    clock = FakeClock()
    with pytest.raises(AmoTransientError, match="internal error"):
        session(script, clock=clock, max_retries=3).send("GET", "/api/v4/contacts")
    assert len(script.requests) == 4
    assert len(clock.sleeps) == 3


def test_json_429_honours_retry_after_and_html_429_backs_off_from_a_second() -> None:
    json_429 = reply(429, {"title": "Too Many Requests", "status": 429, "retry_after": 3})
    clock = FakeClock()
    session(Script(json_429, OK), clock=clock).send("GET", "/x")
    assert 3 <= clock.sleeps[0] <= 4
    clock = FakeClock()
    session(Script(HTML_429, OK), clock=clock).send("GET", "/x")
    assert 1.0 <= clock.sleeps[0] <= 2.0


def test_429_pauses_every_thread_through_the_limiter() -> None:
    arrivals: list[tuple[str, float]] = []
    first_seen = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        arrivals.append((request.url.path, time.monotonic()))
        if request.url.path == "/a" and not first_seen.is_set():
            first_seen.set()
            return reply(429, {"title": "Too Many Requests", "status": 429, "retry_after": 0.4})
        return reply(200, {"ok": True})

    s = session(Script(handler), limiter=RateLimiter(1000, margin_s=0.0))
    worker = threading.Thread(target=s.send, args=("GET", "/a"))
    worker.start()
    first_seen.wait(5)
    deadline = time.monotonic() + 5
    while s.limiter.paused_for() == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    s.send("GET", "/b")  # another thread: must wait out the pause the 429 started
    worker.join(5)
    throttled_at = arrivals[0][1]
    other_at = next(t for path, t in arrivals if path == "/b")
    assert other_at - throttled_at >= 0.39  # retry_after 0.4 s, plus jitter


def test_403_html_halts_every_later_request_without_sending() -> None:
    blocked = reply(
        403, b"<html><title>403 Forbidden</title>nginx</html>", {"content-type": "text/html"}
    )
    script = Script(blocked, OK)
    s = session(script)
    with pytest.raises(AmoBlockedError, match="blocked"):
        s.send("GET", "/api/v4/contacts")
    with pytest.raises(AmoBlockedError):
        s.send("GET", "/api/v4/account")
    assert len(script.requests) == 1


def test_402_is_a_clear_payment_error_without_retry() -> None:
    script = Script(
        reply(402, {"title": "Payment Required", "status": 402, "detail": "Payment required"})
    )
    with pytest.raises(AmoPaymentError, match="not paid"):
        session(script).send("GET", "/api/v4/account")
    assert len(script.requests) == 1


class RotatingTokens:
    def __init__(self, good_after_refresh: bool) -> None:
        self.token = "first-token-AAAA"
        self.refreshes = 0
        self.good = good_after_refresh

    def access_token(self) -> str:
        return self.token

    def after_unauthorized(self, used: str) -> bool:
        self.refreshes += 1
        self.token = "second-token-BBBB"
        return True


def test_401_refreshes_once_then_succeeds() -> None:
    tokens = RotatingTokens(True)
    script = Script(reply(401, {"status": 401, "detail": "Unauthorized"}), OK)
    assert session(script, tokens=tokens).send("GET", "/x").data == {"_page": 1}
    assert tokens.refreshes == 1
    assert script.requests[1].headers["authorization"] == "Bearer second-token-BBBB"


def test_401_twice_is_a_clear_auth_error() -> None:
    tokens = RotatingTokens(False)
    script = Script(reply(401, {"status": 401, "detail": "Unauthorized"}))
    with pytest.raises(AmoAuthError, match="401"):
        session(script, tokens=tokens).send("GET", "/x")
    assert tokens.refreshes == 1
    assert len(script.requests) == 2


def test_401_with_a_long_lived_token_fails_at_once() -> None:
    script = Script(reply(401, {"status": 401, "detail": "Unauthorized"}))
    with pytest.raises(AmoAuthError):
        session(script).send("GET", "/x")
    assert len(script.requests) == 1


class LazyTokens:
    """Hands out the current token until told it was refused (as OAuthTokens does)."""

    def __init__(self) -> None:
        self.token = "first-token-AAAA"
        self.refreshes = 0

    def access_token(self) -> str:
        return self.token

    def after_unauthorized(self, used: str) -> bool:
        if used == self.token:
            self.refreshes += 1
            self.token = "second-token-BBBB"
        return self.token != used


def test_a_token_another_thread_saw_refused_is_never_sent() -> None:
    tokens = LazyTokens()
    script = Script(OK)
    s = session(script, tokens=tokens)
    s.gate.mark_dead("first-token-AAAA")  # another thread's request just got a 401 with it
    assert s.send("GET", "/x").data == {"_page": 1}
    assert [r.headers["authorization"] for r in script.requests] == ["Bearer second-token-BBBB"]
    assert tokens.refreshes == 1


def test_a_long_lived_token_refused_once_is_not_sent_again() -> None:
    script = Script(reply(401, {"status": 401, "detail": "Unauthorized"}), OK)
    s = session(script)
    with pytest.raises(AmoAuthError, match="401"):
        s.send("GET", "/x")
    with pytest.raises(AmoAuthError, match="not sent again"):
        s.send("GET", "/y")
    assert len(script.requests) == 1


def test_a_request_stopped_unsent_names_the_request_amocrm_refused() -> None:
    """An audit's last line named `GET /api/v4/account?…`, a request queued behind the 401 that
    never left; amoCRM only ever saw (and refused) the contacts request."""
    script = Script(reply(401, {"status": 401, "detail": "Unauthorized"}), OK)
    s = session(script)
    with pytest.raises(AmoAuthError):
        s.send("GET", "/api/v4/contacts", params={"page": 1})
    with pytest.raises(AmoAuthError, match="not sent again") as info:
        s.send("GET", "/api/v4/account", params={"with": "amojo_id"})
    assert "GET /api/v4/contacts?page=1 -> 401" in str(info.value)
    assert "account" not in str(info.value)
    assert len(script.requests) == 1


def test_a_429_cuts_the_allowed_rate_and_says_so() -> None:
    json_429 = reply(429, {"title": "Too Many Requests", "status": 429, "retry_after": 0.2})
    clock = FakeClock()
    limiter = RateLimiter(7, monotonic=clock.monotonic)
    with capture_logs() as logs:
        session(Script(json_429, OK), clock=clock, limiter=limiter).send("GET", "/x")
    warned = [e for e in logs if e["event"] == "amo_rate_limited"]
    assert len(warned) == 1
    assert warned[0]["log_level"] == "warning"
    assert warned[0]["allowed_rps"] == 0.5  # the first 429 of a burst cuts deep
    assert warned[0]["retry_after"] == 0.2
    assert warned[0]["path"] == "/x"
    assert limiter.allowed_rps < 7


@pytest.mark.parametrize(
    "failure",
    [
        reply(504, b"<html>gateway timeout</html>", {"content-type": "text/html"}),
        reply(500, {"detail": "x"}),
        httpx.ReadTimeout("slow", request=REQ),
        httpx.RemoteProtocolError("reset", request=REQ),
        reply(200, b'{"_embedded": {"cont', {"content-type": "application/hal+json"}),
    ],
)
def test_write_with_lost_answer_is_not_resent(failure: object) -> None:
    script = Script(failure, OK)  # type: ignore[arg-type]
    with pytest.raises(AmoWriteUnknownError):
        session(script).send("POST", "/api/v4/contacts", json=[{"name": "a"}], write=True)
    assert len(script.requests) == 1


@pytest.mark.parametrize("failure", [HTML_429, httpx.ConnectError("refused", request=REQ)])
def test_write_retries_failures_that_cannot_have_applied(failure: object) -> None:
    script = Script(failure, OK)  # type: ignore[arg-type]
    s = session(script)
    assert s.send("POST", "/api/v4/contacts", json=[{"name": "a"}], write=True).data == {"_page": 1}
    assert len(script.requests) == 2


def test_one_debug_event_per_request_and_no_token_anywhere() -> None:
    script = Script(reply(500, {"detail": f"echo Bearer {TOKEN}"}), OK)
    with capture_logs() as logs:
        session(script).send("GET", "/api/v4/contacts", params={"page": 2})
    done = [e for e in logs if e["event"] == "amo_request_completed"]
    assert [e["status"] for e in done] == [500, 200]
    assert all(e["method"] == "GET" and e["path"] == "/api/v4/contacts" for e in done)
    assert all(isinstance(e["duration_ms"], float) for e in done)
    assert TOKEN not in json.dumps(logs, default=str)
    assert script.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_errors_and_reprs_never_show_the_token() -> None:
    script = Script(reply(401, {"detail": f"bad token {TOKEN}"}))
    s = session(script)
    with pytest.raises(AmoAuthError) as info:
        s.send("GET", "/x")
    assert TOKEN not in str(info.value) + repr(info.value) + info.value.body_excerpt
    assert TOKEN not in repr(s) + repr(s.tokens) + repr(s.config)


def test_timeout_comes_from_config() -> None:
    s = session(Script(OK), timeout_s=7.5)
    assert s._http.timeout.read == 7.5
    assert s._http.timeout.connect == 7.5


def test_encode_query_php_style() -> None:
    query = encode_query(
        {
            "filter": {"id": [1, 2], "updated_at": {"from": 5, "to": 9}},
            "with": ["leads", "customers"],
            "order": {"updated_at": "asc"},
            "query": "a b&c",
            "skip": None,
        }
    )
    assert query == (
        "filter[id][]=1&filter[id][]=2&filter[updated_at][from]=5&filter[updated_at][to]=9"
        "&with=leads,customers&order[updated_at]=asc&query=a%20b%26c"
    )


def test_encode_query_escapes_what_is_not_ascii_letters_and_digits() -> None:
    query = encode_query({"contact_id": [7, 8], "q": "Иван٣", "n": "²", "x": "a_b", "ок": "1"})
    assert query == (
        "contact_id[]=7&contact_id[]=8&q=%D0%98%D0%B2%D0%B0%D0%BD%D9%A3&n=%C2%B2&x=a_b"
        "&%D0%BE%D0%BA=1"
    )


@pytest.mark.parametrize(
    "base", ["http://127.0.0.1:9", "https://x.amocrm.ru/sub", "http://[::1]:8"]
)
@pytest.mark.parametrize(
    "url", ["/api/v4/contacts?page=2&order[id]=asc", "/p?q=a%20b&z=И", "//h/p", "https://o/p", "p"]
)
def test_absolute_url_is_httpx_join(base: str, url: str) -> None:
    """The session hands httpx the joined URL (parsed once): the very URL httpx's join gives."""
    client = httpx.Client(base_url=base, transport=httpx.MockTransport(lambda r: OK))  # no TLS
    joined = client.build_request("GET", url).url
    ours = client.build_request("GET", absolute_url(str(client.base_url), url)).url
    assert (str(ours), ours.raw_path) == (str(joined), joined.raw_path)


def test_lost_create_is_not_resent_when_amocrm_ignores_order() -> None:
    """Reconciliation needs `order[id]=desc`; a server ignoring it must not get a blind resend."""
    from sync.amo.client import AmoClient
    from sync.errors import AmoWriteUnknownError
    from tests.unit.amo_helpers import config

    ascending = {"_page": 1, "_embedded": {"contacts": [{"id": 1}, {"id": 2}]}}

    def server(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            raise httpx.ReadError("connection reset by peer", request=request)
        return reply(200, ascending)

    script = Script(server)
    client = AmoClient(config(), None, transport=script.transport, limiter=RateLimiter(1000))
    client.session.clock = FakeClock()
    with pytest.raises(AmoWriteUnknownError):
        client.create_contacts([{"name": "x"}])
    assert [r.method for r in script.requests].count("POST") == 1


def test_a_request_whose_every_token_dies_before_it_leaves_gives_up_with_one_line() -> None:
    class Doomed(LazyTokens):
        """Each new token is refused (by other threads' 401s) before this request can leave."""

        def __init__(self) -> None:
            super().__init__()
            self.session: Any = None

        def access_token(self) -> str:
            self.session.gate.mark_dead(self.token)  # as another thread's 401 lands
            return self.token

        def after_unauthorized(self, used: str) -> bool:
            self.token = f"token-{self.refreshes}"
            self.refreshes += 1
            return True

    tokens = Doomed()
    script = Script(OK)
    s = session(script, tokens=tokens)
    tokens.session = s
    with pytest.raises(AmoAuthError, match="401"):
        s.send("GET", "/x")
    assert script.requests == []


def test_an_answer_that_becomes_an_error_names_its_url_without_secrets() -> None:
    """A success is classified without its URL (redacting a chat lookup's long URL cost ~2% of
    a pull's CPU); a 2xx whose body is broken still becomes an error naming the URL, redacted."""
    broken = reply(200, b'{"_page": 1, "_emb', {"content-type": "application/hal+json"})
    script = Script(broken)
    with pytest.raises(AmoTransientError) as info:
        session(script, max_retries=0).send("GET", "/api/v4/x", params={"code": "s3cr3t"})
    assert info.value.url == "/api/v4/x?code=***"
    assert info.value.status == 200
    assert session(Script(OK)).send("GET", "/x", params={"code": "s3cr3t"}).data == {"_page": 1}
