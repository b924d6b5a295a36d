"""What an amoCRM answer means: pure functions from (status, headers, body) or a transport error
to an outcome — success, or an error plus the retry decision. No I/O here; the table tests in
`tests/unit/test_amo_responses.py` pin every row.

| answer                                  | error                 | retry (read) | write applied?  |
|-----------------------------------------|-----------------------|--------------|-----------------|
| 2xx with JSON / 204                     | —                     | —            | yes             |
| 2xx with broken or truncated JSON       | AmoTransientError     | yes          | maybe (unknown) |
| 429 (JSON `retry_after` or HTML)        | AmoTransientError     | yes, pause   | no              |
| 401                                     | AmoAuthError          | after refresh| no              |
| 402                                     | AmoPaymentError       | no           | no              |
| 403 HTML (nginx page)                   | AmoBlockedError       | no, halt all | no              |
| 403 JSON                                | AmoAuthError          | no           | no              |
| 400 (writes: `validation-errors`)       | AmoRejectedError      | no           | no              |
| other 3xx/4xx                           | AmoError              | no           | no              |
| 500, 502, 503, 504, other 5xx           | AmoTransientError     | yes          | maybe (unknown) |
| connect error / connect or pool timeout | AmoTransientError     | yes          | no (not sent)   |
| read/write timeout, reset, protocol err | AmoTransientError     | yes          | maybe (unknown) |

A transport failure's message names the host and port and what happened: `cannot connect to
amoCRM at crm.example.com:443: connection refused` (or `name not resolved (…)`, `TLS handshake
failed (…)`, `connection timed out`), `amoCRM at crm.example.com:443 gave no answer: connection
reset`.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from sync.errors import (
    AmoAuthError,
    AmoBlockedError,
    AmoError,
    AmoPaymentError,
    AmoRejectedError,
    AmoTransientError,
)
from sync.logs import redact_text

EXCERPT_CHARS = 300
# A JSON `retry_after` beyond this is not retried inside one call; the error surfaces. Up to it,
# the daemon waits `retry_after`; a one-shot command fails beyond `backoff.MAX_PAUSE_S`
# (docs/operations.md, "How long one 429 pauses").
MAX_RETRY_AFTER_S = 600.0


@dataclass(frozen=True)
class Outcome:
    """The meaning of one answer. `error` is None on success.

    `retry`: a new attempt may succeed. `applied_unknown`: for a write, the server may have
    applied it although we got no usable answer. `refresh`: a token refresh may help (401).
    `halt`: stop every request of the process (IP blocked). `unsent`: the request was stopped
    before a byte left, because its access token was refused meanwhile (try again, fresh token).
    """

    data: Any = None
    error: AmoError | None = None
    retry: bool = False
    applied_unknown: bool = False
    refresh: bool = False
    halt: bool = False
    unsent: bool = False


def excerpt(body: bytes | str) -> str:
    """A short, redacted, single-line piece of a body, for error messages and logs."""
    head = body[: EXCERPT_CHARS * 8]  # enough for the excerpt even with runs of whitespace
    text = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    # redact before cutting, so that a secret cut in half cannot slip past the patterns
    text = redact_text(" ".join(text.split()))
    if len(text) > EXCERPT_CHARS or len(head) < len(body):
        text = text[:EXCERPT_CHARS] + "…"
    return text


def _is_json(headers: Mapping[str, str], body: bytes) -> bool:
    ctype = headers.get("content-type", "").lower()
    return "json" in ctype or body.lstrip()[:1] in (b"{", b"[")


def _parse_json(body: bytes) -> tuple[bool, Any]:
    try:
        # orjson: a 250-contact page parses in a fraction of the stdlib's time, and parsing
        # holds the GIL that the page writers need (pull's ingest is CPU-bound here)
        data = orjson.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False, None
    # JSON can carry U+0000 only escaped; a byte search costs microseconds a page
    return True, (without_nul(data) if _NUL in body else data)


_NUL = b"\\u0000"


def without_nul(value: Any) -> Any:
    """`value` with every U+0000 dropped from its strings (keys too). PostgreSQL's text and
    jsonb cannot hold it, so amoCRM data that carries one (a contact's name, a custom field
    value) would fail every pull; dropped here, on the way in, for every column and for push's
    view of the remote contact alike (which then matches what the pull stored: no change)."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value


def classify(
    method: str,
    url: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    write: bool = False,
    grant: str | None = None,
) -> Outcome:
    """Turn one HTTP answer into an `Outcome`. `url` must already be free of secrets; `grant`:
    the token endpoint's `grant_type`, for an answer of that endpoint."""
    if status == 204:
        return Outcome(data=None)
    if 200 <= status < 300:
        ok, data = _parse_json(body)
        if ok:
            return Outcome(data=data)
    # only failures carry the context (an excerpt of a 400 KB page costs more than parsing it)
    where: dict[str, Any] = {
        "method": method,
        "url": url,
        "status": status,
        "body_excerpt": excerpt(body),
    }
    if 200 <= status < 300:
        err = AmoTransientError("amoCRM sent a broken or truncated JSON body", **where)
        return Outcome(error=err, retry=True, applied_unknown=write)
    if status == 429:
        return _too_many(headers, body, where)
    if status >= 500:
        err = AmoTransientError(_server_error_message(status), **where)
        return Outcome(error=err, retry=True, applied_unknown=write)
    return _client_error(status, headers, body, where, grant)


def _server_error_message(status: int) -> str:
    if status == 504:
        return "amoCRM gateway timeout (504): the request may be too heavy"
    if status in (502, 503):
        return f"amoCRM gateway error ({status})"
    return f"amoCRM internal error ({status})"


def _too_many(headers: Mapping[str, str], body: bytes, where: dict[str, Any]) -> Outcome:
    retry_after = _retry_after_header(headers)
    if _is_json(headers, body):
        ok, data = _parse_json(body)
        if ok and isinstance(data, dict):
            retry_after = _number(data.get("retry_after")) or retry_after
    if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
        err = AmoTransientError(
            f"amoCRM rate limit: asked to wait {retry_after:g} s", retry_after=retry_after, **where
        )
        return Outcome(error=err, retry=False)
    err = AmoTransientError("amoCRM rate limit exceeded (429)", retry_after=retry_after, **where)
    return Outcome(error=err, retry=True)


def _retry_after_header(headers: Mapping[str, str]) -> float | None:
    return _number(headers.get("retry-after"))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if number >= 0 else None
    return None


def _client_error(
    status: int, headers: Mapping[str, str], body: bytes, where: dict[str, Any], grant: str | None
) -> Outcome:
    is_json = _is_json(headers, body)
    ok, data = _parse_json(body) if is_json else (False, None)
    detail = _detail(data) if ok else ""
    if status == 401:  # at the token endpoint no access token was sent: name what was
        refused = "amoCRM refused the access token"
        if grant is not None:
            refused = f"amoCRM's token endpoint refused the {GRANTS.get(grant, 'token request')}"
        denied = AmoAuthError(f"{refused} (401){detail}", **where)
        return Outcome(error=denied, refresh=grant is None)
    if status == 402:
        return Outcome(error=AmoPaymentError("the amoCRM account is not paid (402)", **where))
    if status == 403 and not ok:
        message = (
            "amoCRM blocked this IP (403 page); stopping all requests — contact amoCRM support"
        )
        return Outcome(error=AmoBlockedError(message, **where), halt=True)
    if status == 403:
        return Outcome(error=AmoAuthError(f"amoCRM denied access (403){detail}", **where))
    if status == 400:
        errors = validation_errors(data) if ok else {}
        rejected = AmoRejectedError(
            f"amoCRM rejected the request (400){detail}", errors_by_request_id=errors, **where
        )
        return Outcome(error=rejected)
    return Outcome(error=AmoError(f"amoCRM answered {status}{detail}", **where))


def _detail(data: Any) -> str:
    if not isinstance(data, dict):
        return ""
    parts = [str(data[k]) for k in ("detail", "hint") if isinstance(data.get(k), str)]
    return f": {redact_text('; '.join(parts))}" if parts else ""


GRANTS = {"refresh_token": "refresh token", "authorization_code": "authorization code"}
REFRESH_REFUSED = "amoCRM's token endpoint refused the refresh token: "
REFRESH_REMEDY = "; configure a new refresh token or run `amosync auth --code CODE`"


def token_refusal(grant: str, reason: str) -> str:
    """What the token endpoint refused, named as such (its 401 is not about an access token),
    with amoCRM's own words and what to do about a refused refresh token."""
    _, colon, detail = reason.partition(": ")
    said = detail if colon else reason
    if grant == "refresh_token":
        return f"{REFRESH_REFUSED}{said}{REFRESH_REMEDY}"
    return f"amoCRM's token endpoint refused the authorization code: {said}"


def validation_errors(data: Any) -> dict[str, list[dict[str, str]]]:
    """amoCRM's `validation-errors` as {request_id: [{code, path, detail}, ...]}."""
    result: dict[str, list[dict[str, str]]] = {}
    if not isinstance(data, dict):
        return result
    items = data.get("validation-errors")
    if not isinstance(items, Sequence) or isinstance(items, str):
        return result
    for item in items:
        if not isinstance(item, dict):
            continue
        request_id = str(item.get("request_id", ""))
        errors = item.get("errors") if isinstance(item.get("errors"), list) else []
        cleaned = [
            {k: str(v) for k, v in e.items() if k in ("code", "path", "detail")}
            for e in errors or []
            if isinstance(e, dict)
        ]
        result.setdefault(request_id, []).extend(cleaned)
    return result


# --- transport errors (no HTTP answer at all) -------------------------------------------------

# Failures that happen before any byte of the request can have reached amoCRM.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
_TIMEOUTS: tuple[tuple[type[httpx.TimeoutException], str], ...] = (
    (httpx.ConnectTimeout, "connection timed out"),
    (httpx.ReadTimeout, "no answer in time (read timeout)"),
    (httpx.WriteTimeout, "sending the request timed out"),
    (httpx.PoolTimeout, "no free connection in time (pool timeout)"),
)


def classify_exception(
    method: str, url: str, exc: httpx.HTTPError, *, write: bool = False, host: str = ""
) -> Outcome:
    """Turn a transport failure (refused, unresolved, TLS, timeout, reset) into an `Outcome`
    whose message names `host` (`crm.example.com:443`) and what happened."""
    where: dict[str, Any] = {"method": method, "url": url, "status": None}
    at = f" at {host}" if host else ""
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return Outcome(error=AmoError(f"cannot reach amoCRM{at}: {network_reason(exc)}", **where))
    not_sent = isinstance(exc, _NOT_SENT)
    lead = f"cannot connect to amoCRM{at}" if not_sent else f"amoCRM{at} gave no answer"
    err = AmoTransientError(f"{lead}: {network_reason(exc)}", **where)
    return Outcome(error=err, retry=True, applied_unknown=write and not not_sent)


def network_reason(exc: BaseException) -> str:
    """What went wrong on the network, in words: `connection refused`, `name not resolved
    (…)`, `TLS handshake failed (…)`, `connection timed out`, `connection reset`, …"""
    for kind, text in _TIMEOUTS:
        if isinstance(exc, kind):
            return text
    for cause in _causes(exc):
        reason = _os_reason(cause)
        if reason:
            return reason
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the connection broke ({_first_line(exc)})"
    return f"{type(exc).__name__}: {_first_line(exc)}" if _first_line(exc) else type(exc).__name__


def _os_reason(error: BaseException) -> str | None:
    for kind, say in _OS_REASONS:
        if isinstance(error, kind):
            return say(error)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return None


def _tls_refused(error: BaseException) -> str:
    return (
        f"TLS certificate refused ({getattr(error, 'verify_message', None) or _first_line(error)})"
    )


# most specific first: each of these is an OSError too
_OS_REASONS: tuple[tuple[type[BaseException], Callable[[BaseException], str]], ...] = (
    (socket.gaierror, lambda e: f"name not resolved ({getattr(e, 'strerror', None) or e})"),
    (ssl.SSLCertVerificationError, _tls_refused),
    (
        ssl.SSLError,
        lambda e: f"TLS handshake failed ({getattr(e, 'reason', None) or _first_line(e)})",
    ),
    (ConnectionRefusedError, lambda _: "connection refused"),
    (ConnectionResetError, lambda _: "connection reset"),
)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def dying_tokens(error: AmoError) -> AmoAuthError:
    """A request's 401 for the token a refresh that worked had just given it: the new token
    died within a few requests. Said so, not with amoCRM's words ("Invalid user name or
    password"), which read as wrong credentials while the refresh token is fine."""
    return AmoAuthError(
        "amoCRM refused the new access token too, just after a refresh that worked: its tokens "
        "expire within a few requests (a very short token lifetime, or another client "
        "refreshing this integration's tokens)",
        method=error.method, url=error.url, status=error.status,
    )  # fmt: skip
