"""One logical request to amoCRM: rate budget, token, bounded retries, classification, logging.
Everything sent to amoCRM passes through `AmoSession.send` (API calls) or `.exchange_token` (the
OAuth endpoint). Safe to use from several threads at once; `stop` ends every wait at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from sync.amo.auth import TOKEN_PATH, TokenProvider
from sync.amo.backoff import Backoff, Stopping, pause
from sync.amo.budget import MAX_429_PER_MINUTE as MAX_429
from sync.amo.gate import DeadTokenError, RequestWatch, TokenGate
from sync.amo.margin import request_kind
from sync.amo.query import Params, absolute_url, encode_query, host_port
from sync.amo.ratelimit import RateLimiter, Slot
from sync.amo.refusal import NOT_SENT_AGAIN, refusal
from sync.amo.responses import Outcome, classify, classify_exception, dying_tokens, token_refusal
from sync.amo.tls import tls_context
from sync.clock import Clock, SystemClock
from sync.config import AmoCrmConfig
from sync.errors import AmoAuthError, AmoError, AmoTransientError, AmoWriteUnknownError
from sync.logs import get_logger, log_failure, redact_text

log = get_logger("sync.amo")

USER_AGENT = "amocrm-sync/0.1 (+httpx)"
MAX_UNSENT = 3  # a request stopped this often because its token died meanwhile gives up


@dataclass(frozen=True)
class Reply:
    """A successful answer: status and decoded JSON (`None` for 204 No Content)."""

    status: int
    data: Any
    headers: Mapping[str, str]


class AmoSession:
    """The HTTP core shared by every amoCRM call of one client."""

    def __init__(
        self,
        config: AmoCrmConfig,
        tokens: TokenProvider | None,
        limiter: RateLimiter,
        *,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.limiter = limiter
        self.clock = clock or SystemClock()
        self.backoff = backoff or Backoff()
        self.max_retries = config.max_retries
        connect = min(10.0, config.timeout_s)
        self._http = httpx.Client(
            base_url=config.base_url.rstrip("/"),
            timeout=httpx.Timeout(config.timeout_s, connect=connect),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            transport=transport,
            verify=tls_context(),  # httpx's default, built once per process (sync.amo.tls)
            follow_redirects=False,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )
        self.host = host_port(config.base_url)  # named by network errors
        self._sent = 0  # requests that went out (headers sent), retries and refreshes included
        self.gate = TokenGate()  # access tokens a 401 refused: not sent again (see its probe)
        self._sent_lock = threading.Lock()
        self._reached: list[Future[None]] = []  # resolved when a request's headers are out
        # called before every attempt of a write (retries included); raises to stop it. Push
        # sets it to "is the push lock still ours?" so no retry goes out after the lock is gone
        self.write_guard: Callable[[], None] | None = None
        self.writes_tried = 0  # write attempts begun past the guard (each one may have left)
        self.stopping = Stopping()  # set by `stop`: waits end (at a final stop nothing is sent)
        self.retry_notes: list[Callable[[str], None]] = []  # told each retry but a 429's, why

    def __repr__(self) -> str:
        return f"AmoSession(base_url={self.config.base_url!r})"

    @property
    def requests_sent(self) -> int:
        """Requests this session has sent to amoCRM so far (each retry is one more)."""
        with self._sent_lock:
            return self._sent

    def close(self) -> None:
        self._http.close()

    def stop(self, reason: str = "stopping", *, final: bool = False) -> None:
        """The process is stopping: every request waiting for a start or a retry gives up (and
        with `final` every one not yet sent); their `AmoStoppedError` begins with `reason`."""
        self.stopping.stop(reason, final=final)
        self.limiter.wake()

    def next_written(self) -> Future[None]:
        """A future resolved once a request's headers have been written after this call: the
        connection to amoCRM is up (TCP, TLS and all). Never resolved by a transport without
        an HTTP trace (tests): a caller falls back to the first answer."""
        future: Future[None] = Future()
        with self._sent_lock:
            self._reached = [f for f in self._reached if not f.done()]
            self._reached.append(future)
        return future

    def _written(self, slot: Slot) -> None:
        """A request's headers are out: count it from now, and amoCRM is reachable."""
        self.limiter.sent(slot)
        with self._sent_lock:
            reached, self._reached = self._reached, []
        for future in reached:
            if future.set_running_or_notify_cancel():
                future.set_result(None)

    # --- API calls ---------------------------------------------------------------------------

    def send(
        self,
        method: str,
        path: str,
        *,
        params: Params = None,
        json: Any = None,
        write: bool = False,
    ) -> Reply:
        """Send one API request, retrying what is safe to retry.

        Reads retry every transient failure. Writes retry only failures that cannot have been
        applied (429, connect errors, a 401 fixed by a refresh); a failure after which the write
        may have been applied raises `AmoWriteUnknownError` for the caller to reconcile.
        """
        url = f"{path}?{encode_query(params)}" if params else path
        refreshed = False
        attempt = unsent = 0
        while True:
            self.stopping.check()  # a final stop (SIGTERM): nothing more is sent
            if write and self.write_guard is not None:
                self.write_guard()
            self.writes_tried += write
            tried = self._attempt(method, url, json, write)
            outcome = tried.outcome
            if outcome.unsent:  # stopped before sending: its token died while it waited
                unsent += 1
                self._give_up_after_unsent(unsent, method, url, tried.token)
                continue
            if outcome.error is None:
                return Reply(outcome.data.status, outcome.data.body, outcome.data.headers)
            if outcome.refresh and not refreshed and self._refresh(tried.token):
                refreshed = True
                continue
            if outcome.refresh and refreshed and outcome.error is not None:
                raise dying_tokens(outcome.error)  # the refresh worked: not amoCRM's words
            self._give_up_unless_retryable(tried, attempt, write)
            self._sleep_before_retry(outcome, attempt, tried.slot)
            attempt += 1

    def _give_up_after_unsent(self, unsent: int, method: str, url: str, token: Any) -> None:
        if unsent > MAX_UNSENT:
            reason = "amoCRM refused each access token this request was given before it could leave"
            raise refusal(self.gate, token, method, url, reason)

    def _give_up_unless_retryable(self, tried: _Try, attempt: int, write: bool) -> None:
        outcome, error = tried.outcome, tried.outcome.error
        assert error is not None
        if outcome.halt:
            if self.limiter.halt(error):  # said once: requests already out get it too
                log_failure(log, "amo_ip_blocked", str(error))
            raise error
        if write and outcome.applied_unknown:
            raise AmoWriteUnknownError(
                f"write outcome unknown: {error.reason}",
                method=error.method,
                url=error.url,
                status=error.status,
                body_excerpt=error.body_excerpt,
            ) from error
        if not outcome.retry or attempt >= self.max_retries:
            raise error
        asked = error.retry_after if isinstance(error, AmoTransientError) else None
        if error.status == 429 and asked is not None and asked > self.backoff.max_pause_s:
            self._throttled(tried.slot, self.backoff.max_pause_s, asked, error)  # all hold back
            raise AmoTransientError(  # a one-shot command: say so rather than sit for minutes
                f"amoCRM rate limit: asked to wait {asked:g} s before the next request, longer "
                f"than a command waits ({self.backoff.max_pause_s:g} s); run it again later (the "
                "daemon waits it out)", retry_after=asked, method=error.method, url=error.url,
                status=error.status, body_excerpt=error.body_excerpt,
            )  # fmt: skip

    def _sleep_before_retry(self, outcome: Outcome, attempt: int, slot: Slot) -> None:
        error = outcome.error
        retry_after = error.retry_after if isinstance(error, AmoTransientError) else None
        throttled = error is not None and error.status == 429
        delay = self.backoff.delay(attempt, throttled=throttled, retry_after=retry_after)
        if throttled:  # every thread and process of the account slows down, not just this one
            self._throttled(slot, delay, retry_after, error)
        else:  # a 429 is told by amo_rate_limited, with the rate; anything else is told here
            log.warning("amo_request_retried", retry=f"{attempt + 1}/{self.max_retries}",
                        delay_s=round(delay, 1), error=str(error))  # fmt: skip
            for note in list(self.retry_notes):  # a run's record of it (sync.db.retries)
                note(str(error))
        pause(self.clock, self.stopping, delay)

    def _throttled(
        self, slot: Slot, delay: float, retry_after: float | None, error: AmoError | None
    ) -> None:
        result = self.limiter.throttled(slot, delay)
        log.warning(
            "amo_rate_limited",
            allowed_rps=round(result.rate, 2),
            pause_s=round(result.pause_s, 1),
            retry_after=retry_after,
            last_minute=result.recent,
            path=urlsplit(error.url or "").path if error is not None else None,
        )
        if result.cooling:
            log.warning(
                "amo_rate_limit_cooldown", pause_s=round(result.pause_s, 1), last_minute=MAX_429
            )

    def _refresh(self, used: str | None) -> bool:
        if self.tokens is None or used is None:
            return False
        return self.tokens.after_unauthorized(used)

    def _attempt(self, method: str, url: str, body: Any, write: bool) -> _Try:
        token, slot = self._token_and_slot(method, url)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        outcome = self._exchange(
            method, url, body, headers, write, slot=slot, token=token, stopping=self.stopping
        )
        return _Try(outcome, token, slot)

    def _token_and_slot(self, method: str, url: str) -> tuple[str | None, Slot]:
        """A token not known dead, then a start; if the token dies while the request waits for
        its start, that start goes unused and the request waits for the refreshed token."""
        while True:
            token = self._live_token(method, url)
            slot = self.limiter.acquire(self.stopping)
            if not self.gate.is_dead(token):
                return token, slot

    def _live_token(self, method: str, url: str) -> str | None:
        """The token to send: never one a 401 refused. Waits behind a refresh in progress."""
        if self.tokens is None:
            return None
        token = self.tokens.access_token()
        for _ in range(MAX_UNSENT):
            if not self.gate.is_dead(token):
                return token
            if not self.tokens.after_unauthorized(token):
                break
            token = self.tokens.access_token()
        raise refusal(self.gate, token, method, url, NOT_SENT_AGAIN)

    def _exchange(
        self,
        method: str,
        url: str,
        body: Any,
        headers: Mapping[str, str],
        write: bool,
        *,
        slot: Slot,
        token: str | None = None,
        stopping: Stopping | None = None,
        grant: str | None = None,
    ) -> Outcome:
        started = time.monotonic()
        if self.gate.is_dead(token):  # refused while this request was being prepared
            return Outcome(unsent=True)
        # counted in the rate window from when its headers start, then from when they are out
        # (the later, the closer to when amoCRM counts it)
        watch = RequestWatch(self.gate, token, lambda: self._left(slot, stopping),
                             lambda: self._written(slot), (method, url))  # fmt: skip
        target = absolute_url(str(self._http.base_url), url)  # parsed once (httpx: twice)
        request = self._http.build_request(
            method, target, json=body, headers=headers, extensions={"trace": watch.trace}
        )
        try:
            # streamed and joined here, so the body is not cached on the Response: httpx's
            # Response sits in a reference cycle, and a cached 400 KB page would live until
            # the cyclic collector runs (rarely, during a pull: see sync.heap)
            response = self._http.send(request, stream=True)
            self.limiter.answered(slot, request_kind(method, url))  # its TTFB: the margin
            try:
                raw = b"".join(response.iter_bytes())
            finally:
                response.close()
        except DeadTokenError:
            return Outcome(unsent=True)
        except httpx.HTTPError as exc:
            self._log(method, url, None, started, error=type(exc).__name__)
            error = classify_exception(method, redact_text(url), exc, write=write, host=self.host)
            return _failed(error)
        finally:
            watch.release()
        status = response.status_code
        self._log(method, url, status, started)
        # transports without a trace (tests) learn it here
        self.gate.answered(token, status, (method, url))
        # a success carries no URL: it is redacted (regular expressions over a chat lookup's
        # 6 KB of ids, ~2% of a pull's CPU) only for an answer that becomes an error
        outcome = classify(method, "", status, response.headers, raw) if status < 300 else None
        if outcome is None or outcome.error is not None:
            outcome = classify(
                method, redact_text(url), status, response.headers, raw, write=write, grant=grant
            )
        if outcome.error is None:
            data = _Answer(response.status_code, outcome.data, response.headers)
            return Outcome(data=data)
        return _failed(outcome)

    def _left(self, slot: Slot, stopping: Stopping | None) -> None:
        """The request's headers are being written: count it, from now, in the rate window
        (after waiting for another start if its shared start passed meanwhile)."""
        self.limiter.leaving(slot, stopping)
        with self._sent_lock:
            self._sent += 1

    def _log(
        self, method: str, url: str, status: int | None, started: float, error: str | None = None
    ) -> None:
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        log.debug("amo_request_completed", method=method, path=redact_text(urlsplit(url).path),
                  status=status, duration_ms=duration_ms, error=error)  # fmt: skip

    # --- the OAuth token endpoint ---------------------------------------------------------------

    def exchange_token(self, body: Mapping[str, str]) -> Mapping[str, Any]:
        """POST to `/oauth2/access_token`; a network failure is retried once with the same body.

        Re-sending the same refresh token is safe: amoCRM keeps it valid until its successor is
        used. Any refusal is an `AmoAuthError` that names amoCRM's hint but never a secret.
        """
        last: AmoError | None = None
        grant = str(body.get("grant_type", ""))  # a 401 names it, not an access token
        for attempt in range(2):
            slot = self.limiter.acquire()
            outcome = self._exchange(
                "POST", TOKEN_PATH, dict(body), {}, False, slot=slot, grant=grant
            )
            if outcome.error is None:
                data = outcome.data.body
                if isinstance(data, Mapping):
                    return data
                raise AmoAuthError("amoCRM's token endpoint returned no token pair")
            last = outcome.error
            if outcome.halt:
                self.limiter.halt(last)
                raise last
            if not outcome.retry or attempt == 1:
                break
            delay = self.backoff.delay(attempt, throttled=last.status == 429)
            if last.status == 429:
                self._throttled(slot, delay, None, last)
            else:
                log.warning(
                    "amo_request_retried", retry="1/1", delay_s=round(delay, 1), error=str(last)
                )
            self.clock.sleep(delay)
        assert last is not None
        if isinstance(last, AmoTransientError):
            raise last
        refused = token_refusal(grant, last.reason)
        raise AmoAuthError(refused, method="POST", url=TOKEN_PATH, status=last.status,
                           body_excerpt=last.body_excerpt) from last  # fmt: skip


def _failed(outcome: Outcome) -> Outcome:
    """Log a failed request's whole (redacted) URL at debug level (its error cuts it short)."""
    error = outcome.error
    if error is not None:
        log.debug("amo_request_failed", method=error.method, url=error.url, error=error.reason)
    return outcome


@dataclass(frozen=True)
class _Answer:
    status: int
    body: Any
    headers: Mapping[str, str]


@dataclass(frozen=True)
class _Try:
    outcome: Outcome
    token: str | None
    slot: Slot
