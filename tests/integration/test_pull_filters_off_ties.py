"""Filters off and a tie order amoCRM draws anew for every request (`tie_break="reshuffle"`,
amocrm-api.md §3): the descending walk's pages trade a tie's members across their boundary, so a
walk alone can list some of them on no page. Every pull that returns must hold every contact."""

from __future__ import annotations

from urllib.parse import unquote

from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from sync.config import DatabaseConfig
from sync.emulator import Emulator, FaultRule
from tests.integration.pull_helpers import assert_converged, emulated, make_config, pull


def _ids(emulator: Emulator, start: int, n: int) -> list[int]:
    with emulator.account.lock:
        live = sorted(c.id for c in emulator.account.contacts.values() if not c.is_deleted)
    return live[start : start + n]


def _by_id_pages(emulator: Emulator) -> int:
    return sum(
        1
        for r in emulator.requests()
        if r["path"] == "/api/v4/contacts" and "order[id]=asc" in unquote(str(r["query"]))
    )


def test_ties_smaller_than_a_page_are_read_whole(db_config: DatabaseConfig, engine: Engine) -> None:
    """s18/s19 of the hostile audit: ties of 150 and 200 across 50-contact pages."""
    with emulated(contacts=1000, tie_break="reshuffle", api_filter_enabled=False) as (
        emulator,
        url,
    ):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=50)
        pull(config, engine, emulator)
        for round_ in range(3):
            emulator.clock.advance(60)
            emulator.update_contacts(
                [{"id": i, "name": f"A{round_}"} for i in _ids(emulator, 0, 150)]
            )
            emulator.clock.advance(1)
            emulator.update_contacts(
                [{"id": i, "name": f"B{round_}"} for i in _ids(emulator, 300, 200)]
            )
            emulator.clear_requests()
            report = pull(config, engine, emulator)
            assert report.mode == "descending"
            assert_converged(engine, emulator)
            assert _by_id_pages(emulator) == 0  # each tie proved by one page, not the account


def test_new_contacts_in_one_second_are_all_stored(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """s12 of the hostile audit: contacts created in one second, none of them stored before."""
    with emulated(contacts=600, tie_break="reshuffle", api_filter_enabled=False) as (
        emulator,
        url,
    ):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=50)
        pull(config, engine, emulator)
        emulator.clock.advance(60)
        emulator.create_contacts([{"name": f"New {i}"} for i in range(220)])
        emulator.clear_requests()
        pull(config, engine, emulator)
        assert_converged(engine, emulator)
        assert _by_id_pages(emulator) == 0  # one page of 226 held the 220 and a neighbour


def test_a_tie_no_page_can_hold_is_read_by_id_once(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """A bulk edit of more contacts than a page holds, in one second: the account is read by id
    (ids are unique, so that order is stable) and the second is settled, so the next runs, whose
    overlap still holds it, do not read the account again."""
    with emulated(contacts=900, tie_break="reshuffle", api_filter_enabled=False) as (
        emulator,
        url,
    ):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=50)
        pull(config, engine, emulator)
        emulator.clock.advance(60)
        emulator.update_contacts([{"id": i, "name": "Bulk"} for i in _ids(emulator, 50, 600)])
        emulator.clock.advance(30)  # past the settling margin
        emulator.clear_requests()
        with capture_logs() as logs:
            pull(config, engine, emulator)
        assert_converged(engine, emulator)
        assert _by_id_pages(emulator) > 0
        assert "pull_tie_read_by_id" in [e["event"] for e in logs]
        emulator.clear_requests()
        pull(config, engine, emulator)
        assert _by_id_pages(emulator) == 0
        assert_converged(engine, emulator)


def test_the_full_resync_by_id_holds_under_a_reshuffled_tie_order(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=900, tie_break="reshuffle", api_filter_enabled=False) as (
        emulator,
        url,
    ):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=50)
        pull(config, engine, emulator)
        emulator.clock.advance(60)
        emulator.update_contacts([{"id": i, "name": "Bulk"} for i in _ids(emulator, 0, 700)])
        report = pull(config, engine, emulator, full=True)
        assert report.mode == "full-by-id"
        assert_converged(engine, emulator)


def test_repeated_204s_mid_walk_are_asked_again(db_config: DatabaseConfig, engine: Engine) -> None:
    """s03 of the hostile audit: a page that answers 204 three times running (amoCRM's spurious
    mid-scan 204, amocrm-api.md §2) is asked again, not the end of the run."""
    with emulated(contacts=600, api_filter_enabled=False) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=50)
        pull(config, engine, emulator)
        emulator.clock.advance(60)
        for start in range(0, 300, 30):  # 30 a second: no tie a page cannot hold
            emulator.clock.advance(1)
            ids = _ids(emulator, start, 30)
            emulator.update_contacts([{"id": i, "name": "Edited"} for i in ids])
        emulator.add_fault(
            FaultRule(kind="empty_page", path="/api/v4/contacts", min_page=3, times=4)
        )
        emulator.clear_requests()
        report = pull(config, engine, emulator)
        assert report.mode == "descending"
        assert _by_id_pages(emulator) == 0
        assert_converged(engine, emulator)


def test_a_tie_read_by_id_while_contacts_are_deleted_is_not_settled(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """The read by id of a tie no page can hold is shifted by deletions meanwhile (each skips
    the contact at a page's edge): that run keeps its cursor, and must not mark the second
    settled either, or the next run, whose walk hides members of the tie again, leaves the
    skipped ones stale and moves the cursor past them."""
    with emulated(contacts=900, tie_break="reshuffle", api_filter_enabled=False) as (
        emulator,
        url,
    ):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=50)
        pull(config, engine, emulator)
        emulator.clock.advance(60)
        emulator.update_contacts([{"id": i, "name": "Bulk"} for i in _ids(emulator, 50, 600)])
        emulator.clock.advance(30)  # past the settling margin
        emulator.add_fault(  # a user deletes an old contact before each page read by id
            FaultRule(kind="vanish", path="/api/v4/contacts", order="id", min_page=2, times=12)
        )
        with capture_logs() as logs:
            pull(config, engine, emulator)
        events = [e["event"] for e in logs]
        assert "pull_tie_read_by_id" in events
        assert "pull_cursor_held" in events
        emulator.clear_faults()
        pull(config, engine, emulator)
        assert_converged(engine, emulator)


def test_edits_during_the_walk_do_not_send_it_to_read_the_account_by_id(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """A CRM user's edit while the walk reads puts a contact from below at the front: the next
    page starts one back and lists the previous page's last contact again, which the walk
    records as a second across the boundary. By the time the walk is over, such a second has
    moved down by every edit since; its re-read must still find it, not give up and read the
    whole account by id (here 2,000 contacts, one a second: no tie at all)."""
    with emulated(contacts=2000, api_filter_enabled=False) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=50)
        pull(config, engine, emulator)
        for start in range(1200):  # one edit a second
            emulator.clock.advance(1)
            emulator.update_contacts([{"id": _ids(emulator, start, 1)[0], "name": "E"}])
        # an edit of a contact the walk has not reached, before each page
        edit = FaultRule(kind="edit", path="/api/v4/contacts", order="updated_at", min_page=2,
                         pick="last", times=None)  # fmt: skip
        emulator.add_fault(edit)
        emulator.clear_requests()
        with capture_logs() as logs:
            pull(config, engine, emulator)
        emulator.clear_faults()
        assert "pull_tie_read_by_id" not in [e["event"] for e in logs]
        assert _by_id_pages(emulator) == 0
        pull(config, engine, emulator)
        assert_converged(engine, emulator)
