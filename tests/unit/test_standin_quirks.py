"""Answers another faithful amoCRM stand-in may give where the vendor documents are silent
(`sync.emulator.quirks`): events in any order, `next` on some pages only, write answers with
fewer or more entries than sent, integers as numeric strings, `order[id]` ignored. The emulator
gives each under a control; these tests pin the controls and what the client makes of them."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest

from sync.amo.created import Sent
from sync.amo.numbers import as_int, normalise
from sync.emulator import Emulator
from sync.errors import InvariantError
from sync.pull.events import Events
from tests.unit.amo_helpers import EmulatorTime
from tests.unit.test_standin_variants import amo, live_ids


def _events(emulator: Emulator) -> list[dict[str, Any]]:
    with emulator.account.lock:
        return [
            {"id": e.id, "type": e.type, "at": e.created_at, "entity_id": e.entity_id}
            for e in emulator.account.events
            if e.type in ("contact_deleted", "contact_restored")
        ]


def _deletions(emulator: Emulator, count: int) -> list[int]:
    """`count` deletions, one per second, the last one restored a second later."""
    ids = live_ids(emulator)[:count]
    for contact_id in ids:
        emulator.delete_contact(contact_id)
        emulator.clock.advance(1)
    emulator.restore_contact(ids[-1])
    return ids


# --- events in any order ----------------------------------------------------------------------


@pytest.mark.parametrize("order", ["desc", "asc", "shuffle"])
def test_the_emulator_serves_events_in_the_order_asked(order: str) -> None:
    with amo(20, events_order=order) as (emulator, client):
        _deletions(emulator, 6)
        listed = [e for p in client.iter_events(limit=3) for e in p.items]
    stamps = [int(e["created_at"]) for e in listed]
    pages = [stamps[i : i + 3] for i in range(0, len(stamps), 3)]
    if order == "asc":
        assert stamps == sorted(stamps)
    elif order == "desc":
        assert stamps == sorted(stamps, reverse=True)
    else:  # newest first by page, scrambled within
        assert stamps != sorted(stamps, reverse=True)
        assert all(min(a) >= max(b) for a, b in pairwise(pages))


@pytest.mark.parametrize("order", ["desc", "asc", "shuffle"])
@pytest.mark.parametrize("filters", [True, False])
def test_events_since_lists_every_event_from_the_start_in_any_order(
    order: str, filters: bool
) -> None:
    """Filters off, oldest first: before the fix the first page (all before the start) ended the
    read and no deletion was seen."""
    with amo(60, events_order=order, api_filter_enabled=filters) as (emulator, client):
        _deletions(emulator, 12)
        start = int(_events(emulator)[5]["at"])
        expected = {e["id"] for e in _events(emulator) if e["at"] >= start}
        events = Events(client)
        pages = client.iter_events
        client.iter_events = lambda **kw: pages(**{**kw, "limit": 3})  # type: ignore[method-assign]
        listed = {str(e["id"]) for e in events.since(start)}
    assert listed == expected
    assert events.newest == max(e["at"] for e in _events(emulator))


@pytest.mark.parametrize("order", ["desc", "asc", "shuffle"])
def test_the_marker_finds_the_newest_event_wherever_the_list_puts_it(order: str) -> None:
    """Before the fix the marker took the first event listed as the newest: oldest first it
    watched from the oldest second, scrambled from wherever the first event happened to be."""
    with amo(60, events_order=order) as (emulator, client):
        _deletions(emulator, 12)
        newest = max(e["at"] for e in _events(emulator))
        expected = {e["id"] for e in _events(emulator) if e["at"] >= newest - 1}
        pages = client.iter_events
        client.iter_events = lambda **kw: pages(**{**kw, "limit": 3})  # type: ignore[method-assign]
        marker = Events(client).marker()
    assert marker.start == newest - 1
    assert marker.known == expected


def test_a_newest_first_read_stops_a_page_after_the_start() -> None:
    """The early stop is kept where the pages prove the order: filters off, newest first, the
    read ends on the first page wholly older than the start and than the page before it."""
    with amo(60, api_filter_enabled=False) as (emulator, client):
        _deletions(emulator, 12)
        start = int(_events(emulator)[-3]["at"])
        pages = client.iter_events
        client.iter_events = lambda **kw: pages(**{**kw, "limit": 3})  # type: ignore[method-assign]
        emulator.clear_requests()
        Events(client).since(start)
        asked = [r for r in emulator.requests() if r["path"] == "/api/v4/events"]
    assert len(asked) == 2  # of five pages


# --- write answers with fewer or more entries -----------------------------------------------


@pytest.mark.parametrize("answer", ["short", "extra"])
def test_an_update_answer_of_the_wrong_length_loses_no_result(answer: str) -> None:
    """Before the fix either answer raised InvariantError and no result came back."""
    with amo(20, write_answer=answer) as (emulator, client):
        ids = live_ids(emulator)[:4]
        results = client.update_contacts([{"id": i, "first_name": f"N{i}"} for i in ids])
        assert sorted(r.id for r in results) == ids
        reconciled = [r.id for r in results if r.reconciled]
        assert reconciled == (ids[:1] if answer == "short" else [])
        assert all(emulator.contact(i)["first_name"] == f"N{i}" for i in ids)  # type: ignore[index]


@pytest.mark.parametrize("answer", ["short", "extra"])
def test_a_create_answer_of_the_wrong_length_creates_each_contact_once(answer: str) -> None:
    with amo(20, write_answer=answer) as (emulator, client):
        before = len(emulator.contacts())
        results = client.create_contacts([{"name": f"New {n}"} for n in range(5)])
        names = sorted(c["name"] for c in emulator.contacts() if c["name"].startswith("New "))
        assert names == [f"New {n}" for n in range(5)]  # each once
        assert len(emulator.contacts()) == before + 5
        assert sorted(r.request_id for r in results) == [str(n) for n in range(5)]
        assert len({r.id for r in results}) == 5


@pytest.mark.parametrize("answer", ["short", "extra"])
def test_a_chat_link_answer_of_the_wrong_length_loses_no_result(answer: str) -> None:
    with amo(20, write_answer=answer) as (emulator, client):
        ids = live_ids(emulator)[:3]
        links = [{"contact_id": i, "chat_id": f"chat-{i}"} for i in ids]
        results = client.link_chats(links)
        assert sorted(int(r.data["contact_id"]) for r in results) == ids


def test_an_answer_that_matches_nothing_is_a_lost_answer_not_a_crash() -> None:
    """Every entry of the answer is unmatched and reconciling finds nothing applied: the call
    ends with the lost-answer error (the caller keeps the rows pending), never a wrong match."""
    from sync.amo.writes import Item, parse_results

    items = [Item("0", {"name": "a"}), Item("1", {"name": "b"})]
    answer = {
        "_embedded": {"contacts": [{"id": 5, "request_id": "7"}, {"id": "x", "request_id": "1"}]}
    }
    assert parse_results(items, answer, "contacts") == []
    clash = {
        "_embedded": {"contacts": [{"id": 5, "request_id": "0"}, {"id": 6, "request_id": "0"}]}
    }
    assert parse_results(items, clash, "contacts") == []
    by_position = {"_embedded": {"contacts": [{"id": "5"}, {"id": 6}]}}
    assert [(r.request_id, r.id) for r in parse_results(items, by_position, "contacts")] == [
        ("0", 5),
        ("1", 6),
    ]


# --- integers as strings ----------------------------------------------------------------------


def test_string_numbers_reads_back_as_ints_everywhere() -> None:
    with amo(30, string_numbers=True) as (emulator, client):
        raw = client.session.send("GET", "/api/v4/contacts", params={"limit": 5}).data
        assert isinstance(raw["_embedded"]["contacts"][0]["id"], str)  # the knob is on
        listed = [c for p in client.iter_contacts() for c in p.items]
        ids = live_ids(emulator)
        assert [c["id"] for c in listed] == ids
        assert all(type(c["updated_at"]) is int for c in listed)
        by_id = client.fetch_contacts_by_ids(ids[:3])
        assert sorted(by_id) == ids[:3]
        assert type(by_id[ids[0]]["created_at"]) is int
        one = client.fetch_contact(ids[0])
        assert one is not None
        assert one["id"] == ids[0]
        results = client.update_contacts([{"id": ids[0], "first_name": "Str"}])
        assert type(results[0].updated_at) is int


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 5), ("123", 123), (" 7 ", 7), ("-3", -3), (12.0, 12)],
)
def test_as_int_takes_numbers_and_numeric_strings(value: Any, expected: int) -> None:
    assert as_int(value) == expected


@pytest.mark.parametrize("value", ["12a", "", "1.5", 1.5, True, None, [1], "١٢"])
def test_as_int_refuses_garbage(value: Any) -> None:
    with pytest.raises(ValueError, match="not an integer"):
        as_int(value)


def test_garbage_in_a_contact_is_one_line_naming_the_contact_and_field() -> None:
    page = {"_embedded": {"contacts": [{"id": "12", "updated_at": "soon"}]}}
    with pytest.raises(InvariantError) as caught:
        normalise("/api/v4/contacts", page)
    message = str(caught.value)
    assert "contact 12: updated_at is not an integer: 'soon'" in message
    assert "\n" not in message
    with pytest.raises(InvariantError, match=r"contact 'x': id is not an integer"):
        normalise("/api/v4/contacts/5", {"id": "x"})
    with pytest.raises(InvariantError, match="custom field enum_id"):
        normalise(
            "/api/v4/contacts",
            {"_embedded": {"contacts": [{"id": 1, "custom_fields_values": [
                {"field_id": "3", "values": [{"value": "a", "enum_id": "b"}]}]}]}},
        )  # fmt: skip


def test_event_ids_stay_strings_and_their_numbers_become_ints() -> None:
    page = {"_embedded": {"events": [{"id": "01abc", "entity_id": "5", "created_at": "9"}]}}
    (event,) = normalise("/api/v4/events", page)["_embedded"]["events"]
    assert event == {"id": "01abc", "entity_id": 5, "created_at": 9}


def _lagging(emulator: Emulator, client: Any, lag_s: float) -> EmulatorTime:
    """Lists `lag_s` behind writes; the client sleeps by moving the frozen emulator clock, with
    the default settle (a 10 s confirmation window)."""
    emulator.clock.freeze()
    emulator.set_controls(list_lag_s=lag_s)
    client.reconcile_settle_s = 1.0
    client.session.clock = EmulatorTime(emulator)
    return client.session.clock


def _posts(emulator: Emulator) -> list[dict[str, Any]]:
    return [r for r in emulator.requests() if r["method"] == "POST"]


def test_a_create_the_answer_left_out_that_a_lagging_list_hides_is_found_by_a_later_look() -> None:
    """The short answer's first entity is not listed yet (3 s lag): looked for again until the
    window passes, found, not POSTed again (that would make a duplicate)."""
    with amo(20, write_answer="short") as (emulator, client):
        time = _lagging(emulator, client, 3.0)
        created = client.create_contacts([{"name": f"Lag {n}"} for n in range(3)])
        assert [r.request_id for r in created] == ["0", "1", "2"]
        assert created[0].reconciled
        names = [c["name"] for c in emulator.contacts() if c["name"].startswith("Lag ")]
        assert sorted(names) == ["Lag 0", "Lag 1", "Lag 2"]
        assert len(_posts(emulator)) == 1
        assert 3.0 <= sum(time.sleeps) <= 10.0  # looks at 0, 1, 3 s


def test_a_create_lists_hide_for_the_whole_window_is_resent() -> None:
    """Lists 15 s behind, past the 10 s window: the left-out create counts as not applied and
    is POSTed again in the same call (the price of a lag beyond the window is a duplicate; the
    original, visible by then, settles the resend's left-out answer)."""
    with amo(20, write_answer="short") as (emulator, client):
        time = _lagging(emulator, client, 15.0)
        created = client.create_contacts([{"name": f"Lag {n}"} for n in range(3)])
        assert [r.request_id for r in created] == ["0", "1", "2"]
        posts = _posts(emulator)
        assert [[e["name"] for e in p["body"]] for p in posts] == [
            ["Lag 0", "Lag 1", "Lag 2"],
            ["Lag 0"],
        ]
        assert posts[1]["clock"] - posts[0]["clock"] >= 10.0
        names = [c["name"] for c in emulator.contacts() if c["name"] == "Lag 0"]
        assert names == ["Lag 0", "Lag 0"]
        assert sum(time.sleeps) >= 15.0


# --- order[id] ignored ------------------------------------------------------------------------


def test_a_server_that_ignores_order_by_id_gives_no_floor_but_honours_updated_at() -> None:
    with amo(20, id_order_ignored=True) as (emulator, client):
        listed = [int(c["id"]) for p in client.iter_contacts(order=("id", "desc")) for c in p.items]
        by_update = [int(c["updated_at"]) for p in client.iter_contacts(
            order=("updated_at", "desc")) for c in p.items]  # fmt: skip
        assert listed == sorted(live_ids(emulator))  # the default order, not the one asked
        assert by_update == sorted(by_update, reverse=True)
        assert client.newest_contact_id() is None


def test_the_created_at_look_up_adopts_only_a_contact_our_own_user_made() -> None:
    """Without a floor, a lost create is looked for by `filter[created_at]` and matched by the
    same rule as above one: a person's look-alike made meanwhile is never ours."""
    with amo(5, id_order_ignored=True) as (emulator, client):
        sent = Sent(client.session.clock.now())
        lost = [{"name": "Twin", "request_id": "-1"}]
        (theirs,) = emulator.create_contacts([{"name": "Twin"}])  # a CRM user, in the window
        assert client.recover_creates(lost, None, sent=sent) == {}
        (ours,) = client.create_contacts([{"name": "Twin"}])
        found = client.recover_creates(lost, None, sent=sent)
        assert [r.id for r in found.values()] == [ours.id] != [theirs]


def test_an_unknown_quirk_mode_is_refused_and_changes_nothing() -> None:
    with amo(5) as (emulator, _):
        with pytest.raises(ValueError, match="events_order must be one of"):
            emulator.set_controls(events_order="sideways")
        with pytest.raises(ValueError, match="write_answer must be one of"):
            emulator.set_controls(write_answer="half")
        assert (emulator.controls().events_order, emulator.controls().write_answer) == (
            "desc",
            "exact",
        )
