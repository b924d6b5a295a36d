"""Contract: 7 requests per sliding second → 429 (JSON or HTML), then a 403 HTML IP block."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from emulator_helpers import SSL

from sync.emulator import Emulator, RunningServer, serve

CONTACTS = "/api/v4/contacts"


@pytest.fixture
def settings(make_settings):
    return make_settings(rate_limit=7.0, block_after_violations=3, latency_ms=0)


@pytest.fixture
def limited(server: RunningServer, emulator: Emulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {emulator.long_lived_token}"}
    with httpx.Client(verify=SSL, base_url=server.base_url, headers=headers, timeout=10) as http:
        yield http


def test_eighth_request_in_a_second_is_a_json_429(limited: httpx.Client) -> None:
    statuses = [limited.get(CONTACTS, params={"limit": 1}).status_code for _ in range(8)]
    assert statuses == [200] * 7 + [429]
    response = limited.get(CONTACTS)
    assert response.headers["content-type"] == "application/problem+json"
    assert "retry-after" not in response.headers
    body = response.json()
    assert body["status"] == 429
    assert body["title"] == "Too Many Requests"
    assert isinstance(body["retry_after"], int)


def test_window_slides(limited: httpx.Client) -> None:
    for _ in range(7):
        assert limited.get(CONTACTS, params={"limit": 1}).status_code == 200
    time.sleep(1.05)
    assert limited.get(CONTACTS, params={"limit": 1}).status_code == 200


def test_html_429_has_no_retry_after(limited: httpx.Client, emulator) -> None:
    emulator.set_controls(rate_limit_body="html")
    statuses = [limited.get(CONTACTS, params={"limit": 1}) for _ in range(8)]
    last = statuses[-1]
    assert last.status_code == 429
    assert last.headers["content-type"].startswith("text/html")
    assert "retry-after" not in last.headers
    assert b"429" in last.content


def test_repeated_violations_block_the_ip_with_a_403_html_page(limited, emulator) -> None:
    statuses = [limited.get(CONTACTS, params={"limit": 1}).status_code for _ in range(12)]
    assert statuses[:7] == [200] * 7
    assert statuses[7:10] == [429, 429, 429]
    assert set(statuses[10:]) == {403}
    time.sleep(1.05)
    blocked = limited.get(CONTACTS)
    assert blocked.status_code == 403
    assert blocked.headers["content-type"].startswith("text/html")
    limited.post("/_emulator/unblock")
    assert limited.get(CONTACTS, params={"limit": 1}).status_code == 200


def test_counted_at_arrival_before_latency(make_settings) -> None:
    emulator = Emulator(make_settings(rate_limit=7.0, latency_ms=400))
    headers = {"Authorization": f"Bearer {emulator.long_lived_token}"}
    with (
        serve(emulator) as server,
        httpx.Client(
            verify=SSL,
            base_url=server.base_url,
            headers=headers,
            timeout=10,
            limits=httpx.Limits(max_connections=16),
        ) as http,
        ThreadPoolExecutor(8) as pool,
    ):
        started = time.monotonic()
        statuses = sorted(
            pool.map(lambda _: http.get(CONTACTS, params={"limit": 1}).status_code, range(8))
        )
        elapsed = time.monotonic() - started
    # All 8 arrive within a few ms; the 8th is refused though the first 7 are still "in flight".
    assert statuses == [200] * 7 + [429]
    assert elapsed < 1.5  # latency is served in parallel, not serialised
    log = emulator.requests()
    assert len(log) == 8
    assert max(e["arrived_at"] for e in log) - min(e["arrived_at"] for e in log) < 0.4


def test_admin_calls_are_never_limited_or_logged(limited, emulator) -> None:
    for _ in range(20):
        assert limited.get("/_emulator/state").status_code == 200
    assert emulator.requests() == []


@pytest.mark.parametrize("off", [None, 0])
def test_limit_can_be_switched_off(limited, emulator, off) -> None:
    """`0` is off over the admin API too, as `--rate-limit 0` is (it was a budget of nothing)."""
    limited.patch("/_emulator/controls", json={"rate_limit": off, "account_rate_limit": off})
    statuses = {limited.get(CONTACTS, params={"limit": 1}).status_code for _ in range(15)}
    assert statuses == {200}


def test_issue_12_limits_over_the_admin_api_without_timing(make_settings) -> None:
    """The account budget below a client's own limit, the 403 block after repeated 429s and an
    access token that dies after N requests, all switched on at run time through
    `PATCH /_emulator/controls` (how e2e tests reach an emulator subprocess). An hour-long window
    makes the counts independent of how fast this machine sends."""
    emulator = Emulator(make_settings(rate_limit=7.0, rate_limit_window_s=3_600.0,
                                      block_after_violations=None))  # fmt: skip
    with serve(emulator) as running, httpx.Client(base_url=running.base_url, verify=SSL) as http:
        controls = {"account_rate_limit": 3, "block_after_violations": 2}
        assert http.patch("/_emulator/controls", json=controls).json()["account_rate_limit"] == 3
        long_lived = {"Authorization": f"Bearer {emulator.long_lived_token}"}
        statuses = [http.get(CONTACTS, headers=long_lived).status_code for _ in range(6)]
        # the 4th request is this client's 4th of its own 7: the account's budget refused it
        assert statuses == [200, 200, 200, 429, 429, 403]
        assert http.get("/_emulator/state").json()["rate_limit"]["blocked"]
        http.post("/_emulator/unblock")  # lifts the block and empties the windows
        http.patch("/_emulator/controls", json={"account_rate_limit": None})
        statuses = [http.get(CONTACTS, headers=long_lived).status_code for _ in range(8)]
        assert statuses == [200] * 7 + [429]  # the client's own 7 again
        http.patch("/_emulator/controls", json={"rate_limit": None, "token_max_requests": 2})
        pair = http.post("/_emulator/oauth/tokens").json()
        oauth = {"Authorization": f"Bearer {pair['access_token']}"}
        assert [http.get(CONTACTS, headers=oauth).status_code for _ in range(3)] == [200, 200, 401]
        assert http.get(CONTACTS, headers=long_lived).status_code == 200  # OAuth tokens only
