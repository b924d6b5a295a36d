"""Contract: scheduled and probabilistic faults, set from Python and over the admin API."""

from __future__ import annotations

import httpx
import pytest
from emulator_helpers import all_pages, live_ids

from sync.emulator import FaultRule

CONTACTS = "/api/v4/contacts"


def test_500_is_problem_json_with_trace_id_and_no_type(client, emulator) -> None:
    emulator.add_fault(FaultRule(kind="error", status=500))
    response = client.get(CONTACTS)
    assert response.status_code == 500
    body = response.json()
    assert body["title"] == "ErrInternalServer"
    assert body["trace_id"]
    assert "type" not in body
    assert client.get(CONTACTS).status_code == 200  # times=1 by default


@pytest.mark.parametrize("status", [502, 504])
def test_gateway_errors_are_html(client, emulator, status) -> None:
    emulator.add_fault(FaultRule(kind="error", status=status))
    response = client.get(CONTACTS)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("apply_write", [True, False])
def test_504_optionally_after_applying_the_write(client, emulator, apply_write) -> None:
    contact_id = live_ids(emulator)[0]
    emulator.add_fault(FaultRule(kind="error", status=504, method="PATCH", apply_write=apply_write))
    response = client.patch(CONTACTS, json=[{"id": contact_id, "name": "После 504"}])
    assert response.status_code == 504
    name = client.get(f"{CONTACTS}/{contact_id}").json()["name"]
    assert (name == "После 504") is apply_write


def test_times_and_skip_pick_exact_requests(client, emulator) -> None:
    emulator.add_fault(
        FaultRule(kind="error", method="GET", path="/api/v4/contacts", skip=1, times=2)
    )
    statuses = [client.get(CONTACTS, params={"limit": 1}).status_code for _ in range(4)]
    assert statuses == [200, 500, 500, 200]
    assert client.get("/api/v4/account").status_code == 200  # path did not match


def test_probabilistic_faults_for_soak_runs(client, emulator) -> None:
    emulator.add_fault(FaultRule(kind="error", status=502, rate=0.3, times=None))
    statuses = [client.get(CONTACTS, params={"limit": 1}).status_code for _ in range(60)]
    assert 5 < statuses.count(502) < 35
    assert statuses.count(200) == 60 - statuses.count(502)


def test_slow_answers_exceed_the_client_timeout(client, emulator) -> None:
    emulator.add_fault(FaultRule(kind="slow", delay_ms=600))
    with pytest.raises(httpx.ReadTimeout):
        client.get(CONTACTS, timeout=0.2)


def test_connection_reset(client, emulator) -> None:
    emulator.add_fault(FaultRule(kind="reset"))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.get(CONTACTS)
    assert client.get(CONTACTS, params={"limit": 1}).status_code == 200
    assert [e["status"] for e in emulator.requests()] == [0, 200]


def test_reset_after_applying_a_post(client, emulator) -> None:
    before = len(emulator.account.contacts)
    emulator.add_fault(FaultRule(kind="reset", method="POST", apply_write=True))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.post(CONTACTS, json=[{"name": "сохранён, но ответа нет"}])
    assert len(emulator.account.contacts) == before + 1


def test_truncated_json(client, emulator) -> None:
    emulator.add_fault(FaultRule(kind="truncate"))
    response = client.get(CONTACTS)
    assert response.status_code == 200
    # a JSONDecodeError, or a UnicodeDecodeError when the cut lands inside a character
    with pytest.raises(ValueError, match=r"."):
        response.json()


def test_spurious_204_on_a_later_page_once(client, emulator) -> None:
    emulator.add_fault(FaultRule(kind="empty_page", min_page=2))
    assert client.get(CONTACTS, params={"page": 1, "limit": 50}).status_code == 200
    assert client.get(CONTACTS, params={"page": 2, "limit": 50}).status_code == 204
    assert client.get(CONTACTS, params={"page": 2, "limit": 50}).status_code == 200


def test_drift_between_page_fetches_makes_a_page_walk_miss_contacts(client, emulator) -> None:
    emulator.clock.advance(3600)
    emulator.add_fault(FaultRule(kind="drift", min_page=2, touch=10, times=None))
    found = all_pages(client, {"order[updated_at]": "asc"}, limit=50)
    ids = {c["id"] for c in found}
    assert len(ids) < len(live_ids(emulator))  # the classic lost-update of page-number paging
    assert max(c["updated_at"] for c in found) == int(emulator.clock.now())


@pytest.mark.parametrize(
    ("kind", "status"), [("payment_required", 402), ("unauthorized", 401), ("rate_limit", 429)]
)
def test_status_faults(client, emulator, kind, status) -> None:
    emulator.add_fault(FaultRule(kind=kind))
    response = client.get(CONTACTS)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"


def test_faults_over_the_admin_api(client, emulator) -> None:
    added = client.post(
        "/_emulator/faults",
        json=[
            {"kind": "error", "status": 504, "method": "PATCH", "apply_write": True},
            {"kind": "empty_page", "min_page": 2},
        ],
    )
    assert added.status_code == 200
    ids = added.json()["ids"]
    listed = client.get("/_emulator/faults").json()
    assert [f["id"] for f in listed] == ids
    assert listed[0]["fired"] == 0
    assert client.delete(f"/_emulator/faults/{ids[0]}").json() == {"ok": True}
    assert len(client.get("/_emulator/faults").json()) == 1
    assert client.delete("/_emulator/faults").json() == []
    bad = client.post("/_emulator/faults", json={"kind": "explode"})
    assert bad.status_code == 400
    assert "kind" in bad.json()["error"]


def test_filters_ignored_switch_over_admin(client, emulator) -> None:
    client.patch("/_emulator/controls", json={"api_filter_enabled": False})
    response = client.get(CONTACTS, params={"filter[id]": 1, "limit": 2})
    assert response.status_code == 200


def test_504_only_for_heavy_write_batches(client, emulator) -> None:
    ids = live_ids(emulator)
    emulator.add_fault(
        FaultRule(kind="error", status=504, method="PATCH", min_batch=51, times=None)
    )
    heavy = client.patch(CONTACTS, json=[{"id": i, "first_name": "h"} for i in ids[:60]])
    assert heavy.status_code == 504
    light = client.patch(CONTACTS, json=[{"id": i, "first_name": "l"} for i in ids[:50]])
    assert light.status_code == 200


def test_an_emulator_bug_still_answers_a_500_problem(client, emulator, monkeypatch, caplog) -> None:
    def explode(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(emulator.account, "view", explode)
    response = client.get(CONTACTS)
    assert response.status_code == 500
    assert response.json()["trace_id"]
    assert "emulator_request_crashed" in caplog.text
