"""AmoClient reads against the emulator over real HTTP: paging, filters, faults, ids."""

from __future__ import annotations

import gc

import httpx
import pytest

from sync.emulator import FaultRule
from sync.errors import AmoBlockedError, AmoPaymentError, AmoTransientError
from tests.integration.amo_emulator import client_for, running


def all_ids(pages) -> list[int]:
    return [c["id"] for p in pages for c in p.items]


def test_pages_cover_every_contact_once_and_end_without_next() -> None:
    with (
        running(contacts=120, trashed_fraction=0.0) as (emulator, url),
        client_for(emulator, url) as client,
    ):
        pages = list(client.iter_contacts(limit=50, order=("id", "asc")))
        assert [len(p.items) for p in pages] == [50, 50, 20]
        assert [p.has_next for p in pages] == [True, True, False]
        ids = all_ids(pages)
        assert len(ids) == len(set(ids)) == 120
        assert ids == sorted(ids)


def test_parallel_prefetch_yields_the_same_pages_in_order() -> None:
    with (
        running(contacts=300, trashed_fraction=0.0, latency_ms=30) as (emulator, url),
        client_for(emulator, url, workers=4) as client,
    ):
        serial = all_ids(client.iter_contacts(limit=25, order=("id", "asc")))
        parallel = all_ids(client.iter_contacts(limit=25, order=("id", "asc"), prefetch=4))
        assert parallel == serial
        assert len(serial) == 300


def test_no_page_body_outlives_its_request() -> None:
    # httpx's Response sits in a reference cycle; a body cached on it would stay in memory until
    # the cyclic collector runs, which a pull makes rare (sync.heap): 100k contacts went >200 MB
    with (
        running(contacts=300, trashed_fraction=0.0) as (emulator, url),
        client_for(emulator, url) as client,
    ):
        gc.collect()
        gc.disable()
        try:
            before = _cached_bodies()  # other tests' responses still alive are not ours
            pages = list(client.iter_contacts(limit=100, order=("id", "asc")))
            cached = _cached_bodies() - before
        finally:
            gc.enable()
        assert len(pages) == 3
        assert cached == set()


def _cached_bodies() -> set[int]:
    return {
        id(o) for o in gc.get_objects() if isinstance(o, httpx.Response) and hasattr(o, "_content")
    }


def test_empty_result_is_no_pages() -> None:
    with running(contacts=5) as (emulator, url), client_for(emulator, url) as client:
        pages = list(client.iter_contacts(filters={"id": [987654321]}))
        assert pages == []


def test_spurious_mid_scan_204_is_reread_and_nothing_is_lost() -> None:
    with (
        running(contacts=60, trashed_fraction=0.0) as (emulator, url),
        client_for(emulator, url) as client,
    ):
        emulator.add_fault(FaultRule(kind="empty_page", min_page=2, times=1))
        ids = all_ids(client.iter_contacts(limit=20, order=("id", "asc")))
        assert len(ids) == 60
        pages_asked = [r["query"] for r in emulator.requests() if r["status"] == 204]
        # the spurious one (re-read), and the end after the exactly full page 3 (read past: a
        # full page without `next` is not taken as the last)
        assert pages_asked == ["order[id]=asc&page=2&limit=20", "order[id]=asc&page=4&limit=20"]


@pytest.mark.parametrize(
    "fault",
    [
        FaultRule(kind="error", status=500, times=2),
        FaultRule(kind="error", status=502, times=1),
        FaultRule(kind="error", status=504, times=1),
        FaultRule(kind="reset", times=2),
        FaultRule(kind="truncate", times=2),
        FaultRule(kind="rate_limit", body="html", times=1),
        FaultRule(kind="rate_limit", body="json", times=1),
        FaultRule(kind="slow", delay_ms=1500, times=1),
    ],
    ids=lambda f: f"{f.kind}-{f.status if f.kind == 'error' else f.body}",
)
def test_reads_survive_transient_faults(fault: FaultRule) -> None:
    with (
        running(contacts=40, trashed_fraction=0.0) as (emulator, url),
        client_for(emulator, url, timeout_s=1.0) as client,
    ):
        emulator.add_fault(fault)
        assert len(all_ids(client.iter_contacts(limit=15))) == 40


def test_persistent_failure_ends_with_a_transient_error() -> None:
    with running(contacts=5) as (emulator, url), client_for(emulator, url, max_retries=2) as client:
        emulator.add_fault(FaultRule(kind="error", status=500, times=None))
        with pytest.raises(AmoTransientError):
            client.fetch_account()
        assert len(emulator.requests()) == 3


def test_payment_required_is_clear() -> None:
    with running(contacts=5) as (emulator, url), client_for(emulator, url) as client:
        emulator.add_fault(FaultRule(kind="payment_required", times=None))
        with pytest.raises(AmoPaymentError, match="not paid"):
            client.fetch_account()
        assert len(emulator.requests()) == 1


def test_ip_block_stops_all_work_after_the_first_403() -> None:
    with (
        running(contacts=5, rate_limit=3, block_after_violations=2, rate_limit_body="html") as (
            emulator,
            url,
        ),
        client_for(emulator, url, max_rps=1000, max_retries=20) as client,
    ):
        client.session.backoff.throttle_base_s = 0.001  # hammer on purpose, to get blocked
        client.session.backoff.cap_s = 0.001
        with pytest.raises(AmoBlockedError, match="blocked"):  # noqa: PT012 (loop until blocked)
            for _ in range(50):
                client.fetch_account()
        seen = len(emulator.requests())
        with pytest.raises(AmoBlockedError):
            client.fetch_contact(1)
        assert len(emulator.requests()) == seen  # nothing more reached the server
        assert [r["status"] for r in emulator.requests()].count(403) == 1


def test_fetch_by_ids_is_right_even_when_filters_are_ignored() -> None:
    with (
        running(contacts=80, trashed_fraction=0.0) as (emulator, url),
        client_for(emulator, url) as client,
    ):
        ids = all_ids(client.iter_contacts(limit=250))
        wanted = [*ids[5:12], 999_999_999]
        filtered = client.fetch_contacts_by_ids(wanted)
        emulator.set_controls(api_filter_enabled=False)
        unfiltered = client.fetch_contacts_by_ids(wanted)
        assert sorted(filtered) == sorted(unfiltered) == sorted(ids[5:12])
        assert filtered[ids[5]]["id"] == ids[5]


def test_fetch_by_ids_batches_at_250() -> None:
    with (
        running(contacts=600, trashed_fraction=0.0) as (emulator, url),
        client_for(emulator, url) as client,
    ):
        ids = all_ids(client.iter_contacts(limit=250))
        emulator.clear_requests()
        found = client.fetch_contacts_by_ids(ids)
        assert len(found) == 600
        queries = [r["query"] for r in emulator.requests()]
        assert len(queries) == 3
        assert all(q.count("filter[id][]=") <= 250 for q in queries)


def test_account_events_fields_and_chats() -> None:
    with (
        running(contacts=20, trashed_fraction=0.0) as (emulator, url),
        client_for(emulator, url) as client,
    ):
        account = client.fetch_account(with_=["is_api_filter_enabled"])
        assert account["is_api_filter_enabled"] is True
        fields = [f for p in client.iter_custom_fields() for f in p.items]
        assert {"PHONE", "EMAIL"} <= {f.get("code") for f in fields}
        first = all_ids(client.iter_contacts(limit=3))[:3]
        emulator.delete_contact(first[0])
        events = [e for p in client.iter_events(types=["contact_deleted"]) for e in p.items]
        assert [e["entity_id"] for e in events] == [first[0]]
        emulator.link_chat(first[1], "6cbab3d5-c4c1-46ff-b710-ad59ad10805f")
        links = [x for p in client.iter_chats(contact_ids=first[1:]) for x in p.items]
        assert [(x["contact_id"], x["chat_id"]) for x in links] == [
            (first[1], "6cbab3d5-c4c1-46ff-b710-ad59ad10805f")
        ]
        assert client.fetch_contact(first[0]) is None
