"""Contract: response headers on every kind of answer, and latency with jitter, over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from emulator_helpers import SSL, live_ids

from sync.emulator import Emulator, serve
from sync.emulator.wire import Request

CONTACTS = "/api/v4/contacts"


def assert_no_content(response: httpx.Response) -> None:
    assert response.status_code == 204
    assert response.content == b""
    assert "content-length" not in response.headers  # RFC 9110 §8.6
    assert "content-type" not in response.headers
    assert response.headers["x-request-id"]


def test_a_204_list_page_has_no_content_length(client: httpx.Client, emulator) -> None:
    past_the_end = client.get(CONTACTS, params={"limit": 250, "page": 99})
    assert_no_content(past_the_end)
    assert_no_content(client.get(CONTACTS, params={"filter[id]": 1}))
    # the keep-alive connection is still in step: the next answer on it parses
    assert client.get(CONTACTS, params={"limit": 1}).status_code == 200


def test_a_204_get_by_id_has_no_content_length(client: httpx.Client, emulator) -> None:
    assert_no_content(client.get(f"{CONTACTS}/1"))
    contact_id = live_ids(emulator)[0]
    emulator.delete_contact(contact_id)
    assert_no_content(client.get(f"{CONTACTS}/{contact_id}"))
    assert client.get(f"{CONTACTS}/{live_ids(emulator)[0]}").status_code == 200


def test_answers_with_a_body_still_carry_their_length(client: httpx.Client) -> None:
    response = client.get(CONTACTS, params={"limit": 1})
    assert int(response.headers["content-length"]) == len(response.content)


def test_a_404_is_problem_json_with_a_request_id(client: httpx.Client) -> None:
    for path in ("/api/v4/nothing", "/api/v4/contacts/custom_fields/1"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["x-request-id"]


@pytest.fixture
def limited(make_settings) -> Iterator[tuple[Emulator, httpx.Client]]:
    """One request per minute, and the IP blocked at the second 429: every refusal in a row."""
    emulator = Emulator(
        make_settings(rate_limit=1.0, rate_limit_window_s=60.0, block_after_violations=2)
    )
    headers = {"Authorization": f"Bearer {emulator.long_lived_token}"}
    with (
        serve(emulator) as running,
        httpx.Client(verify=SSL, base_url=running.base_url, headers=headers, timeout=10) as http,
    ):
        yield emulator, http


def test_refusals_carry_a_request_id_and_their_own_content_type(limited) -> None:
    emulator, http = limited
    assert http.get(CONTACTS, params={"limit": 1}).status_code == 200
    json_429 = http.get(CONTACTS)
    emulator.set_controls(rate_limit_body="html")
    html_429 = http.get(CONTACTS)
    blocked = http.get(CONTACTS)
    expected = [
        (json_429, 429, "application/problem+json"),
        (html_429, 429, "text/html; charset=utf-8"),
        (blocked, 403, "text/html; charset=utf-8"),
    ]
    for response, status, content_type in expected:
        assert response.status_code == status
        assert response.headers["content-type"] == content_type
        assert response.headers["x-request-id"]
        assert int(response.headers["content-length"]) == len(response.content)
    assert json_429.json()["status"] == 429
    assert b"<title>429 Too Many Requests</title>" in html_429.content
    assert b"<title>403 Forbidden</title>" in blocked.content
    request_ids = {r.headers["x-request-id"] for r, _, _ in expected}
    assert len(request_ids) == 3  # one per response, not one per connection


LATENCY_MS, JITTER_MS = 120.0, 80.0


def test_jitter_varies_each_delay_within_latency_plus_or_minus_jitter(make_settings) -> None:
    """What the pipeline asks the transport to wait: exact, so the bounds can be tight."""
    emulator = Emulator(make_settings(latency_ms=LATENCY_MS, jitter_ms=JITTER_MS))
    request = Request("GET", CONTACTS, "limit=1", {"authorization": bearer(emulator)})
    delays = [emulator.handle(request).delay_s * 1000 for _ in range(40)]
    assert all(LATENCY_MS - JITTER_MS <= d <= LATENCY_MS + JITTER_MS for d in delays)
    assert max(delays) - min(delays) > JITTER_MS / 4  # 40 draws: they do spread


def test_jitter_shows_in_real_response_times(make_settings) -> None:
    """Over a socket, with generous bounds: a loaded machine only adds time."""
    emulator = Emulator(make_settings(latency_ms=LATENCY_MS, jitter_ms=JITTER_MS))
    with (
        serve(emulator) as running,
        httpx.Client(verify=SSL, base_url=running.base_url, timeout=10) as http,
    ):
        http.headers["Authorization"] = bearer(emulator)
        elapsed = [timed(http) for _ in range(12)]
    assert all(LATENCY_MS - JITTER_MS <= ms <= LATENCY_MS + JITTER_MS + 1000 for ms in elapsed)
    assert max(elapsed) - min(elapsed) > 5  # not one fixed delay


def timed(http: httpx.Client) -> float:
    started = time.perf_counter()
    assert http.get(CONTACTS, params={"limit": 1}).status_code == 200
    return (time.perf_counter() - started) * 1000


def bearer(emulator: Emulator) -> str:
    return f"Bearer {emulator.long_lived_token}"
