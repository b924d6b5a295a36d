"""Bounded lines: URLs cut to their path and first parameters, no line over 300 characters."""

from __future__ import annotations

import io
import json
import socket
import ssl

import httpx
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from sync.amo.responses import classify, classify_exception
from sync.config import LoggingConfig
from sync.errors import AmoBlockedError, AmoError, AmoWriteUnknownError
from sync.lines import LINE_LIMIT, URL_LIMIT, bound_line, bound_lines, cut_url
from sync.logs import configure_logging, get_logger

CHAT_IDS = range(20_000_001, 20_000_251)  # one page of contacts: 250 ids
CHAT_URL = "/api/v4/contacts/chats?" + "&".join(f"contact_id[]={i}" for i in CHAT_IDS)


def test_a_short_url_is_left_alone() -> None:
    url = "/api/v4/contacts?page=2&limit=250"
    assert cut_url(url) == url


def test_a_long_url_keeps_its_path_and_first_parameters_and_says_how_many_went() -> None:
    cut = cut_url(CHAT_URL)
    assert len(cut) <= URL_LIMIT
    assert cut.startswith("/api/v4/contacts/chats?contact_id[]=20000001&contact_id[]=20000002&")
    kept = cut.count("contact_id[]=")
    assert cut.endswith(f"…(+{250 - kept} more parameters)")


def test_a_url_whose_first_parameter_does_not_fit_keeps_its_path() -> None:
    url = "/api/v4/contacts?filter[name]=" + "x" * 500
    assert cut_url(url) == "/api/v4/contacts?…(1 parameters)"


def test_a_long_path_without_query_is_cut() -> None:
    cut = cut_url("/" + "a" * 400)
    assert len(cut) == URL_LIMIT
    assert cut.endswith("…")


@given(st.text(min_size=0, max_size=2000))
def test_every_cut_url_fits(url: str) -> None:
    assert len(cut_url(url)) <= URL_LIMIT


@given(st.text(min_size=0, max_size=2000), st.integers(min_value=1, max_value=400))
def test_bound_line_never_exceeds_its_limit(text: str, limit: int) -> None:
    bounded = bound_line(text, limit)
    assert len(bounded) <= limit
    assert bounded == text or bounded.endswith("…")


def test_bound_lines_cuts_each_line() -> None:
    text = "a" * 500 + "\nshort\n" + "b" * 400
    assert [len(line) for line in bound_lines(text).split("\n")] == [LINE_LIMIT, 5, LINE_LIMIT]


def test_the_ip_block_error_of_a_chat_lookup_is_one_bounded_line() -> None:
    html = b"<html><head><title>403 Forbidden</title></head><body>nginx</body></html>"
    outcome = classify("GET", CHAT_URL, 403, {"content-type": "text/html"}, html)
    error = outcome.error
    assert isinstance(error, AmoBlockedError)
    text = f"amosync: {error}"
    assert len(text) <= LINE_LIMIT
    assert "\n" not in text
    assert "blocked this IP" in text
    assert "GET /api/v4/contacts/chats?contact_id[]=20000001&" in text
    assert "more parameters) -> 403)" in text
    assert error.url == CHAT_URL  # the whole URL stays available for debug logging


def test_a_huge_amocrm_detail_is_cut_but_the_request_stays_named() -> None:
    error = AmoError(
        "amoCRM answered 418: " + "teapot " * 200, method="GET", url=CHAT_URL, status=418
    )
    assert len(str(error)) <= LINE_LIMIT - 20
    assert str(error).endswith("more parameters) -> 418)")


def test_a_lost_write_names_its_request_once() -> None:
    inner = AmoError(
        "amoCRM gateway timeout (504)", method="PATCH", url="/api/v4/contacts", status=504
    )
    wrapped = AmoWriteUnknownError(
        f"write outcome unknown: {inner.reason}", method="PATCH", url=inner.url, status=504
    )
    assert str(wrapped) == (
        "write outcome unknown: amoCRM gateway timeout (504) (PATCH /api/v4/contacts -> 504)"
    )


def test_an_error_without_an_answer_says_so() -> None:
    error = AmoError("cannot connect", method="GET", url="/api/v4/account", status=None)
    assert str(error) == "cannot connect (GET /api/v4/account no answer)"


def _logged(level: str, fmt: str) -> list[str]:
    stream = io.StringIO()
    configure_logging(LoggingConfig(level=level, format=fmt), stream)
    log = get_logger("sync.amo")
    error = classify("GET", CHAT_URL, 403, {"content-type": "text/html"}, b"<html>403</html>").error
    assert error is not None
    log.debug("amo_request_failed", method="GET", url=error.url, error=error.reason)
    log.error("amo_ip_blocked", error=str(error), detail="x" * 5000)
    structlog.reset_defaults()
    return stream.getvalue().splitlines()


def test_log_values_are_bounded_and_the_whole_url_is_logged_at_debug_only() -> None:
    lines = _logged("debug", "json")
    debug, error = (json.loads(line) for line in lines)
    assert debug["url"] == CHAT_URL  # debug level: the whole text
    assert all(len(value) <= LINE_LIMIT for value in error.values() if isinstance(value, str))
    assert len(_logged("info", "json")) == 1  # the debug event is not written at info


def test_console_log_lines_are_bounded() -> None:
    lines = _logged("info", "console")
    assert lines
    assert all(len(line) <= LINE_LIMIT for line in lines)
    assert "amo_ip_blocked" in lines[0]


def _chained(exc: httpx.HTTPError, cause: BaseException | None) -> httpx.HTTPError:
    exc.__cause__ = cause
    return exc


REQ = httpx.Request("GET", "https://crm.example.com/api/v4/account")


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (
            _chained(httpx.ConnectError("x", request=REQ), ConnectionRefusedError(111, "refused")),
            "cannot connect to amoCRM at crm.example.com:443: connection refused",
        ),
        (
            _chained(
                httpx.ConnectError("x", request=REQ),
                socket.gaierror(-2, "Name or service not known"),
            ),
            "cannot connect to amoCRM at crm.example.com:443: name not resolved "
            "(Name or service not known)",
        ),
        (
            _chained(httpx.ConnectError("x", request=REQ), ssl.SSLError(1, "WRONG_VERSION")),
            "cannot connect to amoCRM at crm.example.com:443: TLS handshake failed",
        ),
        (
            httpx.ConnectTimeout("timed out", request=REQ),
            "cannot connect to amoCRM at crm.example.com:443: connection timed out",
        ),
        (
            httpx.ReadTimeout("timed out", request=REQ),
            "amoCRM at crm.example.com:443 gave no answer: no answer in time (read timeout)",
        ),
        (
            _chained(httpx.ReadError("x", request=REQ), ConnectionResetError(104, "reset")),
            "amoCRM at crm.example.com:443 gave no answer: connection reset",
        ),
        (
            httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=REQ
            ),
            "amoCRM at crm.example.com:443 gave no answer: the connection broke (Server "
            "disconnected without sending a response.)",
        ),
    ],
)
def test_a_network_error_names_the_host_and_what_happened(
    exc: httpx.HTTPError, message: str
) -> None:
    outcome = classify_exception("GET", "/api/v4/account", exc, host="crm.example.com:443")
    assert str(outcome.error).startswith(message)
    assert str(outcome.error).endswith("(GET /api/v4/account no answer)")
