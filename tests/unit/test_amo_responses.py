"""Tables of (status, headers, body) → error class and retry decision, through real HTTP parsing.

Each row goes through `AmoSession` on an `httpx.MockTransport`, so header parsing, body reading
and classification are exercised together; `classify` alone is pinned by the same table.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from sync.amo.responses import classify, classify_exception, excerpt, validation_errors
from sync.errors import (
    AmoAuthError,
    AmoBlockedError,
    AmoError,
    AmoPaymentError,
    AmoRejectedError,
    AmoTransientError,
)

JSON = {"content-type": "application/problem+json"}
HTML = {"content-type": "text/html"}
NGINX_403 = (
    b"<html><head><title>403 Forbidden</title></head><body><center>nginx</center></body></html>"
)
HTML_429 = b"<html><body><h1>429 Too Many Requests</h1></body></html>"
HTML_504 = b"<html><body><h1>504 Gateway Time-out</h1></body></html>"


def problem(status: int, **extra: Any) -> bytes:
    return json.dumps(
        {
            "title": "x",
            "type": f"https://httpstatus.es/{status}",
            "status": status,
            "detail": "d",
            **extra,
        }
    ).encode()


VALIDATION = json.dumps(
    {
        "validation-errors": [
            {
                "request_id": "3",
                "errors": [
                    {
                        "code": "NotSupportedChoice",
                        "path": "custom_fields_values.0.field_id",
                        "detail": "The value you selected is not a valid choice.",
                    }
                ],
            },
            {
                "request_id": "7",
                "errors": [{"code": "InvalidType", "path": "name", "detail": "bad"}],
            },
        ],
        "title": "Bad Request",
        "type": "https://httpstatus.es/400",
        "status": 400,
        "detail": "Request validation failed",
    }
).encode()

# status, headers, body, write, error class (None = success), retry, applied_unknown, extra
TABLE: list[tuple[int, dict[str, str], bytes, bool, type[AmoError] | None, bool, bool]] = [
    (200, {"content-type": "application/hal+json"}, b'{"_page": 1}', False, None, False, False),
    (204, {}, b"", False, None, False, False),
    (200, JSON, b'{"_page": 1, "_embedded": {"conta', False, AmoTransientError, True, False),
    (200, JSON, b'{"_page": 1, "_embedded": {"conta', True, AmoTransientError, True, True),
    (200, HTML, b"<html>oops</html>", False, AmoTransientError, True, False),
    (429, JSON, problem(429, retry_after=2), False, AmoTransientError, True, False),
    (429, JSON, problem(429, retry_after=2), True, AmoTransientError, True, False),
    (429, HTML, HTML_429, False, AmoTransientError, True, False),
    (429, JSON, problem(429, retry_after=100000), False, AmoTransientError, False, False),
    (401, JSON, problem(401), False, AmoAuthError, False, False),
    (402, JSON, problem(402), True, AmoPaymentError, False, False),
    (403, HTML, NGINX_403, False, AmoBlockedError, False, False),
    (403, {}, NGINX_403, True, AmoBlockedError, False, False),
    (403, JSON, problem(403), False, AmoAuthError, False, False),
    (400, JSON, VALIDATION, True, AmoRejectedError, False, False),
    (
        400,
        JSON,
        problem(400, detail="Request data can not be empty"),
        True,
        AmoRejectedError,
        False,
        False,
    ),
    (404, JSON, problem(404), False, AmoError, False, False),
    (422, JSON, problem(422, detail="Limit 250 per page"), True, AmoError, False, False),
    (500, JSON, problem(500, trace_id="abc"), False, AmoTransientError, True, False),
    (500, JSON, problem(500, trace_id="abc"), True, AmoTransientError, True, True),
    (502, HTML, b"<html>502 Bad Gateway</html>", False, AmoTransientError, True, False),
    (503, HTML, b"", False, AmoTransientError, True, False),
    (504, HTML, HTML_504, False, AmoTransientError, True, False),
    (504, HTML, HTML_504, True, AmoTransientError, True, True),
    (301, {"location": "https://elsewhere"}, b"", False, AmoError, False, False),
]


@pytest.mark.parametrize(("status", "headers", "body", "write", "error", "retry", "unknown"), TABLE)
def test_classify_table(status, headers, body, write, error, retry, unknown) -> None:
    outcome = classify("GET", "/api/v4/contacts", status, headers, body, write=write)
    if error is None:
        assert outcome.error is None
        return
    assert type(outcome.error) is error
    assert outcome.retry is retry
    assert outcome.applied_unknown is unknown
    assert outcome.error.status == status
    assert outcome.halt is (error is AmoBlockedError)
    assert outcome.refresh is (status == 401)


def test_json_retry_after_is_read_and_html_429_has_none() -> None:
    json_429 = classify("GET", "/x", 429, JSON, problem(429, retry_after=3)).error
    html_429 = classify("GET", "/x", 429, HTML, HTML_429).error
    header_429 = classify("GET", "/x", 429, {"retry-after": "4"}, b"").error
    assert isinstance(json_429, AmoTransientError)
    assert json_429.retry_after == 3
    assert isinstance(html_429, AmoTransientError)
    assert html_429.retry_after is None
    assert isinstance(header_429, AmoTransientError)
    assert header_429.retry_after == 4


def test_validation_errors_map_by_request_id() -> None:
    outcome = classify("POST", "/api/v4/contacts", 400, JSON, VALIDATION, write=True)
    assert isinstance(outcome.error, AmoRejectedError)
    assert set(outcome.error.errors_by_request_id) == {"3", "7"}
    assert outcome.error.errors_by_request_id["3"][0]["path"] == "custom_fields_values.0.field_id"
    assert "Request validation failed" in str(outcome.error)


def test_validation_errors_tolerate_odd_shapes() -> None:
    assert validation_errors({"validation-errors": "nope"}) == {}
    assert validation_errors([1, 2]) == {}
    assert validation_errors({"validation-errors": [{"request_id": 0, "errors": None}, 5]}) == {
        "0": []
    }


def test_error_excerpt_is_short_and_redacted() -> None:
    body = b'{"detail": "Bearer abc.def.ghi leaked", "x": "' + b"y" * 2000 + b'"}'
    outcome = classify("GET", "/x", 500, JSON, body)
    assert outcome.error is not None
    assert "abc.def.ghi" not in outcome.error.body_excerpt
    assert len(outcome.error.body_excerpt) < 400


def test_excerpt_of_a_huge_body_reads_only_its_head() -> None:
    secret = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2lnbmF0dXJl"
    body = (b" " * 5000) + b'{"error": "' + secret.encode() + b'"}' + b"z" * 10_000_000
    text = excerpt(body)
    assert secret[:20] not in text
    assert text.endswith("…")
    assert len(text) <= 301


def test_excerpt_marks_a_body_cut_short_even_when_the_head_collapses() -> None:
    body = b"a" + b" " * 5000 + b"b"
    assert excerpt(body) == "a…"
    assert excerpt(b"  short  body ") == "short body"


def test_a_good_page_is_parsed_without_an_excerpt(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(body: bytes | str) -> str:
        raise AssertionError("excerpt taken of a successful answer")

    monkeypatch.setattr("sync.amo.responses.excerpt", refuse)
    assert classify("GET", "/x", 200, JSON, b'{"a": 1}').data == {"a": 1}


REQUEST = httpx.Request("POST", "http://127.0.0.1/api/v4/contacts")
TRANSPORT_TABLE = [
    (httpx.ConnectError("refused", request=REQUEST), True, False),
    (httpx.ConnectTimeout("slow", request=REQUEST), True, False),
    (httpx.PoolTimeout("pool", request=REQUEST), True, False),
    (httpx.ReadTimeout("slow", request=REQUEST), True, True),
    (httpx.WriteTimeout("slow", request=REQUEST), True, True),
    (httpx.ReadError("reset by peer", request=REQUEST), True, True),
    (httpx.RemoteProtocolError("incomplete chunked read", request=REQUEST), True, True),
]


@pytest.mark.parametrize(("exc", "retry", "unknown_for_writes"), TRANSPORT_TABLE)
def test_transport_errors(exc: httpx.HTTPError, retry: bool, unknown_for_writes: bool) -> None:
    read = classify_exception("GET", "/x", exc)
    write = classify_exception("POST", "/x", exc, write=True)
    assert isinstance(read.error, AmoTransientError)
    assert read.retry is retry
    assert read.applied_unknown is False
    assert write.applied_unknown is unknown_for_writes
