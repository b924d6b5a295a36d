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


def test_a_fault_aimed_at_one_order_spares_the_other_lists(client, emulator) -> None:
    """`order="id"` hits the reads of a second by id, not keyset windows nor events."""
    emulator.add_fault(FaultRule(kind="empty_page", order="id", times=None))
    by_date = {"order[updated_at]": "asc", "limit": 50}
    assert client.get(CONTACTS, params=by_date).status_code == 200
    assert client.get(CONTACTS, params={"limit": 50}).status_code == 200  # no order named
    assert client.get(CONTACTS, params={"order[id]": "desc", "limit": 50}).status_code == 204
    added = client.post("/_emulator/faults", json={"kind": "empty_page", "order": "id"})
    assert added.status_code == 200
    assert emulator.faults()[0]["order"] == "id"
    assert [f["fired"] for f in emulator.faults()] == [1, 0]


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


def _busiest_second(emulator) -> tuple[int, list[int]]:
    """The seeded "bulk import" second with the most live contacts, and their ids."""
    by_second: dict[int, list[int]] = {}
    for contact_id in live_ids(emulator):
        by_second.setdefault(emulator.account.contacts[contact_id].updated_at, []).append(
            contact_id
        )
    second = max(by_second, key=lambda s: len(by_second[s]))
    return second, by_second[second]


@pytest.mark.parametrize("kind", ["drift", "edit", "vanish", "revive"])
def test_walk_faults_fire_on_every_list_request_keyset_and_ties_included(
    client, emulator, kind
) -> None:
    """Issue 12's knob: with `times: null` a change happens before EVERY contacts list request,
    whatever its shape: page-number pages, `filter[updated_at][from]` keyset requests, a tie
    second read by `order[id]`, and trash scans (`with=only_deleted`)."""
    for contact_id in live_ids(emulator)[-8:]:
        emulator.delete_contact(contact_id)  # something in the trash for `revive`
    tie, tie_ids = _busiest_second(emulator)
    assert len(tie_ids) > 3
    rule = {"kind": kind, "path": CONTACTS, "times": None}
    assert client.post("/_emulator/faults", json=rule).status_code == 200
    walk = [
        {"limit": 50},
        {"filter[updated_at][from]": tie - 86_400, "order[updated_at]": "asc", "limit": 50},
        {"filter[updated_at][from]": tie, "filter[updated_at][to]": tie, "order[id]": "asc",
         "limit": 2},
        {"filter[updated_at][from]": tie, "filter[updated_at][to]": tie, "order[id]": "asc",
         "limit": 2, "page": 2},
        {"with": "only_deleted", "limit": 50},
    ]  # fmt: skip
    for number, params in enumerate(walk, start=1):
        version = emulator.account.version
        trash = {c.id for c in emulator.account.contacts.values() if c.is_deleted}
        assert client.get(CONTACTS, params=params).status_code in {200, 204}
        assert emulator.account.version == version + 1, params  # one contact changed
        (armed,) = client.get("/_emulator/faults").json()
        assert armed["fired"] == number
        if number == 3 and kind != "revive":  # the tie request hit the tie's first contact
            first = emulator.account.contacts[tie_ids[0]]
            assert first.updated_at != tie
            assert first.is_deleted == (kind == "vanish")
            assert first.name.endswith(" ✎3") == (kind == "edit")  # the third edit
        now_trash = {c.id for c in emulator.account.contacts.values() if c.is_deleted}
        if kind == "vanish":  # a live contact went, also during the trash scan
            assert len(now_trash - trash) == 1
        if kind == "revive":
            assert len(trash - now_trash) == 1
    client.get(f"{CONTACTS}/{tie_ids[-1]}")
    client.get("/api/v4/events")
    assert client.get("/_emulator/faults").json()[0]["fired"] == len(walk)  # lists only


@pytest.mark.parametrize("kind", ["drift", "edit", "vanish"])
def test_walk_faults_can_hit_rows_a_walk_has_not_reached(client, emulator, kind) -> None:
    """`pick: "last"` changes the end of the request's list (rows a keyset walk reads last),
    `pick: "random"` a seeded choice among the rows the request's filters select."""
    tie, tie_ids = _busiest_second(emulator)
    keyset = {"filter[updated_at][from]": tie - 86_400, "order[updated_at]": "asc", "limit": 5}
    ahead = [c["id"] for c in all_pages(client, keyset)][-2:]
    client.post("/_emulator/faults", json={"kind": kind, "path": CONTACTS, "pick": "last",
                                           "touch": 2})  # fmt: skip
    first_page = client.get(CONTACTS, params=keyset).json()["_embedded"]["contacts"]
    assert not {c["id"] for c in first_page} & set(ahead)
    hit = [emulator.account.contacts[i] for i in ahead]
    assert all(c.is_deleted == (kind == "vanish") for c in hit)
    assert all(c.updated_at == emulator.clock.now_s() for c in hit)
    client.post("/_emulator/faults", json={"kind": kind, "path": CONTACTS, "pick": "random",
                                           "touch": 3})  # fmt: skip
    before = {i: emulator.account.contacts[i].updated_at for i in live_ids(emulator)}
    tie_query = {"filter[updated_at][from]": tie, "filter[updated_at][to]": tie, "limit": 1}
    client.get(CONTACTS, params=tie_query)
    changed = {i for i, stamp in before.items() if emulator.account.contacts[i].updated_at != stamp}
    assert len(changed) == 3
    assert changed <= set(tie_ids)  # within what the request's filters select
    wrong = client.post("/_emulator/faults", json={"kind": kind, "pick": "middle"})
    assert wrong.status_code == 400
