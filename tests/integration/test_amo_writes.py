"""AmoClient writes against the emulator: results by request_id, 400 mapping, 504 and lost
answers reconciled by reading (never a duplicate contact), batch halving."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from sync.emulator import Emulator, FaultRule
from sync.errors import (
    AmoRejectedError,
    AmoStoppedError,
    AmoWriteUnknownError,
    InvariantError,
)
from tests.integration.amo_emulator import client_for, running
from tests.unit.amo_helpers import EmulatorTime

POST = "/api/v4/contacts"


def person(n: int, tag: str = "p") -> dict[str, Any]:
    return {
        "name": f"{tag} {n}",
        "first_name": f"{tag}",
        "last_name": f"{n}",
        "custom_fields_values": [
            {"field_code": "PHONE", "values": [{"value": f"+7999000{n:04d}", "enum_code": "WORK"}]}
        ],
    }


def live_names(emulator: Emulator, client: Any) -> list[str]:
    return [c["name"] for p in client.iter_contacts(limit=250) for c in p.items]


def posts(emulator: Emulator, path: str = POST, method: str = "POST") -> list[dict[str, Any]]:
    return [r for r in emulator.requests() if r["method"] == method and r["path"] == path]


def test_create_and_update_match_results_by_request_id() -> None:
    with running() as (emulator, url), client_for(emulator, url, batch_size=3) as client:
        created = client.create_contacts([person(n) for n in range(7)])
        assert [r.request_id for r in created] == [str(n) for n in range(7)]
        assert len({r.id for r in created}) == 7
        assert not any(r.reconciled for r in created)
        assert [len(r["body"]) for r in posts(emulator)] == [3, 3, 1]
        updated = client.update_contacts(
            [
                {"id": r.id, "name": f"renamed {r.request_id}", "request_id": f"local-{r.id}"}
                for r in created
            ]
        )
        assert [r.request_id for r in updated] == [f"local-{r.id}" for r in created]
        assert all(isinstance(r.updated_at, int) for r in updated)
        assert sorted(live_names(emulator, client)) == sorted(f"renamed {n}" for n in range(7))


def test_400_maps_errors_to_entities_and_the_rest_still_go_through() -> None:
    with running() as (emulator, url), client_for(emulator, url, batch_size=10) as client:
        entities = [person(n) for n in range(4)]
        entities[2]["custom_fields_values"] = [{"field_id": 999_999, "values": [{"value": "x"}]}]
        with pytest.raises(AmoRejectedError) as info:
            client.create_contacts(entities)
        errors = info.value.errors_by_request_id
        assert list(errors) == ["2"]
        assert "custom_fields_values" in errors["2"][0]["path"]
        assert [r.request_id for r in info.value.results] == ["0", "1", "3"]  # type: ignore[attr-defined]
        assert sorted(live_names(emulator, client)) == ["p 0", "p 1", "p 3"]


LOST = [
    FaultRule(kind="reset", method="POST", path=POST, apply_write=True),
    FaultRule(kind="error", status=504, method="POST", path=POST, apply_write=True),
    FaultRule(kind="error", status=500, method="POST", path=POST, apply_write=True),
    FaultRule(kind="truncate", method="POST", path=POST),
    FaultRule(kind="slow", delay_ms=1500, method="POST", path=POST),
]


@pytest.mark.parametrize("fault", LOST, ids=lambda f: f"{f.kind}-{f.status}")
def test_lost_post_answer_is_reconciled_without_a_duplicate(fault: FaultRule) -> None:
    with (
        running(contacts=30) as (emulator, url),
        client_for(emulator, url, batch_size=5, timeout_s=1.0) as client,
    ):
        emulator.add_fault(FaultRule(**{**fault.__dict__, "skip": 1}))  # the 2nd batch is lost
        created = client.create_contacts([person(n, "new") for n in range(12)])
        names = [n for n in live_names(emulator, client) if n.startswith("new ")]
        assert sorted(names) == sorted(f"new {n}" for n in range(12))  # each exactly once
        assert [r.request_id for r in created] == [str(n) for n in range(12)]
        assert len({r.id for r in created}) == 12
        assert [r.request_id for r in created if r.reconciled] == ["5", "6", "7", "8", "9"]


@pytest.mark.parametrize(
    "fault",
    [
        FaultRule(kind="reset", method="POST", path=POST),
        FaultRule(kind="error", status=502, method="POST", path=POST),
    ],
    ids=["reset-before-write", "502-before-write"],
)
def test_post_lost_before_it_applied_is_resent_once_the_window_passed(fault: FaultRule) -> None:
    # not found may mean "not listed yet" (lists lag writes): looked for during the whole
    # confirmation window (10 x settle) first, then sent again in the same call
    with running(contacts=10) as (emulator, url), client_for(emulator, url) as client:
        emulator.create_contacts([person(1, "twin")])  # an older look-alike must not be claimed
        emulator.add_fault(fault)
        time = EmulatorTime(emulator)
        client.session.clock = time
        created = client.create_contacts([person(1, "twin"), person(1, "twin")])
        assert [r.request_id for r in created] == ["0", "1"]
        assert not any(r.reconciled for r in created)
        assert [n for n in live_names(emulator, client) if n == "twin 1"] == ["twin 1"] * 3
        assert len(posts(emulator)) == 2
        assert sum(time.sleeps) >= 10 * client.reconcile_settle_s  # looked for the window


def test_two_identical_entities_in_a_lost_batch_are_two_contacts_not_more() -> None:
    with running() as (emulator, url), client_for(emulator, url) as client:
        emulator.add_fault(FaultRule(kind="reset", method="POST", path=POST, apply_write=True))
        created = client.create_contacts([person(7, "same"), person(7, "same")])
        assert len({r.id for r in created}) == 2
        assert all(r.reconciled for r in created)
        assert [n for n in live_names(emulator, client) if n == "same 7"] == ["same 7"] * 2
        assert len(posts(emulator)) == 1


def test_write_that_keeps_failing_gives_up_and_carries_the_results_so_far() -> None:
    with running(contacts=5) as (emulator, url), client_for(emulator, url, max_retries=2) as client:
        emulator.add_fault(FaultRule(kind="reset", method="POST", path=POST, skip=1, times=None))
        with pytest.raises(AmoWriteUnknownError) as info:
            client.create_contacts([person(n, "a") for n in range(8)], batch_size=2)
        assert [r.request_id for r in info.value.results] == ["0", "1"]  # type: ignore[attr-defined]
        # 1 good POST, then 3 lost ones (1 + max_retries), each followed by a reconciling read;
        # a lost create is never resent in the same call, so each was another batch
        assert len(posts(emulator)) == 4
        assert sorted(n for n in live_names(emulator, client) if n.startswith("a ")) == [
            "a 0",
            "a 1",
        ]


def test_504_after_patch_rereads_and_halves_the_batch() -> None:
    with running(contacts=0) as (emulator, url), client_for(emulator, url, batch_size=8) as client:
        created = client.create_contacts([person(n) for n in range(16)])
        emulator.clear_requests()
        emulator.add_fault(
            FaultRule(kind="error", status=504, method="PATCH", path=POST, apply_write=True)
        )
        updates = [{"id": r.id, "name": f"u{r.request_id}"} for r in created]
        results = client.update_contacts(updates)
        assert [r.request_id for r in results] == [str(n) for n in range(16)]
        assert [r.request_id for r in results if r.reconciled] == [str(n) for n in range(8)]
        patch_sizes = [len(r["body"]) for r in posts(emulator, method="PATCH")]
        assert patch_sizes == [8, 4, 4]  # first batch applied then 504; the rest halved
        assert sorted(live_names(emulator, client)) == sorted(f"u{n}" for n in range(16))


def test_504_before_patch_applied_resends_only_after_reading() -> None:
    with running(contacts=0) as (emulator, url), client_for(emulator, url, batch_size=4) as client:
        created = client.create_contacts([person(n) for n in range(4)])
        emulator.clear_requests()
        emulator.add_fault(FaultRule(kind="error", status=504, method="PATCH", path=POST))
        results = client.update_contacts([{"id": r.id, "name": "v2"} for r in created])
        assert not any(r.reconciled for r in results)
        kinds = [(r["method"], len(r["body"] or [])) for r in emulator.requests()]
        assert kinds[0] == ("PATCH", 4)
        # re-read before any resend: the list, then each by id (the list may lag the write)
        assert kinds[1:6] == [("GET", 0)] * 5
        assert kinds[6:] == [("PATCH", 2), ("PATCH", 2)]


def test_a_large_patch_lost_before_it_applied_is_looked_for_by_list_not_one_by_one() -> None:
    """The hostile audit's s08: a 500 on a PATCH of many contacts that amoCRM did not apply
    made the reconciliation read each of them by id (62 requests for one push). Now the list is
    looked at again, 1..4 x settle_s apart, and the contacts still unchanged are resent."""
    with running(contacts=0) as (emulator, url), client_for(emulator, url, batch_size=40) as client:
        created = client.create_contacts([person(n) for n in range(40)])
        emulator.clear_requests()
        emulator.add_fault(FaultRule(kind="error", status=500, method="PATCH", path=POST))
        results = client.update_contacts([{"id": r.id, "name": "v2"} for r in created])
        assert len(results) == 40
        assert not any(r.reconciled for r in results)
        by_id = [r for r in emulator.requests() if r["path"].startswith(f"{POST}/")]
        assert by_id == []
        lists = [r for r in emulator.requests() if r["method"] == "GET" and r["path"] == POST]
        assert len(lists) == 5  # the first read and 4 looks, one request each
        assert sorted(live_names(emulator, client)) == ["v2"] * 40


def test_a_large_patch_applied_behind_a_lagging_list_is_found_without_a_resend() -> None:
    with (
        running(contacts=0, list_lag_s=0.25) as (emulator, url),
        client_for(emulator, url, batch_size=40) as client,
    ):
        created = client.create_contacts([person(n) for n in range(40)])
        time.sleep(0.5)
        emulator.clear_requests()
        emulator.add_fault(
            FaultRule(kind="error", status=500, method="PATCH", path=POST, apply_write=True)
        )
        results = client.update_contacts([{"id": r.id, "name": "v3"} for r in created])
        assert all(r.reconciled for r in results)
        assert len(posts(emulator, method="PATCH")) == 1  # nothing resent
        assert not [r for r in emulator.requests() if r["path"].startswith(f"{POST}/")]


def test_422_too_many_entities_halves_the_batch() -> None:
    with (
        running(max_batch=5) as (emulator, url),
        client_for(emulator, url, batch_size=12) as client,
    ):
        created = client.create_contacts([person(n) for n in range(12)])
        assert len(created) == 12
        sizes = [len(r["body"]) for r in posts(emulator)]
        assert sizes == [12, 6, 3, 3, 3, 3]  # halved until amoCRM's limit (here 5) is met
        assert (
            sum(s for s, r in zip(sizes, posts(emulator), strict=True) if r["status"] == 200) == 12
        )


def test_link_chats_and_a_lost_link_answer() -> None:
    with (
        running(contacts=6, trashed_fraction=0.0) as (emulator, url),
        client_for(emulator, url) as client,
    ):
        ids = [c["id"] for p in client.iter_contacts() for c in p.items][:3]
        links = [
            {"contact_id": i, "chat_id": f"00000000-0000-4000-8000-00000000000{n}"}
            for n, i in enumerate(ids)
        ]
        emulator.add_fault(
            FaultRule(kind="reset", method="POST", path="/api/v4/contacts/chats", apply_write=True)
        )
        results = client.link_chats(links)
        assert [r.request_id for r in results] == ["0", "1", "2"]
        assert all(r.reconciled for r in results)
        got = [
            (x["contact_id"], x["chat_id"])
            for p in client.iter_chats(contact_ids=ids)
            for x in p.items
        ]
        assert sorted(got) == sorted((x["contact_id"], x["chat_id"]) for x in links)


def test_the_client_recovers_what_a_dead_process_created_by_request_id() -> None:
    """A push that died after its POST: `recover_creates` finds the contacts it made (and only
    those) by content above the floor it noted; the rest were never created."""
    with running(contacts=3) as (emulator, url), client_for(emulator, url) as client:
        floor = client.newest_contact_id()
        sent = [{**person(n, "dead"), "request_id": str(-n)} for n in (1, 2, 3)]
        created = client.create_contacts(sent[:2])  # the third never left
        found = client.recover_creates(sent, floor)
        assert {rid: r.id for rid, r in found.items()} == {r.request_id: r.id for r in created}
        assert all(r.reconciled for r in found.values())
        assert len(posts(emulator)) == 1  # recovery reads, it never resends


def test_the_client_refuses_to_recover_creates_without_a_floor() -> None:
    with (
        running() as (emulator, url),
        client_for(emulator, url) as client,
        pytest.raises(InvariantError, match="ignores order"),
    ):
        client.recover_creates([person(1)], None)


def test_the_client_recovers_chat_links_that_exist() -> None:
    with running(contacts=2) as (emulator, url), client_for(emulator, url) as client:
        contact = sorted(emulator.account.contacts)[0]
        chat = "6f2d1c6e-0000-4000-8000-000000000001"
        links = [{"contact_id": contact, "chat_id": chat, "request_id": "-1"}]
        assert client.recover_links(links) == {}
        [linked] = client.link_chats(links)
        assert client.recover_links(links)["-1"].id == linked.id


def test_a_stop_ends_the_confirmation_window_at_once() -> None:
    """SIGTERM while a lost create is looked for (a 10 s window with the default settle): the
    call ends within moments, nothing resent; the in-flight record lets the next run look."""
    with (
        running(contacts=3) as (emulator, url),
        client_for(emulator, url, reconcile_settle_s=1.0) as client,
    ):
        emulator.add_fault(FaultRule(kind="error", status=504, method="POST", path=POST))
        timer = threading.Timer(0.5, client.session.stop)
        timer.start()
        started = time.monotonic()
        with pytest.raises(AmoStoppedError):
            client.create_contacts([person(1, "stop")])
        assert time.monotonic() - started < 3
        assert len(posts(emulator)) == 1
        timer.join()


def test_a_lost_patch_answer_is_judged_by_id_and_not_resent_over_a_newer_edit() -> None:
    """Lists lag writes: a PATCH whose answer was lost read back from the list as not applied
    and was resent, and a CRM user's edit made just after ours applied was overwritten (audit).
    Now a contact the list does not show as sent is read by id (no lag); one edited since the
    version it was planned on is `superseded`, not resent; one unchanged is resent."""
    from sync.amo.reconcile import find_updated
    from sync.amo.writes import prepare

    with running(contacts=0, list_lag_s=30) as (emulator, url), client_for(emulator, url) as c:
        made = c.create_contacts([person(n) for n in range(3)])
        planned = {r.id: int((c.fetch_contact(r.id) or {})["updated_at"]) for r in made}
        applied, edited, untouched = (r.id for r in made)
        later = max(planned.values()) + 5
        emulator.update_contacts([{"id": applied, "last_name": "ours"}], at=later)
        emulator.update_contacts([{"id": edited, "last_name": "theirs"}], at=later)
        sent = [{"id": i, "last_name": "ours"} for i in (applied, edited, untouched)]
        emulator.clear_requests()
        found = find_updated(c, prepare(sent), planned)
        assert {r.id: r.superseded for r in found.values()} == {applied: False, edited: True}
        assert untouched not in {r.id for r in found.values()}  # unchanged: sent again
        by_id = [r for r in emulator.requests() if r["path"].startswith(POST + "/")]
        assert len(by_id) == 3  # the list lags: each read by id
